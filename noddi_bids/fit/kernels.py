"""Compiled per-voxel kernels of the NODDI fitter (numba), run in parallel over voxels.

Why compiled: a Levenberg-Marquardt fit needs the signal and its Jacobian for every voxel at
every iteration; NumPy over (voxels x measurements) arrays would allocate tens of temporaries per
step. numba compiles the voxel loop (``prange``: all voxels of a chunk in parallel, no Python
loop) and keeps each voxel's work in registers and cache. The maths mirrors
:mod:`noddi_bids.model.noddi`, evaluated through the exact tables of :mod:`noddi_bids.fit.tables`.

Parameter vector of one voxel (``N_PARAMS`` = 6)::

    [u_odi, u_ndi, u_fwf, a, b, s0]

with ``odi = ODI_MIN + (1 - ODI_MIN) sin^2(u_odi)``, ``ndi = sin^2(u_ndi)``,
``fwf = sin^2(u_fwf)`` (bounded without constraints, as in the NODDI toolbox), the orientation
``mu = normalise(mu0 + a e1 + b e2)`` in a chart around the starting direction ``mu0``, and the
b = 0 signal ``s0``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from noddi_bids.fit.bessel import COARSE_BLOCK, log_i0_and_ratio, log_i0_split_coarse
from noddi_bids.fit.polynomial import CONTRACT, polynomial_value
from noddi_bids.fit.simd import exp, index
from noddi_bids.fit.tables import PACKED
from noddi_bids.model.noddi import ODI_MIN

N_PARAMS = 6
# Positions in the packed tables (:meth:`noddi_bids.fit.tables.SignalTables.packed`).
(_ODI_NODES, _COEF, _COEF_DODI, _MEAN_COS2, _MEAN_COS2_DODI, _RUNS, _BVALS, _BVECS, _D_PAR, _ISO,
 _TERMS, _LEAD) = (PACKED.index(name) for name in (
    "odi_nodes", "stick_coef", "stick_coef_dodi", "mean_cos2", "mean_cos2_dodi", "runs", "bvals",
    "bvecs_by_axis", "d_par", "iso_signal", "stick_terms", "leading_b0"))  # fmt: skip
# Values of :func:`physical`: odi, ndi, fwf, s0 and the unit orientation.
N_PHYSICAL = 7
# Marquardt damping range (relative to the curvature's diagonal).
_MIN_DAMPING = 1e-9
# Damping after a rejected nearly-undamped step (smaller values change the step too little to
# be worth another trial).
_FIRST_DAMPING = 1e-3
_MAX_DAMPING = 1e12
# A later start stops in the basin of an optimum found from an earlier start: when it comes this
# close to it (fractions, radians, relative s0), or when its Newton step lands this close while
# it is within _NEWTON_REACH times that distance.
SAME_OPTIMUM = 1e-2
_NEWTON_REACH = 5.0
# Largest per-iteration contraction assumed when extrapolating the remaining gain (see
# :func:`_remaining_gain`).
_MAX_CONTRACTION = 0.9
# A run whose Newton decrement is below this many tolerances checks the gain of its next step
# before paying for derivatives there: it is most likely the last.
_FINAL_STEP = 3.0
# Starting fractions are kept this far inside [0, 1]: at sin^2(u) = 0 or 1 the gradient vanishes.
_EDGE = 1e-3
# Rows of the per-measurement work array: g.mu and its square, stick and hindered attenuations,
# model signal, the stick's x- and ODI-derivatives, likelihood terms, the grid's tissue signal.
_COS, _COS2, _STICK, _HINDERED, _MODEL, _STICK_DX, _STICK_DODI, _NLL_TERMS, _TISSUE = range(9)
# Floor for zero magnitudes in the likelihood's ``log(m / sigma^2)`` term.
_TINY_SIGNAL = 1e-300
# Positions of the orientation rows, the physical-values buffer and the voxel's measurements
# in :func:`scratch_arrays`.
_ORIENTATION, _PHYSICAL_BUFFER, _MEASURED = 6, 7, 8


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


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _hermite(nodes, position):
    """Cell index, Hermite basis weights and their derivatives at ``position`` on ``nodes``."""
    n_cells = nodes.shape[0] - 1
    step = (nodes[-1] - nodes[0]) / n_cells
    t = (position - nodes[0]) / step
    cell = min(max(int(t), 0), n_cells - 1)
    t -= cell
    t2 = t * t
    t3 = t2 * t
    weights = (2 * t3 - 3 * t2 + 1, (t3 - 2 * t2 + t) * step, -2 * t3 + 3 * t2, (t3 - t2) * step)
    slopes = (
        (6 * t2 - 6 * t) / step,
        3 * t2 - 4 * t + 1,
        (-6 * t2 + 6 * t) / step,
        3 * t2 - 2 * t,
    )
    return cell, weights, slopes


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _interpolate(values, derivatives, cell, weights, slopes):
    """Cubic Hermite value and derivative of a tabulated 1-D function."""
    v0, v1 = values[cell], values[cell + 1]
    d0, d1 = derivatives[cell], derivatives[cell + 1]
    value = weights[0] * v0 + weights[1] * d0 + weights[2] * v1 + weights[3] * d1
    slope = slopes[0] * v0 + slopes[1] * d0 + slopes[2] * v1 + slopes[3] * d1
    return value, slope


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _hindered_diffusivities(ndi, e_cos2, d_par):
    """Watson-averaged hindered tensor: perpendicular diffusivity and (parallel - perpendicular).

    Mirrors :func:`noddi_bids.model.noddi.hindered_signal` with ``d_perp = d_par (1 - ndi)`` and
    ``e_cos2`` the Watson mean of ``(mu.n)^2``.
    """
    d_perp_w = d_par * (1.0 - ndi) + d_par * ndi * (1.0 - e_cos2) / 2.0
    return d_perp_w, d_par * ndi * (3.0 * e_cos2 - 1.0) / 2.0


@njit(cache=True, fastmath=CONTRACT)
def odi_tables(odi, tables, out, out_dodi):
    """Interpolate the tables at ``odi`` (one set of Hermite weights for all of them).

    Writes the stick's power-series coefficients for every b-value to ``out`` and their
    ODI-derivatives to ``out_dodi``; returns the Watson mean of ``(mu.n)^2`` and its
    ODI-derivative.
    """
    odi_nodes, coef, coef_dodi = tables[_ODI_NODES], tables[_COEF], tables[_COEF_DODI]
    mean_cos2, mean_cos2_dodi = tables[_MEAN_COS2], tables[_MEAN_COS2_DODI]
    cell, weights, slopes = _hermite(odi_nodes, odi)
    for shell in range(coef.shape[0]):
        for k in range(coef.shape[2]):
            value, slope = _interpolate(
                coef[shell, :, k], coef_dodi[shell, :, k], cell, weights, slopes
            )
            out[shell, k] = value
            out_dodi[shell, k] = slope
    return _interpolate(mean_cos2, mean_cos2_dodi, cell, weights, slopes)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _slope_coefficients(coefficients, out):
    """Power-series coefficients of the x-derivative of each row of ``coefficients``."""
    for shell in range(coefficients.shape[0]):
        for k in range(coefficients.shape[1] - 1):
            out[shell, k] = (k + 1) * coefficients[shell, k + 1]
        out[shell, coefficients.shape[1] - 1] = 0.0


@njit(cache=True, fastmath=CONTRACT)
def orientation_frame(mu0):
    """Two unit vectors completing ``mu0`` to an orthonormal basis."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(mu0[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = helper - mu0 * (helper @ mu0)
    e1 /= np.sqrt(e1 @ e1)
    e2 = np.cross(mu0, e1)
    return e1, e2


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _hindered_attenuation(bval, x, d_perp_w, anisotropy):
    """Hindered compartment's attenuation at ``x = (g.mu)^2`` (:func:`_hindered_diffusivities`)."""
    return exp(-bval * (d_perp_w + anisotropy * x))


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _tissue_signal(ndi, stick, hindered):
    """Attenuation of the tissue (intra- and extra-neurite) part of the signal."""
    return ndi * stick + (1.0 - ndi) * hindered


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _unit_signal(fwf, tissue, free_water):
    """Signal relative to s0 from the tissue and free-water attenuations."""
    return (1.0 - fwf) * tissue + fwf * free_water


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _squared_cosines(mu, tables, work, first):
    """``g.mu`` and ``(g.mu)^2`` of the measurements from ``first`` on, to two work rows."""
    bvecs = tables[_BVECS]
    mu_x, mu_y, mu_z = mu[0], mu[1], mu[2]
    for m in range(index(first), index(bvecs.shape[1])):
        c = bvecs[0, m] * mu_x + bvecs[1, m] * mu_y + bvecs[2, m] * mu_z
        work[_COS, m] = c
        work[_COS2, m] = c * c


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _series_by_run(table, tables, work, x_row, out_row, first):
    """Write the series in ``table`` at ``x`` (row ``x_row`` of ``work``) to row ``out_row``.

    Over the measurements from ``first`` on, one run of a b-value at a time
    (:attr:`~noddi_bids.fit.tables.SignalTables.runs`), so that the series (row of ``table``)
    and its length stay fixed inside the loop.
    """
    runs, terms = tables[_RUNS], tables[_TERMS]
    for run in range(runs.shape[0]):
        k = runs[run, 2]
        n_terms = terms[k]
        for m in range(max(runs[run, 0], first), runs[run, 1]):
            work[out_row, m] = polynomial_value(table, k, n_terms, work[x_row, m])


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _signal_rows(ndi, fwf, mu, s0, e_cos2, tables, coef_buf, work):
    """Compartment attenuations and model signal of one voxel in the rows of ``work``.

    Rows ``_COS``, ``_COS2``, ``_STICK``, ``_HINDERED`` from the first measurement with b > 0
    on, ``_MODEL`` for all. Written as separate passes over the measurements, each of which
    LLVM vectorises (all but the stick series, whose length varies with the b-value).
    """
    bvals, d_par, iso, lead = tables[_BVALS], tables[_D_PAR], tables[_ISO], tables[_LEAD]
    n_meas = index(bvals.shape[0])
    d_perp_w, anisotropy = _hindered_diffusivities(ndi, e_cos2, d_par)
    _squared_cosines(mu, tables, work, lead)
    _series_by_run(coef_buf, tables, work, _COS2, _STICK, lead)
    for m in range(index(0), index(lead)):
        work[_MODEL, m] = s0
    for m in range(index(lead), n_meas):
        hindered = _hindered_attenuation(bvals[m], work[_COS2, m], d_perp_w, anisotropy)
        work[_HINDERED, m] = hindered
        tissue = _tissue_signal(ndi, work[_STICK, m], hindered)
        work[_MODEL, m] = s0 * _unit_signal(fwf, tissue, iso[m])
    return d_perp_w, anisotropy


