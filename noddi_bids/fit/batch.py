"""The batched fit in compiled (numba) code: every voxel of a chunk in parallel.

For each voxel, :func:`fit_voxels` gathers the measurements, finds starting points (the grid
search of :mod:`noddi_bids.fit.grid`, or given values) and keeps the most likely of the
optimiser's runs (:mod:`noddi_bids.fit.optimiser`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from noddi_bids.fit.grid import grid_search
from noddi_bids.fit.layout import (
    N_PHYSICAL,
    SLOT_MEASURED,
    orientation_frame,
    physical,
    scratch_arrays,
)
from noddi_bids.fit.likelihood import likelihood_constant
from noddi_bids.fit.optimiser import fit_from
from noddi_bids.fit.polynomial import CONTRACT


@njit(cache=True, fastmath=CONTRACT)
def gather_measurements(data, row, order, out):
    """``out = data[row, order]``, clipped at 0 (magnitudes)."""
    for m in range(order.shape[0]):
        out[m] = max(data[row, order[m]], 0.0)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def voxel_workspace(data, row, order, direction, tables):
    """Work arrays of one voxel with its measurements gathered, and the chart at ``direction``.

    Returns ``(scratch, measured, frame)``: :func:`~noddi_bids.fit.layout.scratch_arrays`, the
    voxel's measurements in the tables' order (its ``SLOT_MEASURED`` array) and the unit
    direction with the two vectors completing it (:func:`~noddi_bids.fit.layout.orientation_frame`).
    """
    scratch = scratch_arrays(tables)
    measured = scratch[SLOT_MEASURED]
    gather_measurements(data, row, order, measured)
    mu0 = direction / np.sqrt(direction @ direction)
    return scratch, measured, (mu0, *orientation_frame(mu0))


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
    :func:`~noddi_bids.fit.optimiser.levenberg_marquardt`). Returns params (N, 4: odi, ndi,
    fwf, s0), directions (N, 3), the Rician log-likelihood (N,), converged (N,) and iterations
    (N, summed over starts).
    """
    n_vox = rows.shape[0]
    out = np.empty((n_vox, 4))
    out_dir = np.empty((n_vox, 3))
    log_likelihood = np.empty(n_vox)
    converged = np.zeros(n_vox, dtype=np.bool_)
    iterations = np.zeros(n_vox, dtype=np.int64)
    for i in prange(n_vox):
        scratch, measured, frame = voxel_workspace(data, rows[i], order, directions[i], tables)
        mu0 = frame[0]
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
            params, run_nll, run_converged, run_iterations = fit_from(
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
        log_likelihood[i] = likelihood_constant(measured, sigma[i]) - best_nll
    return out, out_dir, log_likelihood, converged, iterations
