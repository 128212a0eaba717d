"""The Rician likelihood of one voxel in compiled (numba) code, with its gradient and curvature.

:func:`rician_nll` and :func:`rician_nll_coarse` take a model signal; :func:`objective` is what
the optimiser minimises: the negative log-likelihood at a parameter vector
(:mod:`noddi_bids.fit.layout`), with its gradient and Gauss-Newton curvature in the
unconstrained parameters. The Bessel terms come from :mod:`noddi_bids.fit.bessel`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from noddi_bids.fit.bessel import COARSE_BLOCK, log_i0_and_ratio, log_i0_split_coarse
from noddi_bids.fit.layout import (
    N_PARAMS,
    ROW_COS,
    ROW_COS2,
    ROW_HINDERED,
    ROW_MODEL,
    ROW_NLL_TERMS,
    ROW_STICK,
    ROW_STICK_DODI,
    ROW_STICK_DX,
    SLOT_COEF,
    SLOT_COEF_DODI,
    SLOT_COEF_DX,
    SLOT_JACOBIAN,
    SLOT_ORIENTATION,
    SLOT_WORK,
    TABLE_BVALS,
    TABLE_BVECS,
    TABLE_D_PAR,
    TABLE_ISO,
    TABLE_LEAD,
    decode,
)
from noddi_bids.fit.polynomial import CONTRACT
from noddi_bids.fit.signal import (
    odi_tables,
    series_by_run,
    signal_rows,
    slope_coefficients,
    tissue_signal,
)
from noddi_bids.fit.simd import index
from noddi_bids.model.noddi import ODI_MIN

# Floor for zero magnitudes in the likelihood's ``log(m / sigma^2)`` term.
_TINY_SIGNAL = 1e-300


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _rician_term(measured, model, inv_var, log_i0_z):
    """One measurement's negative Rician log-likelihood, less ``log(m / sigma^2)``."""
    return (measured * measured + model * model) * 0.5 * inv_var - log_i0_z


@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def rician_nll(measured, model, inv_var, terms):
    """Negative Rician log-likelihood of one voxel, less the model-free ``sum log(m/sigma^2)``.

    The per-measurement terms go to ``terms`` and are summed afterwards (:func:`_sum`): a loop
    that sums as it goes runs in SIMD lanes only if the sum may be reordered, which the Bessel
    terms must not be.
    """
    for m in range(index(0), index(measured.shape[0])):
        x = measured[m]
        s = model[m]
        log_i0_z, _ = log_i0_and_ratio(x * s * inv_var)
        terms[m] = _rician_term(x, s, inv_var, log_i0_z)
    return _sum(terms)


@njit(cache=True, fastmath={"contract", "reassoc"})
def _sum(values):
    """Sum of a 1-D array, reordered into SIMD lanes."""
    total = 0.0
    for m in range(values.shape[0]):
        total += values[m]
    return total


@njit(cache=True, fastmath={"contract", "reassoc"})
def rician_nll_coarse(measured, model, inv_var, first=0):
    """:func:`rician_nll` to ~1e-6 per measurement, over the measurements from ``first`` on.

    For ranking candidates: branch-free, with reassociated sums, so that the loop over the
    measurements runs in SIMD lanes; the logarithm arguments are multiplied in blocks (one
    logarithm per block; the arguments are capped so that a block cannot overflow).
    """
    n_meas = measured.shape[0]
    total = 0.0
    log_sum = 0.0
    for block in range(first, n_meas, COARSE_BLOCK):
        product = 1.0
        for m in range(block, min(block + COARSE_BLOCK, n_meas)):
            x = measured[m]
            s = model[m]
            z = x * s * inv_var
            value, argument = log_i0_split_coarse(z)
            total += _rician_term(x, s, inv_var, value)
            product *= argument
        log_sum += np.log(product)
    return total + 0.5 * log_sum


@njit(cache=True, fastmath=CONTRACT)
def likelihood_constant(measured, sigma):
    """``sum log(m / sigma^2)``: the part of the Rician log-likelihood the model does not change.

    Left out of :func:`rician_nll`; zero magnitudes count as ``_TINY_SIGNAL``.
    """
    total = 0.0
    for m in range(measured.shape[0]):
        total += np.log(max(measured[m], _TINY_SIGNAL))
    return total - measured.shape[0] * 2.0 * np.log(sigma)