@njit(cache=True, fastmath=CONTRACT)
def model_signal(odi, ndi, fwf, mu, s0, tables, scratch, out):
    """Signal of one voxel for all measurements (no derivatives), written to ``out``.

    ``scratch`` holds the work arrays of :func:`scratch_arrays`.
    """
    coef_buf, coef_dodi_buf, work = scratch[0], scratch[1], scratch[3]
    e_cos2, _ = odi_tables(odi, tables, coef_buf, coef_dodi_buf)
    _signal_rows(ndi, fwf, mu, s0, e_cos2, tables, coef_buf, work)
    out[:] = work[_MODEL]


@njit(cache=True, fastmath=CONTRACT)
def decode(params, frame, mu):
    """Physical (odi, ndi, fwf, s0) of the unconstrained vector; writes the orientation to ``mu``.

    Also returns the length of the chart vector ``mu0 + a e1 + b e2`` (for derivatives).
    Written without array temporaries: it runs at every evaluation of the likelihood.
    """
    mu0, e1, e2 = frame
    for k in range(3):
        mu[k] = mu0[k] + params[3] * e1[k] + params[4] * e2[k]
    norm = np.sqrt(mu[0] * mu[0] + mu[1] * mu[1] + mu[2] * mu[2])
    for k in range(3):
        mu[k] /= norm
    odi = ODI_MIN + (1.0 - ODI_MIN) * np.sin(params[0]) ** 2
    return odi, np.sin(params[1]) ** 2, np.sin(params[2]) ** 2, params[5], norm


