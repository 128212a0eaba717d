"""Standard deviations of the maximum-likelihood estimates from the Fisher information.

At the estimate of a voxel, the Fisher information of its measurements ``m_k`` about the
parameters ``theta`` is ``I = J^T diag(i(S_k)) J`` with ``J`` the exact Jacobian of the model
signals ``S_k`` (the fitter's, :func:`noddi_bids.fit.likelihood.objective`) and ``i(S)`` the
**expected** Fisher information of one Rician measurement about its noise-free signal::

    i(S) = E[(d log p(m | S) / dS)^2] = h(S / sigma) / sigma^2,
    h(a) = E[(m r(m a) - a)^2],  m ~ Rice(a, 1),  r = I1 / I0,

tabulated once by quadrature (:func:`rician_information`; h -> 1 at high SNR, where the
Gaussian weight ``1 / sigma^2`` is recovered, and h -> a^2 at zero signal, where a magnitude
says little about the signal). The expected information is used rather than the observed
curvature: it is positive semi-definite by construction and does not depend on the noise of the
voxel's own residuals.

``I`` is formed in the parameters users read, (ODI, NDI, FWF, two orientation angles of the
fitter's chart, S0): the covariance ``I^-1`` is what the delta method gives from the optimiser's
``sin^2`` parameters wherever that map is invertible, and stays defined at the bounds, where it
is not. The standard deviations of ODI, NDI and FWF are the square roots of the diagonal of
``I^-1`` (orientation and S0 are nuisance parameters; inverting the whole matrix accounts for
their correlations). A parameter the measurements carry no information about (the ODI of a voxel
fitted with NDI = 0, where sticks are absent) or an information matrix that is numerically
singular (condition number of the scaled matrix above :data:`MAX_CONDITION`) gives no standard
deviation: NaN, and the voxel is flagged.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, prange
from scipy.special import i0e, i1e

from noddi_bids.fit.batch import voxel_workspace
from noddi_bids.fit.layout import N_PARAMS, ROW_MODEL, SLOT_JACOBIAN, SLOT_WORK
from noddi_bids.fit.likelihood import objective
from noddi_bids.fit.polynomial import CONTRACT
from noddi_bids.model.noddi import ODI_MIN

#: Largest SNR ``S / sigma`` of the table of :func:`rician_information`; above it
#: ``h = 1 - 1 / (2 a^2)`` (its asymptote, within 1e-6 there).
MAX_TABULATED_SNR = 40.0
#: Spacing of the table, in SNR.
TABLE_STEP = 0.02
#: Scaled information matrices with a larger condition number count as singular.
MAX_CONDITION = 1e10
#: A parameter whose information is below this fraction of the largest carries none.
NO_INFORMATION = 1e-12
#: Parameters whose standard deviations are reported (the first three of the fitter's).
N_REPORTED = 3
_QUADRATURE_POINTS = 6000
_QUADRATURE_TAIL = 14.0


@lru_cache(maxsize=1)
def rician_information() -> np.ndarray:
    """``h(a)`` on ``a = 0, TABLE_STEP, ..., MAX_TABULATED_SNR`` (see the module docstring).

    Trapezoidal quadrature of ``(m r(m a) - a)^2`` against the Rice density over
    ``m`` in ``[0, a + 14]`` (6000 points), with exponentially scaled Bessel functions.

    Returns
    -------
    ndarray
        ``h`` at the table's SNRs; 0 at a = 0, 0.52 at 1, 0.98 at 5, 0.9997 at 40.

    Examples
    --------
    >>> h = rician_information()
    >>> round(float(h[50]), 3), round(float(h[-1]), 5)  # a = 1 and a = 40
    (0.521, 0.99969)
    """
    snr = np.arange(0.0, MAX_TABULATED_SNR + TABLE_STEP / 2, TABLE_STEP)
    values = np.empty(snr.size)
    for index, a in enumerate(snr):
        m = np.linspace(0.0, a + _QUADRATURE_TAIL, _QUADRATURE_POINTS)
        z = m * a
        density = m * np.exp(-0.5 * (m - a) ** 2) * i0e(z)
        ratio = i1e(z) / np.maximum(i0e(z), 1e-300)
        values[index] = np.trapezoid((m * ratio - a) ** 2 * density, m)
    return values


def standard_deviations(
    data: np.ndarray,
    rows: np.ndarray,
    order: np.ndarray,
    sigma: np.ndarray,
    estimates: np.ndarray,
    directions: np.ndarray,
    tables: tuple,
) -> np.ndarray:
    """SDs of ODI, NDI and FWF of fitted voxels (NaN where the information is singular).

    Parameters
    ----------
    data : ndarray, shape (N_all, M)
        Signals in acquisition order (finite; negative values count as 0).
    rows : ndarray of int, shape (N,)
        The fitted voxels.
    order : ndarray of int, shape (M,)
        Measurement order of ``tables`` (:class:`~noddi_bids.fit.mle.NoddiMLE`).
    sigma : ndarray, shape (N,)
        Rician noise sigma of each voxel, units of ``data``.
    estimates : ndarray, shape (N, 4)
        Fitted ODI, NDI, FWF and S0.
    directions : ndarray, shape (N, 3)
        Fitted unit fibre orientations.
    tables : tuple
        Packed signal tables (:meth:`~noddi_bids.fit.tables.SignalTables.packed`).

    Returns
    -------
    ndarray, shape (N, 3)
    """
    return _standard_deviations(
        data, rows, order, np.ascontiguousarray(sigma), np.ascontiguousarray(estimates),
        np.ascontiguousarray(directions), tables, rician_information(), TABLE_STEP,
    )  # fmt: skip


@njit(cache=True, parallel=True, fastmath=CONTRACT)
def _standard_deviations(data, rows, order, sigma, estimates, directions, tables, h, step):
    n_vox = rows.shape[0]
    out = np.full((n_vox, N_REPORTED), np.nan)
    for i in prange(n_vox):
        scratch, measured, frame = voxel_workspace(data, rows[i], order, directions[i], tables)
        params = np.zeros(N_PARAMS)
        params[0] = _unconstrained(estimates[i, 0], ODI_MIN)
        params[1] = _unconstrained(estimates[i, 1], 0.0)
        params[2] = _unconstrained(estimates[i, 2], 0.0)
        params[N_PARAMS - 1] = estimates[i, 3]
        gradient = np.empty(N_PARAMS)
        hessian = np.empty((N_PARAMS, N_PARAMS))
        inv_var = 1.0 / (sigma[i] * sigma[i])
        objective(params, frame, measured, inv_var, tables, scratch, True, gradient, hessian)
        information = _information(scratch[SLOT_JACOBIAN], scratch[SLOT_WORK][ROW_MODEL],
                                   sigma[i], h, step)  # fmt: skip
        out[i] = _marginal_sd(information)
    return out


@njit(cache=True, fastmath=CONTRACT)
def _unconstrained(value, low):
    """Inverse of ``low + (1 - low) sin^2(u)``, exact (no margin from the bounds)."""
    ratio = min(max((value - low) / (1.0 - low), 0.0), 1.0)
    return np.arcsin(np.sqrt(ratio))


@njit(cache=True, fastmath=CONTRACT)
def _information(jacobian, model, sigma, h, step):
    """``J^T diag(i(S)) J`` from the transposed Jacobian rows and the model signals."""
    n_meas = model.shape[0]
    weights = np.empty(n_meas)
    last = h.shape[0] - 1
    for m in range(n_meas):
        a = max(model[m], 0.0) / sigma
        position = a / step
        if position >= last:
            value = 1.0 - 0.5 / (a * a)
        else:
            cell = int(position)
            t = position - cell
            value = (1.0 - t) * h[cell] + t * h[cell + 1]
        weights[m] = value / (sigma * sigma)
    information = np.zeros((N_PARAMS, N_PARAMS))
    for r in range(N_PARAMS):
        for c in range(r + 1):
            total = 0.0
            for m in range(n_meas):
                total += jacobian[r, m] * weights[m] * jacobian[c, m]
            information[r, c] = total
            information[c, r] = total
    return information


@njit(cache=True)
def _marginal_sd(information):
    """SDs of the first three parameters from an information matrix (NaN where singular).

    Parameters without information are left out (their SD is NaN); the rest of the matrix is
    scaled to a unit diagonal and inverted by its eigen-decomposition, unless its condition
    number exceeds ``MAX_CONDITION`` (then every SD is NaN).
    """
    out = np.full(N_REPORTED, np.nan)
    diagonal = np.diag(information).copy()
    largest = diagonal.max()
    if not largest > 0.0:
        return out
    kept = np.flatnonzero(diagonal > NO_INFORMATION * largest)
    scale = np.sqrt(diagonal[kept])
    size = kept.shape[0]
    scaled = np.empty((size, size))
    for r in range(size):
        for c in range(size):
            scaled[r, c] = information[kept[r], kept[c]] / (scale[r] * scale[c])
    values, vectors = np.linalg.eigh(scaled)
    if values[0] <= values[-1] / MAX_CONDITION:
        return out
    for r in range(size):
        parameter = kept[r]
        if parameter >= N_REPORTED:
            continue
        variance = 0.0
        for k in range(size):
            variance += vectors[r, k] * vectors[r, k] / values[k]
        out[parameter] = np.sqrt(variance) / scale[r]
    return out
