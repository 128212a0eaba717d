"""Tissue masks from SynthSeg outputs (FreeSurfer label numbers).

SynthSeg (Billot et al., Medical Image Analysis 2023) labels brain structures with FreeSurfer's
look-up table. noddi-bids groups them into three tissue classes (:data:`TISSUE_LABELS`); the
brainstem (16) and ventral diencephalon (28, 60) mix grey and white matter and belong to none.
Tissue probabilities are the sums of the SynthSeg posteriors of a class, or the one-hot
indicators of a label volume; after resampling onto the dwi grid they are thresholded as in the
study (:data:`THRESHOLDS`: 0.9 for WM and CSF, 0.8 for GM).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to, smooth_image

#: FreeSurfer labels of each tissue class.
TISSUE_LABELS: dict[str, tuple[int, ...]] = {
    # cerebral white matter (left, right), cerebellar white matter (left, right)
    "WM": (2, 41, 7, 46),
    # cerebral cortex, cerebellar cortex, thalamus, caudate, putamen, pallidum, hippocampus,
    # amygdala, accumbens (left, right)
    "GM": (3, 42, 8, 47, 10, 49, 11, 50, 12, 51, 13, 52, 17, 53, 18, 54, 26, 58),
    # lateral and inferior lateral ventricles (left, right), 3rd and 4th ventricles, CSF
    "CSF": (4, 43, 5, 44, 14, 15, 24),
}
#: Probability thresholds of the study (tissue probability >= threshold).
THRESHOLDS = {"WM": 0.9, "GM": 0.8, "CSF": 0.9}
#: Frames of ``mri_synthseg --post`` (SynthSeg 2.0 without parcellation), in file order.
SYNTHSEG_POSTERIOR_LABELS = (
    0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28,
    41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60,
)  # fmt: skip


class SegmentationError(ValueError):
    """A SynthSeg output cannot be interpreted."""


def probabilities_from_labels(labels: np.ndarray) -> dict[str, np.ndarray]:
    """One-hot tissue indicators (float) of a FreeSurfer label volume."""
    labels = np.rint(np.asarray(labels)).astype(np.int64)
    return {
        tissue: np.isin(labels, values).astype(np.float32)
        for tissue, values in TISSUE_LABELS.items()
    }


def probabilities_from_posteriors(
    posteriors: np.ndarray, labels: tuple[int, ...] = SYNTHSEG_POSTERIOR_LABELS
) -> dict[str, np.ndarray]:
    """Tissue probabilities as sums of SynthSeg posteriors.

    Parameters
    ----------
    posteriors : ndarray, shape (X, Y, Z, L)
        One frame per label, in the order of ``labels``.
    labels : tuple of int
        FreeSurfer label of each frame.

    Returns
    -------
    dict
        ``{"WM": p, "GM": p, "CSF": p}``, each of shape (X, Y, Z).
    """
    if posteriors.ndim != 4 or posteriors.shape[3] != len(labels):
        raise SegmentationError(
            f"posteriors must have {len(labels)} frames (SynthSeg 2.0 order), got shape "
            f"{posteriors.shape}."
        )
    index = {label: frame for frame, label in enumerate(labels)}
    return {
        tissue: np.sum([posteriors[..., index[v]] for v in values if v in index], axis=0)
        for tissue, values in TISSUE_LABELS.items()
    }


def resample_probability(
    probability: np.ndarray, affine: np.ndarray, reference: nib.Nifti1Image
) -> np.ndarray:
    """Resample a probability map onto the grid of ``reference``.

    When the reference voxels are larger, the map is first smoothed with a Gaussian whose FWHM
    is the reference voxel size, so that the resampled value approximates the tissue fraction
    of the reference voxel rather than one point sample.

    Returns
    -------
    ndarray, shape of ``reference`` (3-D), values clipped to [0, 1]
    """
    image = nib.Nifti1Image(np.asarray(probability, dtype=np.float32), affine)
    source_size = np.sqrt(np.sum(affine[:3, :3] ** 2, axis=0))
    target_size = np.sqrt(np.sum(reference.affine[:3, :3] ** 2, axis=0))
    if np.any(target_size > source_size * 1.01):
        image = smooth_image(image, fwhm=target_size)
    if image.shape[:3] == reference.shape[:3] and np.allclose(image.affine, reference.affine):
        return np.clip(np.asarray(image.dataobj), 0.0, 1.0)
    resampled = resample_from_to(image, (reference.shape[:3], reference.affine), order=1, cval=0.0)
    return np.clip(np.asarray(resampled.dataobj), 0.0, 1.0)


def threshold_probabilities(
    probabilities: Mapping[str, np.ndarray], brain: np.ndarray
) -> dict[str, np.ndarray]:
    """Tissue masks: probability >= :data:`THRESHOLDS`, inside the brain mask."""
    return {
        tissue: (probabilities[tissue] >= THRESHOLDS[tissue]) & brain
        for tissue in THRESHOLDS
        if tissue in probabilities
    }


def segmentation_probabilities(
    probseg: Mapping[str, str | os.PathLike[str]],
    posteriors: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Tissue probabilities from the most informative SynthSeg output given.

    The per-tissue probability maps when all of :data:`THRESHOLDS`' tissues have one, else the
    4-D posteriors, else the one-hot indicators of the label volume.

    Parameters
    ----------
    probseg : mapping
        Tissue -> probability map (``*_label-<tissue>_probseg``); may be empty.
    posteriors : path, optional
        ``mri_synthseg --post`` output (:data:`SYNTHSEG_POSTERIOR_LABELS` frames).
    labels : path, optional
        Label volume (FreeSurfer labels).

    Returns
    -------
    probabilities : dict
        ``{"WM": p, "GM": p, "CSF": p}`` on the segmentation's grid.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine of that grid.
    files : list of str
        The files used (probability maps in name order).

    Raises
    ------
    SegmentationError
        If nothing usable is given, or the posteriors have the wrong frames.
    """
    if set(THRESHOLDS) <= set(probseg):
        images = {tissue: nib.load(probseg[tissue]) for tissue in THRESHOLDS}
        probabilities = {t: np.asarray(i.dataobj, np.float32) for t, i in images.items()}
        return probabilities, images["WM"].affine, sorted(str(p) for p in probseg.values())
    if posteriors is not None:
        image = nib.load(posteriors)
        probabilities = probabilities_from_posteriors(np.asarray(image.dataobj))
        return probabilities, image.affine, [str(posteriors)]
    if labels is not None:
        image = nib.load(labels)
        probabilities = probabilities_from_labels(np.asarray(image.dataobj))
        return probabilities, image.affine, [str(labels)]
    raise SegmentationError("no SynthSeg label volume or probability maps given")


def masks_on_grid(
    probabilities: Mapping[str, np.ndarray],
    affine: np.ndarray,
    reference: nib.Nifti1Image,
    brain: np.ndarray,
) -> dict[str, np.ndarray]:
    """Tissue masks on the dwi grid: probabilities resampled, then thresholded in the brain.

    Parameters
    ----------
    probabilities : mapping
        Tissue -> probability map on the segmentation's grid.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine of the segmentation's grid.
    reference : nibabel image
        An image on the dwi grid (the mean b = 0).
    brain : ndarray of bool
        Brain mask on the dwi grid.

    Returns
    -------
    dict
        Tissue -> boolean mask on the dwi grid (:func:`resample_probability`, then
        :func:`threshold_probabilities`).
    """
    resampled = {
        tissue: resample_probability(probability, affine, reference)
        for tissue, probability in probabilities.items()
    }
    return threshold_probabilities(resampled, brain)
