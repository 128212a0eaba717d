"""Fitter building blocks: Bessel interpolants and compartment tables against exact values."""

import numpy as np
from scipy import special

from noddi_bids.fit import kernels
from noddi_bids.fit.bessel import bessel_ratio, log_i0
from noddi_bids.fit.tables import build_tables
from noddi_bids.model.noddi import ODI_MIN, noddi_signal
from noddi_bids.model.scheme import reference_scheme


def test_bessel_terms_match_scipy():
    z = np.concatenate([[0.0], np.geomspace(1e-8, 1e6, 4000), np.linspace(0, 12, 1201)])
    log_values = np.array([log_i0(v) for v in z])
    ratios = np.array([bessel_ratio(v) for v in z])
    np.testing.assert_allclose(log_values, np.log(special.i0e(z)) + z, atol=1e-10, rtol=1e-14)
    np.testing.assert_allclose(ratios, special.i1e(z) / special.i0e(z), atol=1e-10)


def test_tabulated_signal_matches_exact_model():
    scheme = reference_scheme()
    tables = build_tables(scheme.bvals, scheme.bvecs)
    packed = tables.packed()
    rng = np.random.default_rng(3)
    odi = np.concatenate([[ODI_MIN, 1.0, 0.011, 0.5], rng.uniform(ODI_MIN, 1, 60)])
    ndi, fwf = rng.uniform(0, 1, (2, odi.size))
    directions = rng.normal(size=(odi.size, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    exact = noddi_signal(odi, ndi, fwf, directions, scheme.bvals, scheme.bvecs)
    buffers = (np.empty(tables.stick_coef.shape[::2]), np.empty(tables.stick_coef.shape[::2]))
    out = np.empty(scheme.n_measurements)
    for row in range(odi.size):
        kernels.model_signal(odi[row], ndi[row], fwf[row], directions[row], 1.0, packed,
                             *buffers, out)  # fmt: skip
        np.testing.assert_allclose(out, exact[row], atol=1e-8)