@njit(cache=True, fastmath=CONTRACT)
def physical(params, frame, out):
    """Write (odi, ndi, fwf, s0, mu_x, mu_y, mu_z) of the unconstrained vector to ``out``."""
    out[0], out[1], out[2], out[3], _ = decode(params, frame, out[4:])


@njit(cache=True, fastmath=CONTRACT)
def _near_found(params, frame, found, scratch, distance):
    """Whether ``params`` lie within ``distance`` of a row of ``found`` (:func:`physical`).

    Fractions within ``distance``, s0 within that fraction of itself and orientations (either
    sign) within ``distance`` radians.
    """
    if found.shape[0] == 0:
        return False
    here = scratch[_PHYSICAL_BUFFER]
    physical(params, frame, here)
    for row in range(found.shape[0]):
        near = abs(here[3] - found[row, 3]) < distance * abs(found[row, 3])
        for k in range(3):
            near = near and abs(here[k] - found[row, k]) < distance
        alignment = abs(here[4] * found[row, 4] + here[5] * found[row, 5] + here[6] * found[row, 6])
        if near and alignment > np.cos(distance):
            return True
    return False


@njit(cache=True, fastmath=CONTRACT)
def encode_fraction(value, low):
    """Inverse of ``low + (1 - low) sin^2(u)`` (value clipped into the range)."""
    ratio = min(max((value - low) / (1.0 - low), _EDGE), 1.0 - _EDGE)
    return np.arcsin(np.sqrt(ratio))