@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def objective(params, frame, measured, inv_var, tables, scratch, derivatives, gradient, hessian):
    """Negative log-likelihood of one voxel at ``params``.

    With ``derivatives``, also writes its gradient and the Rician Gauss-Newton curvature in the
    unconstrained parameters. The Jacobian is taken with respect to the bounded fractions
    (fewer multiplications per measurement), and the normal equations are then scaled by the
    chain rule of the ``sin^2`` maps, whose curvature is added where it is positive (see
    :func:`_to_unconstrained`). The work is split into passes over the measurements (signal,
    likelihood terms, stick derivatives, Jacobian), which run in SIMD lanes but for the stick
    series (:func:`~noddi_bids.fit.signal.signal_rows`). The leading b = 0 measurements (signal
    s0) are left out of the signal and Jacobian passes; their constant Jacobian columns come
    from :func:`~noddi_bids.fit.layout.scratch_arrays`.
    """
    mu0, e1, e2 = frame
    coef_buf, coef_dodi_buf, jac, work, coef_dx_buf = (
        scratch[SLOT_COEF], scratch[SLOT_COEF_DODI], scratch[SLOT_JACOBIAN], scratch[SLOT_WORK],
        scratch[SLOT_COEF_DX],
    )  # fmt: skip
    bvals, bvecs = tables[TABLE_BVALS], tables[TABLE_BVECS]
    d_par, lead = tables[TABLE_D_PAR], tables[TABLE_LEAD]
    iso = tables[TABLE_ISO]
    mu, dmu_da, dmu_db = scratch[SLOT_ORIENTATION]
    odi, ndi, fwf, s0, norm = decode(params, frame, mu)
    e_cos2, de_dodi = odi_tables(odi, tables, coef_buf, coef_dodi_buf)
    d_perp_w, anisotropy = signal_rows(ndi, fwf, mu, s0, e_cos2, tables, coef_buf, work)
    if not derivatives:
        return rician_nll(measured, work[ROW_MODEL], inv_var, work[ROW_NLL_TERMS])

    # Likelihood: NLL and its first and (clipped) second derivatives with respect to each model
    # value. The second is the exact Rician curvature inv_var (1 - m^2 inv_var r'(z)),
    # r = I1/I0, r' = 1 - r/z - r^2, clipped below at a tenth of the Gaussian one, so that the
    # matrix stays positive definite while converging like Newton near the optimum.
    n_meas = bvals.shape[0]
    for m in range(index(0), index(n_meas)):
        measured_m = measured[m]
        model = work[ROW_MODEL, m]
        z = measured_m * model * inv_var
        log_i0_z, ratio_over_z = log_i0_and_ratio(z)
        ratio = z * ratio_over_z
        work[ROW_NLL_TERMS, m] = _rician_term(measured_m, model, inv_var, log_i0_z)
        jac[N_PARAMS, m] = (model - measured_m * ratio) * inv_var
        ratio_slope = 1.0 - ratio_over_z - ratio * ratio
        jac[N_PARAMS + 1, m] = max(
            inv_var * (1.0 - measured_m * measured_m * inv_var * ratio_slope), 0.1 * inv_var
        )
    nll = _sum(work[ROW_NLL_TERMS])

    # Jacobian with respect to (odi, ndi, fwf, a, b, s0), transposed.
    slope_coefficients(coef_buf, coef_dx_buf)
    series_by_run(coef_dx_buf, tables, work, ROW_COS2, ROW_STICK_DX, lead)
    series_by_run(coef_dodi_buf, tables, work, ROW_COS2, ROW_STICK_DODI, lead)
    dperp_dndi = -d_par + d_par * (1.0 - e_cos2) / 2.0
    dperp_dodi = -d_par * ndi / 2.0 * de_dodi
    daniso_dndi = d_par * (3.0 * e_cos2 - 1.0) / 2.0
    daniso_dodi = 1.5 * d_par * ndi * de_dodi
    mu_e1 = mu[0] * e1[0] + mu[1] * e1[1] + mu[2] * e1[2]
    mu_e2 = mu[0] * e2[0] + mu[1] * e2[1] + mu[2] * e2[2]
    for k in range(3):
        dmu_da[k] = (e1[k] - mu[k] * mu_e1) / norm
        dmu_db[k] = (e2[k] - mu[k] * mu_e2) / norm
    da_x, da_y, da_z = dmu_da[0], dmu_da[1], dmu_da[2]
    db_x, db_y, db_z = dmu_db[0], dmu_db[1], dmu_db[2]
    tissue_scale = s0 * (1.0 - fwf)
    inv_s0 = 1.0 / s0
    for m in range(index(lead), index(n_meas)):
        c = work[ROW_COS, m]
        x = work[ROW_COS2, m]
        s_ic = work[ROW_STICK, m]
        s_ec = work[ROW_HINDERED, m]
        b_s_ec = bvals[m] * s_ec
        ds_dc = (
            2.0 * c * tissue_scale
            * (ndi * work[ROW_STICK_DX, m] - (1.0 - ndi) * anisotropy * b_s_ec)
        )  # fmt: skip
        tissue = tissue_signal(ndi, s_ic, s_ec)
        jac[0, m] = tissue_scale * (
            ndi * work[ROW_STICK_DODI, m] - (1.0 - ndi) * b_s_ec * (dperp_dodi + daniso_dodi * x)
        )
        jac[1, m] = tissue_scale * (
            s_ic - s_ec - (1.0 - ndi) * b_s_ec * (dperp_dndi + daniso_dndi * x)
        )
        jac[2, m] = s0 * (iso[m] - tissue)
        jac[3, m] = ds_dc * (bvecs[0, m] * da_x + bvecs[1, m] * da_y + bvecs[2, m] * da_z)
        jac[4, m] = ds_dc * (bvecs[0, m] * db_x + bvecs[1, m] * db_y + bvecs[2, m] * db_z)
        jac[5, m] = work[ROW_MODEL, m] * inv_s0
    _normal_equations(jac, gradient, hessian)
    _to_unconstrained(params, gradient, hessian)
    return nll


