"""Normalisation of diffusion signals by the mean b = 0 signal."""

from __future__ import annotations

import numpy as np


def normalise_by_b0(data: np.ndarray, b0_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide each voxel's signal by its mean b = 0 signal.

    Parameters
    ----------
    data : ndarray, shape (..., M)
        Diffusion signals, measurement axis last.
    b0_mask : ndarray of bool, shape (M,)
        Which measurements are b = 0.

    Returns
    -------
    normalised : ndarray, shape (..., M)
        ``data / mean_b0``; 0 where the voxel is not valid (never divided by a bad b = 0).
    valid : ndarray of bool, shape (...)
        Voxels with all-finite data and a positive mean b = 0 signal.
    """
    data = np.asarray(data, dtype=np.float64)
    finite = np.all(np.isfinite(data), axis=-1)
    mean_b0 = np.where(finite, np.mean(np.where(finite[..., None], data, 0.0)[..., b0_mask], -1), 0)
    valid = finite & (mean_b0 > 0)
    safe = np.where(valid, mean_b0, 1.0)[..., None]
    return np.where(valid[..., None], data / safe, 0.0), valid