@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def _evaluate(params, frame, measured, inv_var, tables, scratch, derivatives, gradient, hessian):
    """Negative log-likelihood of one voxel at ``params``.

    With ``derivatives``, also writes its gradient and the Rician Gauss-Newton curvature in the
    unconstrained parameters. The Jacobian is taken with respect to the bounded fractions
    (fewer multiplications per measurement), and the normal equations are then scaled by the
    chain rule of the ``sin^2`` maps, whose curvature is added where it is positive (see
    :func:`_to_unconstrained`). The work is split into passes over the measurements (signal,
    likelihood terms, stick derivatives, Jacobian), which run in SIMD lanes but for the stick
    series (:func:`_signal_rows`). The leading b = 0 measurements (signal s0) are left out of
    the signal and Jacobian passes; their constant Jacobian columns come from
    :func:`scratch_arrays`.
    """
    mu0, e1, e2 = frame
    coef_buf, coef_dodi_buf, jac, work, coef_dx_buf = (
        scratch[0], scratch[1], scratch[2], scratch[3], scratch[5]
    )  # fmt: skip
    bvals, bvecs, d_par, lead = tables[_BVALS], tables[_BVECS], tables[_D_PAR], tables[_LEAD]
    iso = tables[_ISO]
    mu, dmu_da, dmu_db = scratch[_ORIENTATION]
    odi, ndi, fwf, s0, norm = decode(params, frame, mu)
    e_cos2, de_dodi = odi_tables(odi, tables, coef_buf, coef_dodi_buf)
    d_perp_w, anisotropy = _signal_rows(ndi, fwf, mu, s0, e_cos2, tables, coef_buf, work)
    if not derivatives:
        return rician_nll(measured, work[_MODEL], inv_var, work[_NLL_TERMS])

    # Likelihood: NLL and its first and (clipped) second derivatives with respect to each model
    # value. The second is the exact Rician curvature inv_var (1 - m^2 inv_var r'(z)),
    # r = I1/I0, r' = 1 - r/z - r^2, clipped below at a tenth of the Gaussian one, so that the
    # matrix stays positive definite while converging like Newton near the optimum.
    n_meas = bvals.shape[0]
    for m in range(index(0), index(n_meas)):
        measured_m = measured[m]
        model = work[_MODEL, m]
        z = measured_m * model * inv_var
        log_i0_z, ratio_over_z = log_i0_and_ratio(z)
        ratio = z * ratio_over_z
        work[_NLL_TERMS, m] = _rician_term(measured_m, model, inv_var, log_i0_z)
        jac[N_PARAMS, m] = (model - measured_m * ratio) * inv_var
        ratio_slope = 1.0 - ratio_over_z - ratio * ratio
        jac[N_PARAMS + 1, m] = max(
            inv_var * (1.0 - measured_m * measured_m * inv_var * ratio_slope), 0.1 * inv_var
        )
    nll = _sum(work[_NLL_TERMS])

    # Jacobian with respect to (odi, ndi, fwf, a, b, s0), transposed.
    _slope_coefficients(coef_buf, coef_dx_buf)
    _series_by_run(coef_dx_buf, tables, work, _COS2, _STICK_DX, lead)
    _series_by_run(coef_dodi_buf, tables, work, _COS2, _STICK_DODI, lead)
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
        c = work[_COS, m]
        x = work[_COS2, m]
        s_ic = work[_STICK, m]
        s_ec = work[_HINDERED, m]
        b_s_ec = bvals[m] * s_ec
        ds_dc = (
            2.0 * c * tissue_scale * (ndi * work[_STICK_DX, m] - (1.0 - ndi) * anisotropy * b_s_ec)
        )
        tissue = _tissue_signal(ndi, s_ic, s_ec)
        jac[0, m] = tissue_scale * (
            ndi * work[_STICK_DODI, m] - (1.0 - ndi) * b_s_ec * (dperp_dodi + daniso_dodi * x)
        )
        jac[1, m] = tissue_scale * (
            s_ic - s_ec - (1.0 - ndi) * b_s_ec * (dperp_dndi + daniso_dndi * x)
        )
        jac[2, m] = s0 * (iso[m] - tissue)
        jac[3, m] = ds_dc * (bvecs[0, m] * da_x + bvecs[1, m] * da_y + bvecs[2, m] * da_z)
        jac[4, m] = ds_dc * (bvecs[0, m] * db_x + bvecs[1, m] * db_y + bvecs[2, m] * db_z)
        jac[5, m] = work[_MODEL, m] * inv_s0
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


