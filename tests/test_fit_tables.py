"""Fitter building blocks: Bessel interpolants and compartment tables against exact values."""

import numpy as np
import pytest
from scipy import special

from noddi_bids.fit import likelihood
from noddi_bids.fit.bessel import (
    COARSE_BLOCK,
    COARSE_CAP,
    bessel_ratio,
    log_i0,
    log_i0_split_coarse,
)
from noddi_bids.fit.polynomial import padded, polynomial_value
from noddi_bids.fit.signal import model_signal, scratch_arrays
from noddi_bids.fit.tables import build_tables
from noddi_bids.model.noddi import ODI_MIN, noddi_signal
from noddi_bids.model.scheme import Scheme, reference_scheme


def test_bessel_terms_match_scipy():
    edge = 16.0  # where the power series hand over to the interpolants
    z = np.concatenate([[0.0, np.nextafter(edge, 0), edge, np.nextafter(edge, 32)],
                        np.geomspace(1e-8, 1e14, 4000), np.linspace(0, 40, 4001)])  # fmt: skip
    log_values = np.array([log_i0(v) for v in z])
    ratios = np.array([bessel_ratio(v) for v in z])
    np.testing.assert_allclose(log_values, np.log(special.i0e(z)) + z, atol=1e-10, rtol=1e-14)
    np.testing.assert_allclose(ratios, special.i1e(z) / special.i0e(z), atol=1e-10)
    # a trial step may make the model signal negative: log I0 is even, I1 / I0 odd
    np.testing.assert_array_equal([log_i0(-v) for v in z], log_values)
    np.testing.assert_array_equal([bessel_ratio(-v) for v in z], -ratios)


def test_coarse_log_i0_matches_scipy():
    edge = 16.0  # where the two branch-free interpolants meet
    z = np.concatenate([[0.0, np.nextafter(edge, 0), edge, np.nextafter(edge, 32)],
                        np.geomspace(1e-8, 1e18, 3000), np.linspace(0, 40, 4001)])  # fmt: skip
    coarse = np.array([log_i0_split_coarse(v) for v in z])
    np.testing.assert_allclose(coarse[:, 0] - 0.5 * np.log(coarse[:, 1]),
                               np.log(special.i0e(z)) + z, atol=1e-6, rtol=1e-15)  # fmt: skip
    # beyond the cap (SNR ~3e9) the argument is capped, so that blocks of products stay finite
    value, argument = log_i0_split_coarse(1e21)
    assert argument == COARSE_CAP and np.isfinite(value)
    ones = np.ones(2 * COARSE_BLOCK)
    assert np.isfinite(likelihood.rician_nll_coarse(ones, ones, 1e21))


def _rician_nll_scipy(measured, model, inv_var):
    z = measured * model * inv_var
    return np.sum((measured**2 + model**2) * 0.5 * inv_var - np.log(special.i0e(z)) - z)


def test_summed_likelihood_matches_scipy_without_overflow():
    rng = np.random.default_rng(7)
    measured = np.abs(rng.normal(1.0, 0.3, 81))
    measured[:3] = 0.0
    model = measured * rng.uniform(0.8, 1.2, 81)
    terms = np.empty(81)
    # sigma from 1 down to 1e-7: z up to ~1e14 (the coarse sum multiplies its logarithm
    # arguments in blocks, which must not overflow)
    for inv_var in (1.0, 225.0, 1e6, 1e14):
        exact = _rician_nll_scipy(measured, model, inv_var)
        np.testing.assert_allclose(likelihood.rician_nll(measured, model, inv_var, terms), exact,
                                   rtol=1e-12, atol=1e-9)  # fmt: skip
        coarse = likelihood.rician_nll_coarse(measured, model, inv_var)
        assert abs(coarse - exact) < 1e-4 + 1e-12 * abs(exact)
        tail = _rician_nll_scipy(measured[30:], model[30:], inv_var)
        coarse_tail = likelihood.rician_nll_coarse(measured, model, inv_var, 30)
        assert abs(coarse_tail - tail) < 1e-4 + 1e-12 * abs(tail)


def test_split_polynomial_matches_numpy():
    rng = np.random.default_rng(8)
    for n_terms in (1, 4, 7, 13, 21):
        table = padded(rng.normal(size=(2, n_terms)))
        for x in (-1.3, -0.2, 0.0, 0.7, 1.0):
            value = polynomial_value(table, 1, table.shape[1], x)
            np.testing.assert_allclose(value, np.polynomial.polynomial.polyval(x, table[1]),
                                       rtol=1e-13, atol=1e-13)  # fmt: skip


def _sorted_with_low_b(scheme):
    """The scheme ordered by b-value (as the fitter orders it), one b = 0 made b = 5."""
    order = np.argsort(scheme.bvals, kind="stable")
    bvals = scheme.bvals[order].copy()
    bvals[scheme.n_b0 - 1] = 5.0
    return Scheme(bvals, scheme.bvecs[order])


@pytest.mark.parametrize("ordering", ["acquired", "sorted"])
def test_tabulated_signal_matches_exact_model(ordering):
    scheme = reference_scheme()
    if ordering == "sorted":
        scheme = _sorted_with_low_b(scheme)
    tables = build_tables(scheme.bvals, scheme.bvecs)
    # only exact b = 0 measurements skip the model (b = 5 is attenuated)
    assert tables.leading_b0 == (1 if ordering == "acquired" else scheme.n_b0 - 1)
    packed = tables.packed()
    rng = np.random.default_rng(3)
    odi = np.concatenate([[ODI_MIN, 1.0, 0.011, 0.5], rng.uniform(ODI_MIN, 1, 60)])
    ndi, fwf = rng.uniform(0, 1, (2, odi.size))
    directions = rng.normal(size=(odi.size, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    exact = noddi_signal(odi, ndi, fwf, directions, scheme.bvals, scheme.bvecs)
    scratch = scratch_arrays(packed)
    out = np.empty(scheme.n_measurements)
    for row in range(odi.size):
        model_signal(odi[row], ndi[row], fwf[row], directions[row], 1.0, packed,
                     scratch, out)  # fmt: skip
        np.testing.assert_allclose(out, exact[row], atol=1e-8)


def test_runs_of_equal_b_values():
    bvals = np.array([0, 0, 1000, 1000, 0, 2000, 2000, 2000, 1000], dtype=float)
    bvecs = np.tile([1.0, 0.0, 0.0], (bvals.size, 1))
    runs = build_tables(bvals, bvecs).runs
    # start, stop and index of the b-value among the unique ones (0, 1000, 2000)
    np.testing.assert_array_equal(runs, [[0, 2, 0], [2, 4, 1], [4, 5, 0], [5, 8, 2], [8, 9, 1]])
