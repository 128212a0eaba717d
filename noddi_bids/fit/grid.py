"""Starting points of the conventional fit: the coarse grid and the tensor orientation."""

from __future__ import annotations

import numpy as np
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel
from threadpoolctl import threadpool_limits

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
