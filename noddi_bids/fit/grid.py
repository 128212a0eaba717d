"""Starting points of the conventional fit: the coarse grid, its search, the tensor orientation."""

from __future__ import annotations

import numpy as np
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel
from numba import njit
from threadpoolctl import threadpool_limits

from noddi_bids.fit.layout import (
    ROW_COS2,
    ROW_STICK,
    ROW_TISSUE,
    SLOT_COEF,
    SLOT_COEF_DODI,
    SLOT_SIGNAL,
    SLOT_WORK,
    TABLE_BVALS,
    TABLE_D_PAR,
    TABLE_ISO,
    TABLE_LEAD,
)
from noddi_bids.fit.likelihood import rician_nll_coarse
from noddi_bids.fit.polynomial import CONTRACT
from noddi_bids.fit.signal import (
    hindered_attenuation,
    hindered_diffusivities,
    odi_tables,
    series_by_run,
    squared_cosines,
    tissue_signal,
    unit_signal,
)
from noddi_bids.fit.simd import index
from noddi_bids.model.noddi import odi_from_kappa

#: Watson concentrations of the grid search (ODI ~0.84, 0.5, 0.16, 0.04, 0.01).
GRID_KAPPA = (0.25, 1.0, 4.0, 16.0, 64.0)
#: Neurite density and free-water fractions of the grid search (NODDI toolbox style).
GRID_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def default_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ODI, NDI and FWF values searched for the starting point (5 x 5 x 5)."""
    odi = np.asarray(odi_from_kappa(np.asarray(GRID_KAPPA)), dtype=np.float64)
    fractions = np.asarray(GRID_FRACTIONS, dtype=np.float64)
    return odi, fractions.copy(), fractions.copy()


def tensor_directions(
    data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, b0_threshold: float
) -> np.ndarray:
    """Principal eigenvectors of the diffusion tensor (DIPY, log-linear least squares).

    Only a starting orientation, so the fast ordinary least-squares fit is enough.

    Parameters
    ----------
    data : ndarray, shape (N, M)
        Signals (any scale).
    bvals : ndarray, shape (M,)
        b-values, s/mm^2.
    bvecs : ndarray, shape (M, 3)
        Gradient directions.
    b0_threshold : float
        b-values at or below this are b = 0, s/mm^2.

    Returns
    -------
    ndarray, shape (N, 3)
        Unit vectors; voxels whose tensor fit fails get [0, 0, 1].
    """
    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=b0_threshold)
    # One BLAS thread: multi-threaded BLAS sums in an order that depends on the thread count,
    # and the fit's starting point (hence its result, within tolerance) must not.
    with threadpool_limits(limits=1):
        fit = TensorModel(gtab, fit_method="OLS").fit(data)
    directions = np.asarray(fit.evecs[..., 0], dtype=np.float64)
    norm = np.linalg.norm(directions, axis=-1, keepdims=True)
    bad = ~np.isfinite(norm[:, 0]) | (norm[:, 0] < 1e-12)
    directions[bad] = (0.0, 0.0, 1.0)
    norm[bad] = 1.0
    return directions / norm


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
    coef_buf, coef_dodi_buf = scratch[SLOT_COEF], scratch[SLOT_COEF_DODI]
    work, trial_signal = scratch[SLOT_WORK], scratch[SLOT_SIGNAL]
    bvals, d_par = tables[TABLE_BVALS], tables[TABLE_D_PAR]
    iso, lead = tables[TABLE_ISO], tables[TABLE_LEAD]
    first, n_meas = index(lead), index(bvals.shape[0])
    inv_var = 1.0 / (sigma * sigma)
    n_odi = grid_odi.shape[0]
    best_nll = np.full(n_odi, np.inf)
    best_ndi = np.zeros(n_odi)
    best_fwf = np.zeros(n_odi)
    squared_cosines(mu0, tables, work, lead)
    for m in range(first, n_meas):
        trial_signal[m] = s0 * iso[m]
    free_water_nll = rician_nll_coarse(measured, trial_signal, inv_var, lead)
    for i in range(n_odi):
        e_cos2, _ = odi_tables(grid_odi[i], tables, coef_buf, coef_dodi_buf)
        series_by_run(coef_buf, tables, work, ROW_COS2, ROW_STICK, lead)
        for ndi in grid_ndi:
            if ndi <= 0.0:
                continue
            d_perp_w, anisotropy = hindered_diffusivities(ndi, e_cos2, d_par)
            for m in range(first, n_meas):
                hindered = hindered_attenuation(bvals[m], work[ROW_COS2, m], d_perp_w, anisotropy)
                work[ROW_TISSUE, m] = tissue_signal(ndi, work[ROW_STICK, m], hindered)
            for fwf in grid_fwf:
                if fwf >= 1.0:
                    nll = free_water_nll
                else:
                    for m in range(first, n_meas):
                        trial_signal[m] = s0 * unit_signal(fwf, work[ROW_TISSUE, m], iso[m])
                    nll = rician_nll_coarse(measured, trial_signal, inv_var, lead)
                if nll < best_nll[i]:
                    best_nll[i] = nll
                    best_ndi[i] = ndi
                    best_fwf[i] = fwf
    return best_nll, best_ndi, best_fwf