@njit(cache=True, fastmath=CONTRACT)
def _damped_step(hessian, gradient, damping, step, factor):
    """Solve ``(H + damping (diag(H) + floor)) step = -gradient`` by Cholesky.

    The small ``floor`` (relative to the largest diagonal entry) keeps parameters whose Jacobian
    column vanishes (a fraction at its bound) from making the system singular at any damping.
    Returns False if the matrix is not numerically positive definite.
    """
    n = gradient.shape[0]
    floor = 0.0
    for i in range(n):
        floor = max(floor, hessian[i, i])
    floor *= 1e-9
    for i in range(n):
        for j in range(i + 1):
            total = hessian[i, j] + (damping * (hessian[i, i] + floor) if i == j else 0.0)
            for k in range(j):
                total -= factor[i, k] * factor[j, k]
            if i == j:
                if total <= 0.0:
                    return False
                factor[i, i] = np.sqrt(total)
            else:
                factor[i, j] = total / factor[j, j]
    for i in range(n):
        total = -gradient[i]
        for k in range(i):
            total -= factor[i, k] * step[k]
        step[i] = total / factor[i, i]
    for i in range(n - 1, -1, -1):
        total = step[i]
        for k in range(i + 1, n):
            total -= factor[k, i] * step[k]
        step[i] = total / factor[i, i]
    return True


@njit(cache=True, fastmath=CONTRACT)
def _model_decrease(hessian, gradient, step):
    """Decrease ``-(g.s + s.H.s / 2)`` predicted by the undamped quadratic model."""
    total = 0.0
    for i in range(step.shape[0]):
        curvature = 0.0
        for j in range(step.shape[0]):
            curvature += hessian[i, j] * step[j]
        total -= step[i] * (gradient[i] + 0.5 * curvature)
    return total


@njit(cache=True, fastmath=CONTRACT)
def _remaining_gain(last, previous):
    """Gain still to come if the last two decreases continue geometrically.

    Where Gauss-Newton converges only linearly (its curvature misses the residuals' term, as
    in flat valleys), the Newton decrement underestimates the remaining gain; the observed
    contraction ``last / previous`` (at most ``_MAX_CONTRACTION``) does not. Zero before two
    steps.
    """
    if previous == np.inf:
        return 0.0
    contraction = min(last / previous, _MAX_CONTRACTION)
    return last * contraction / (1.0 - contraction)