@njit(cache=True, fastmath={"reassoc", "contract"})
def _normal_equations(jac, gradient, hessian):
    """``gradient = J^T g`` and the lower triangle of ``hessian = J^T diag(w) J``.

    ``jac`` holds the Jacobian transposed (parameters x measurements) with the weights ``g``
    and ``w`` as its last two rows. Each entry is a dot product over the measurements;
    reassociation lets the compiler vectorise them (all of them: a loop starting after the
    b = 0 measurements measured a third slower than including their constant columns).
    """
    n_meas = jac.shape[1]
    for i in range(N_PARAMS):
        total = 0.0
        for m in range(n_meas):
            total += jac[i, m] * jac[N_PARAMS, m]
        gradient[i] = total
        for j in range(i + 1):
            total = 0.0
            for m in range(n_meas):
                total += jac[i, m] * jac[N_PARAMS + 1, m] * jac[j, m]
            hessian[i, j] = total


@njit(cache=True, fastmath=CONTRACT)
def _to_unconstrained(params, gradient, hessian):
    """Chain rule from the bounded fractions to their ``sin^2`` parameters, in place.

    ``gradient`` and the lower triangle of ``hessian`` come in with respect to (odi, ndi, fwf,
    a, b, s0); the full symmetric matrix goes out with respect to the unconstrained vector, with
    the curvature ``dNLL/df * d2f/du2`` of each map added where positive. Gauss-Newton drops
    that term, yet near a bound (``u`` -> 0 or pi/2) the Jacobian column vanishes and it is the
    whole curvature: with it, a fraction whose optimum lies on its bound gets there in one
    Newton step instead of creeping towards it.
    """
    spans = (1.0 - ODI_MIN, 1.0, 1.0)
    scale = (spans[0] * np.sin(2.0 * params[0]), spans[1] * np.sin(2.0 * params[1]),
             spans[2] * np.sin(2.0 * params[2]), 1.0, 1.0, 1.0)  # fmt: skip
    bound_curvature = (
        max(gradient[0] * spans[0] * 2.0 * np.cos(2.0 * params[0]), 0.0),
        max(gradient[1] * spans[1] * 2.0 * np.cos(2.0 * params[1]), 0.0),
        max(gradient[2] * spans[2] * 2.0 * np.cos(2.0 * params[2]), 0.0),
    )
    for i in range(N_PARAMS):
        gradient[i] *= scale[i]
        for j in range(i + 1):
            hessian[i, j] *= scale[i] * scale[j]
            hessian[j, i] = hessian[i, j]
    for k in range(3):
        hessian[k, k] += bound_curvature[k]
