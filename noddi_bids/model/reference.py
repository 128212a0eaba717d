"""The dwi reference (mean b = 0 image), the brain mask and the signals normalised by it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from dipy.segment.mask import median_otsu

from noddi_bids.model.normalise import normalise_by_b0


@dataclass(frozen=True)
class NormalisedSignals:
    """What every estimator needs from a 4-D diffusion image (:func:`normalise_dwi`).

    Attributes
    ----------
    mean_b0 : ndarray, shape (X, Y, Z)
        Mean of the b = 0 volumes (0 where a voxel has non-finite data).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain voxels that can be normalised (finite data, positive mean b = 0).
    signals : ndarray, shape (N, M)
        Signals of the ``mask`` voxels (C order) divided by their mean b = 0 signal.
    n_nonfinite : int
        Voxels of the brain region dropped because some volume is NaN or infinite.
    n_nonpositive_b0 : int
        Voxels of the brain region dropped because the mean b = 0 signal is <= 0.
    """

    mean_b0: np.ndarray
    mask: np.ndarray
    signals: np.ndarray
    n_nonfinite: int
    n_nonpositive_b0: int


def automatic_brain_mask(mean_b0: np.ndarray) -> np.ndarray:
    """Brain mask from the mean b = 0 image: DIPY's ``median_otsu`` (radius 1, 1 pass).

    Parameters
    ----------
    mean_b0 : ndarray, shape (X, Y, Z)
        Mean b = 0 image; non-finite values are treated as 0.

    Returns
    -------
    ndarray of bool, shape (X, Y, Z)
    """
    clean = np.where(np.isfinite(mean_b0), mean_b0, 0.0)
    _, mask = median_otsu(clean, median_radius=1, numpass=1)
    return np.asarray(mask, dtype=bool)


def normalise_dwi(
    data: np.ndarray, b0_mask: np.ndarray, brain_mask: np.ndarray | None = None
) -> NormalisedSignals:
    """Mean b = 0, brain mask and normalised signals of a diffusion image.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z, M)
        Diffusion image, volumes last.
    b0_mask : ndarray of bool, shape (M,)
        Which volumes are b = 0.
    brain_mask : ndarray of bool, shape (X, Y, Z), optional
        Brain region; default :func:`automatic_brain_mask` of the mean b = 0.

    Returns
    -------
    NormalisedSignals
        Voxels with non-finite data or a non-positive mean b = 0 are left out of the mask and
        counted, never divided by.
    """
    finite = np.all(np.isfinite(data), axis=-1)
    mean_b0 = np.where(finite, np.mean(np.where(finite[..., None], data, 0.0)[..., b0_mask], -1), 0)
    region = automatic_brain_mask(mean_b0) if brain_mask is None else brain_mask.astype(bool)
    normalised, valid = normalise_by_b0(data[region], b0_mask)
    mask = np.zeros(region.shape, dtype=bool)
    mask[region] = valid
    return NormalisedSignals(
        mean_b0=mean_b0.astype(np.float32),
        mask=mask,
        signals=normalised[valid].astype(np.float32),
        n_nonfinite=int(np.count_nonzero(region & ~finite)),
        n_nonpositive_b0=int(np.count_nonzero(region & finite & (mean_b0 <= 0))),
    )