@njit(cache=True, fastmath=CONTRACT)
def levenberg_marquardt(
    measured, sigma, params, frame, tables, max_iter, tolerance, scratch, found
):
    """Maximise the Rician likelihood of one voxel from ``params`` (updated in place).

    Newton-type steps with the exact Rician gradient and curvature (see :func:`_evaluate`) and
    Marquardt damping; a step is kept only if it lowers the negative log-likelihood. The
    derivatives are computed together with the likelihood at each trial point, as nearly every
    trial is accepted. Converged means the quadratic model predicts less than ``tolerance`` of
    further decrease for an undamped step (the Newton decrement) and so do the last two
    decreases continued geometrically (:func:`_remaining_gain`), or no damped step lowers the
    NLL any more. (A small decrease of one step alone is no sign of convergence: in a curved
    valley a Newton step gains little far from the optimum.) A run whose Newton decrement is
    within ``_FINAL_STEP`` tolerances evaluates its next trial without derivatives, and stops
    there if that step gained as little and the extrapolated gain is below ``tolerance``. A
    run that comes within ``SAME_OPTIMUM`` of an optimum ``found`` by an earlier start (rows of
    :func:`physical` values), or whose Newton step lands that close from nearby, stops there:
    it is in that optimum's basin and would end at the same point.
    ``frame`` is the starting orientation with the two unit vectors of its chart
    (:func:`orientation_frame`). Returns (nll without the model-free constant, converged,
    iterations).
    """
    n = N_PARAMS
    inv_var = 1.0 / (sigma * sigma)
    gradient = np.empty(n)
    hessian = np.empty((n, n))
    trial_gradient = np.empty(n)
    trial_hessian = np.empty((n, n))
    factor = np.empty((n, n))
    step = np.empty(n)
    trial = np.empty(n)
    damping = _MIN_DAMPING
    last_decrease = np.inf
    previous_decrease = np.inf
    nll = _evaluate(params, frame, measured, inv_var, tables, scratch, True, gradient, hessian)
    for iteration in range(max_iter):
        newton = _damped_step(hessian, gradient, _MIN_DAMPING, step, factor)
        predicted = np.inf
        if newton:
            predicted = 0.0
            for k in range(n):
                predicted -= 0.5 * gradient[k] * step[k]
            remaining = _remaining_gain(last_decrease, previous_decrease)
            if predicted < tolerance and remaining < tolerance:
                return nll, True, iteration
            if found.shape[0] > 0:
                for k in range(n):
                    trial[k] = params[k] + step[k]
                if _near_found(trial, frame, found, scratch, SAME_OPTIMUM) and _near_found(
                    params, frame, found, scratch, _NEWTON_REACH * SAME_OPTIMUM
                ):
                    return nll, True, iteration
        improved = False
        final_guess = newton and predicted < _FINAL_STEP * tolerance
        with_derivatives = not final_guess
        while damping < _MAX_DAMPING:
            solved = newton if damping == _MIN_DAMPING else False
            if solved or _damped_step(hessian, gradient, damping, step, factor):
                for k in range(n):
                    trial[k] = params[k] + step[k]
                trial_nll = _evaluate(trial, frame, measured, inv_var, tables, scratch,
                                      with_derivatives, trial_gradient, trial_hessian)  # fmt: skip
                if trial_nll < nll:
                    improved = True
                    break
                with_derivatives = False
            damping = max(10.0 * damping, _FIRST_DAMPING)
        if not improved:
            return nll, True, iteration
        decrease = nll - trial_nll
        if (
            final_guess
            and decrease < _FINAL_STEP * tolerance
            and _remaining_gain(decrease, last_decrease) < tolerance
        ):
            params[:] = trial
            return trial_nll, True, iteration + 1
        if not with_derivatives:
            _evaluate(trial, frame, measured, inv_var, tables, scratch, True, trial_gradient,
                      trial_hessian)  # fmt: skip
        previous_decrease = last_decrease
        last_decrease = decrease
        # Nielsen's update: relax the damping as far as the quadratic model predicted the
        # actual decrease well (gain ratio near 1), tighten it where it did not.
        gain_ratio = decrease / _model_decrease(hessian, gradient, step)
        damping = max(damping * max(1.0 / 3.0, 1.0 - (2.0 * gain_ratio - 1.0) ** 3), _MIN_DAMPING)
        nll = trial_nll
        params[:] = trial
        gradient[:] = trial_gradient
        hessian[:] = trial_hessian
        if _near_found(params, frame, found, scratch, SAME_OPTIMUM):
            return nll, True, iteration + 1
    return nll, False, max_iter


