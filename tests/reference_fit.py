"""A careful, slow per-voxel Rician MLE used only to check the batched fitter.

Independent of the batched optimiser: SciPy's L-BFGS-B on the physical parameters (bounded
fractions, spherical angles, s0) from many starts (the full 5 x 5 x 5 grid at each tensor
eigenvector plus random starts), keeping the best. The log-likelihood of any estimate is
evaluated with the exact forward model and SciPy's Bessel function.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from noddi_bids.fit.grid import default_grid
from noddi_bids.fit.likelihood import rician_nll
from noddi_bids.fit.signal import model_signal, scratch_arrays
from noddi_bids.fit.tables import build_tables
from noddi_bids.model.noddi import ODI_MIN, noddi_signal


def exact_log_likelihood(data, sigma, odi, ndi, fwf, direction, s0, scheme):
    """Rician log-likelihood with the exact model (rows of ``data``)."""
    model = s0[:, None] * noddi_signal(odi, ndi, fwf, direction, scheme.bvals, scheme.bvecs)
    inv_var = 1.0 / sigma[:, None] ** 2
    z = data * model * inv_var
    return np.sum(
        np.log(np.maximum(data, 1e-300) * inv_var)
        - (data**2 + model**2) * 0.5 * inv_var
        + np.log(special.i0e(z))
        + z,
        axis=1,
    )


def _unit(theta, phi):
    return np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])


def _angles(vector):
    vector = vector / np.linalg.norm(vector)
    return np.arccos(np.clip(vector[2], -1, 1)), np.arctan2(vector[1], vector[0])


def slow_fit(data, sigma, scheme, rng, n_random=20, n_refine=8):
    """Per-voxel multi-start fit; returns dict of odi, ndi, fwf, direction, s0 arrays."""
    tables = build_tables(scheme.bvals, scheme.bvecs).packed()
    scratch = scratch_arrays(tables)
    buffer = np.empty(scheme.bvals.shape[0])
    terms = np.empty(scheme.bvals.shape[0])
    b0 = scheme.b0_mask
    grid_odi, grid_ndi, grid_fwf = default_grid()
    results = {k: [] for k in ("odi", "ndi", "fwf", "direction", "s0")}
    for measured, noise in zip(data, sigma, strict=True):
        inv_var = 1.0 / noise**2

        def nll(p, measured=measured, inv_var=inv_var):
            odi, ndi, fwf, theta, phi, s0 = p
            model_signal(odi, ndi, fwf, _unit(theta, phi), s0, tables, scratch, buffer)
            return rician_nll(measured, buffer, inv_var, terms)

        s0 = measured[b0].mean()
        eigen = _tensor_eigenvectors(measured, scheme)
        starts = [
            (o, n, f, *_angles(v), s0)
            for v in eigen
            for o in grid_odi
            for n in grid_ndi
            for f in grid_fwf
        ]
        for _ in range(n_random):
            v = rng.normal(size=3)
            starts.append((rng.uniform(ODI_MIN, 1), *rng.uniform(0, 1, 2), *_angles(v), s0))
        starts.sort(key=nll)
        bounds = [(ODI_MIN, 1.0), (0.0, 1.0), (0.0, 1.0), (None, None), (None, None), (0, None)]
        best = min(
            (
                optimize.minimize(nll, start, method="L-BFGS-B", bounds=bounds,
                                  options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 2000})
                for start in starts[:n_refine]
            ),
            key=lambda r: r.fun,
        )  # fmt: skip
        odi, ndi, fwf, theta, phi, s0 = best.x
        for key, value in zip(results, (odi, ndi, fwf, _unit(theta, phi), s0), strict=True):
            results[key].append(value)
    return {k: np.asarray(v) for k, v in results.items()}


def _tensor_eigenvectors(measured, scheme):
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    gtab = gradient_table(scheme.bvals, bvecs=scheme.bvecs, b0_threshold=scheme.b0_threshold)
    evecs = TensorModel(gtab, fit_method="OLS").fit(np.maximum(measured, 1e-6)).evecs
    return [evecs[:, k] for k in range(3)]