@njit(cache=True, fastmath=CONTRACT)
def grid_search(measured, sigma, s0, mu0, grid_odi, grid_ndi, grid_fwf, tables, scratch):
    """Rician-likelihood grid search with orientation and s0 held fixed.

    Returns, for each grid ODI, the best (nll, ndi, fwf): arrays of shape (len(grid_odi),), so
    that the optimiser can start from several distinct ODI hypotheses. The likelihood is the
    coarse one (ranking only). Grid points with NDI = 0 are skipped: without neurites, ODI and
    orientation have no effect, so they would tie across all ODI hypotheses (and win wherever
    neurite density is low) without telling them apart; the optimiser still reaches NDI = 0
    from the others. Combinations with FWF = 1 (pure free water) are evaluated once. The
    b = 0 measurements, whose signal is s0 at every grid point, are left out of the ranking.
    """
    coef_buf, coef_dodi_buf, work, trial_signal = scratch[0], scratch[1], scratch[3], scratch[4]
    bvals, d_par, iso, lead = tables[_BVALS], tables[_D_PAR], tables[_ISO], tables[_LEAD]
    first, n_meas = index(lead), index(bvals.shape[0])
    inv_var = 1.0 / (sigma * sigma)
    n_odi = grid_odi.shape[0]
    best_nll = np.full(n_odi, np.inf)
    best_ndi = np.zeros(n_odi)
    best_fwf = np.zeros(n_odi)
    _squared_cosines(mu0, tables, work, lead)
    for m in range(first, n_meas):
        trial_signal[m] = s0 * iso[m]
    free_water_nll = rician_nll_coarse(measured, trial_signal, inv_var, lead)
    for i in range(n_odi):
        e_cos2, _ = odi_tables(grid_odi[i], tables, coef_buf, coef_dodi_buf)
        _series_by_run(coef_buf, tables, work, _COS2, _STICK, lead)
        for ndi in grid_ndi:
            if ndi <= 0.0:
                continue
            d_perp_w, anisotropy = _hindered_diffusivities(ndi, e_cos2, d_par)
            for m in range(first, n_meas):
                hindered = _hindered_attenuation(bvals[m], work[_COS2, m], d_perp_w, anisotropy)
                work[_TISSUE, m] = _tissue_signal(ndi, work[_STICK, m], hindered)
            for fwf in grid_fwf:
                if fwf >= 1.0:
                    nll = free_water_nll
                else:
                    for m in range(first, n_meas):
                        trial_signal[m] = s0 * _unit_signal(fwf, work[_TISSUE, m], iso[m])
                    nll = rician_nll_coarse(measured, trial_signal, inv_var, lead)
                if nll < best_nll[i]:
                    best_nll[i] = nll
                    best_ndi[i] = ndi
                    best_fwf[i] = fwf
    return best_nll, best_ndi, best_fwf


@njit(cache=True, fastmath=CONTRACT)
def scratch_arrays(tables):
    """Work arrays of one voxel.

    Stick coefficients (value, d/dODI), the transposed Jacobian with the likelihood's gradient
    and curvature weights as its last two rows, per-measurement work rows (``_COS`` ...), a
    signal, the stick's x-derivative coefficients, the orientation and its two derivatives, a
    buffer of :func:`physical` values and the voxel's measurements.
    """
    coef, bvals, lead = tables[_COEF], tables[_BVALS], tables[_LEAD]
    n_meas = bvals.shape[0]
    jac = np.empty((N_PARAMS + 2, n_meas))
    # The Jacobian columns of the leading b = 0 measurements (signal s0), which
    # :func:`_evaluate` does not write.
    jac[: N_PARAMS - 1, :lead] = 0.0
    jac[N_PARAMS - 1, :lead] = 1.0
    return (
        np.empty((coef.shape[0], coef.shape[2])),
        np.empty((coef.shape[0], coef.shape[2])),
        jac,
        np.empty((_TISSUE + 1, n_meas)),
        np.empty(n_meas),
        np.empty((coef.shape[0], coef.shape[2])),
        np.empty((3, 3)),
        np.empty(N_PHYSICAL),
        np.empty(n_meas),
    )


@njit(cache=True, fastmath=CONTRACT)
def _fit_from(
    measured, sigma, odi, ndi, fwf, s0, frame, tables, max_iter, tolerance, scratch, found
):
    """One optimiser run from physical starting values; returns (params, nll, converged, its)."""
    params = np.empty(N_PARAMS)
    params[0] = encode_fraction(odi, ODI_MIN)
    params[1] = encode_fraction(ndi, 0.0)
    params[2] = encode_fraction(fwf, 0.0)
    params[3] = 0.0
    params[4] = 0.0
    params[5] = s0
    nll, converged, iterations = levenberg_marquardt(
        measured, sigma, params, frame, tables, max_iter, tolerance, scratch, found
    )
    return params, nll, converged, iterations


@njit(cache=True, fastmath=CONTRACT)
def _gather_measurements(data, row, order, out):
    """``out = data[row, order]``, clipped at 0 (magnitudes)."""
    for m in range(order.shape[0]):
        out[m] = max(data[row, order[m]], 0.0)


@njit(cache=True, fastmath=CONTRACT)
def _likelihood_constant(measured, sigma):
    """``sum log(m / sigma^2)``: the part of the Rician log-likelihood the model does not change.

    Left out of :func:`rician_nll`; zero magnitudes count as ``_TINY_SIGNAL``.
    """
    total = 0.0
    for m in range(measured.shape[0]):
        total += np.log(max(measured[m], _TINY_SIGNAL))
    return total - measured.shape[0] * 2.0 * np.log(sigma)


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def fit_voxels(
    data, rows, order, sigma, start, directions, n_starts, grid_odi, grid_ndi, grid_fwf, tables,
    max_iter, tolerance,
):  # fmt: skip
    """Fit the voxels ``rows`` of ``data`` in parallel.

    ``data`` holds the signals in acquisition order (finite; negative values count as 0), and
    ``order`` the measurement order of ``tables``; ``sigma``, ``start`` and ``directions`` have
    one row per fitted voxel. ``start`` holds (odi, ndi, fwf, s0) and ``directions`` the
    starting orientations. With ``n_starts`` > 0 the fractions come from the grid search
    instead: the optimiser runs from the best grid point of each of the ``n_starts`` most
    likely grid ODIs and keeps the most likely result (s0 and orientation start from ``start``
    and ``directions``); a later start that enters the basin of an earlier optimum stops (see
    :func:`levenberg_marquardt`). Returns params (N, 4: odi, ndi, fwf, s0), directions (N, 3),
    the Rician log-likelihood (N,), converged (N,) and iterations (N, summed over starts).
    """
    n_vox = rows.shape[0]
    out = np.empty((n_vox, 4))
    out_dir = np.empty((n_vox, 3))
    log_likelihood = np.empty(n_vox)
    converged = np.zeros(n_vox, dtype=np.bool_)
    iterations = np.zeros(n_vox, dtype=np.int64)
    for i in prange(n_vox):
        scratch = scratch_arrays(tables)
        measured = scratch[_MEASURED]
        _gather_measurements(data, rows[i], order, measured)
        mu0 = directions[i] / np.sqrt(directions[i] @ directions[i])
        frame = (mu0, *orientation_frame(mu0))
        s0 = start[i, 3]
        if n_starts > 0:
            grid_nll, grid_ndi_best, grid_fwf_best = grid_search(
                measured, sigma[i], s0, mu0, grid_odi, grid_ndi, grid_fwf, tables, scratch
            )
            order_of_odi = np.argsort(grid_nll)[: min(n_starts, grid_odi.shape[0])]
            starting_points = [
                (grid_odi[j], grid_ndi_best[j], grid_fwf_best[j]) for j in order_of_odi
            ]
        else:
            starting_points = [(start[i, 0], start[i, 1], start[i, 2])]
        best_nll = np.inf
        found = np.empty((len(starting_points), N_PHYSICAL))
        for run, (odi, ndi, fwf) in enumerate(starting_points):
            params, run_nll, run_converged, run_iterations = _fit_from(
                measured, sigma[i], odi, ndi, fwf, s0, frame, tables, max_iter, tolerance,
                scratch, found[:run],
            )  # fmt: skip
            physical(params, frame, found[run])
            iterations[i] += run_iterations
            if run_nll < best_nll:
                best_nll = run_nll
                out[i, :] = found[run, :4]
                out_dir[i] = found[run, 4:]
                converged[i] = run_converged
        log_likelihood[i] = _likelihood_constant(measured, sigma[i]) - best_nll
    return out, out_dir, log_likelihood, converged, iterations


def set_threads(n_threads: int | None) -> None:
    """Limit the number of threads of the parallel kernels (None: all cores)."""
    if n_threads:
        numba.set_num_threads(min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
