"""A realistic NODDI phantom built offline from the MNI152 tissue maps that ship with nilearn.

CSF is the rest of nilearn's brain mask. On a ~3 mm grid each voxel mixes per-tissue NODDI
parameters (:data:`TISSUE_PARAMETERS`) in proportion to its tissue probabilities, plus smooth
spatial variation; fibre orientations follow a smooth random field. Signals come from the exact
forward model with Rician noise. :mod:`noddi_bids.example.bids` writes it as a dataset.
"""

from __future__ import annotations

from collections.abc import Mapping

import nibabel as nib
import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from noddi_bids.model.noddi import ODI_MIN, noddi_signal
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import Scheme
from noddi_bids.progress import no_bar
from noddi_bids.vocabulary import PARAMETERS

#: NODDI parameters (ODI, NDI, FWF) of pure tissue, close to the study's in-vivo MLE means.
TISSUE_PARAMETERS = {
    "WM": (0.25, 0.70, 0.10),
    "GM": (0.50, 0.45, 0.05),
    "CSF": (0.50, 0.50, 0.97),
}
#: b = 0 signal of pure tissue (T2-weighted: CSF is bright).
TISSUE_S0 = {"WM": 900.0, "GM": 1100.0, "CSF": 2000.0}
#: Signal the SNR refers to (the noise sigma is ``REFERENCE_S0 / snr``).
REFERENCE_S0 = 1000.0
#: SD of the smooth spatial variation added to ODI and NDI.
VARIATION_SD = 0.04
#: FreeSurfer labels written in the SynthSeg-style label volume (left, right hemisphere).
FREESURFER_LABELS = {"WM": (2, 41), "GM": (3, 42), "ventricle": (4, 43), "CSF": (24, 24)}
#: CSF farther than this from the brain surface (mm) is labelled as lateral ventricle.
VENTRICLE_DEPTH_MM = 15.0
#: Fibre orientation fields: a smooth random field (the default), or anatomical (see
#: :func:`anatomical_directions`).
FIBRES = ("random", "anatomical")
_CHUNK = 2000


def tissue_probabilities() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """WM, GM and CSF probabilities on nilearn's 2 mm MNI152 grid (shipped, offline).

    Returns
    -------
    probabilities : dict
        ``{"WM": p, "GM": p, "CSF": p}``, summing to at most 1 in each voxel, 0 outside the brain.
    affine : ndarray, shape (4, 4)
        Voxel-to-world transform of the grid.
    """
    from nilearn import datasets

    brain_img = datasets.load_mni152_brain_mask(resolution=2)
    brain = np.asarray(brain_img.dataobj) > 0
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)
    gm, wm = np.clip(gm, 0, 1) * brain, np.clip(wm, 0, 1) * brain
    total = np.maximum(gm + wm, 1.0)
    gm, wm = gm / total, wm / total
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * brain
    return {"WM": wm, "GM": gm, "CSF": csf}, brain_img.affine


def crop_to_brain(probabilities: Mapping[str, np.ndarray], affine: np.ndarray, margin: int = 3):
    """Crop the grid to the brain's bounding box plus a margin (voxels)."""
    brain = sum(probabilities.values()) > 0
    index = np.argwhere(brain)
    low = np.maximum(index.min(0) - margin, 0)
    high = np.minimum(index.max(0) + margin + 1, brain.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    return {t: p[box] for t, p in probabilities.items()}, shifted


def downsample(
    probabilities: Mapping[str, np.ndarray], affine: np.ndarray, voxel_size: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tissue fractions on an isotropic grid of ``voxel_size`` mm covering the same field."""
    from noddi_bids.tissue.synthseg import resample_probability

    shape_mm = np.array(next(iter(probabilities.values())).shape) * np.abs(np.diag(affine)[:3])
    shape = tuple(int(n) for n in np.ceil(shape_mm / voxel_size))
    target_affine = affine.copy()
    target_affine[:3, :3] = np.diag(np.sign(np.diag(affine)[:3]) * voxel_size)
    reference = nib.Nifti1Image(np.zeros(shape, np.float32), target_affine)
    return {
        tissue: resample_probability(p, affine, reference) for tissue, p in probabilities.items()
    }, target_affine


def smooth_field(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth Gaussian random field with unit SD (Gaussian-filtered white noise)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / max(float(field.std()), 1e-12)


def anatomical_directions(fractions: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fibre orientations that follow the anatomy of the tissue fractions.

    From the structure tensor of the (smoothed) white-matter fraction: in white matter the
    direction along which the fraction changes least (along its sheets and tubes, as tracts
    run), elsewhere the direction across the white-matter boundary (radial in the cortex, as
    its neurites are). Fibres that continue along the tissue are what a gradient-table check
    looks for (:mod:`noddi_bids.qc.gradients`); a random field carries no such structure.

    Parameters
    ----------
    fractions : mapping
        ``{"WM", "GM", "CSF"}`` fractions on one isotropic grid.

    Returns
    -------
    ndarray, shape (X, Y, Z, 3)
        Unit vectors in voxel axes.
    """
    wm = ndimage.gaussian_filter(np.asarray(fractions["WM"], dtype=np.float64), 1.0)
    gradient = np.gradient(wm)
    tensor = np.empty(wm.shape + (3, 3))
    for i in range(3):
        for j in range(i, 3):
            tensor[..., i, j] = ndimage.gaussian_filter(gradient[i] * gradient[j], 2.0)
            tensor[..., j, i] = tensor[..., i, j]
    _, vectors = np.linalg.eigh(tensor)
    white = np.asarray(fractions["WM"]) >= 0.5
    return np.where(white[..., None], vectors[..., 0], vectors[..., 2])


def phantom_parameters(
    fractions: Mapping[str, np.ndarray], rng: np.random.Generator, fibres: str = "random"
) -> dict[str, np.ndarray]:
    """Ground-truth maps of a phantom with the given tissue fractions.

    Parameters
    ----------
    fractions : mapping
        ``{"WM", "GM", "CSF"}`` fractions on one grid.
    rng : numpy.random.Generator
        Seeded generator.
    fibres : {"random", "anatomical"}
        Fibre orientations: a smooth random field, or :func:`anatomical_directions` (the
        random field is drawn in both cases, so the other maps and the noise are the same).

    Returns
    -------
    dict
        ``odi``, ``ndi``, ``fwf``, ``s0`` (X, Y, Z), ``direction`` (X, Y, Z, 3) and ``brain``
        (bool: voxels with tissue fraction >= 0.5).
    """
    total = sum(fractions.values())
    brain = total >= 0.5
    weights = {t: np.where(brain, f / np.maximum(total, 1e-6), 0.0) for t, f in fractions.items()}
    shape = brain.shape
    maps = {}
    for index, name in enumerate(PARAMETERS):
        maps[name] = sum(weights[t] * TISSUE_PARAMETERS[t][index] for t in weights)
    tissue_share = 1.0 - weights["CSF"]
    maps["odi"] = maps["odi"] + VARIATION_SD * tissue_share * smooth_field(shape, 1.5, rng)
    maps["ndi"] = maps["ndi"] + VARIATION_SD * tissue_share * smooth_field(shape, 1.5, rng)
    maps["odi"] = np.clip(maps["odi"], 2 * ODI_MIN, 0.99)
    maps["ndi"] = np.clip(maps["ndi"], 0.01, 0.99)
    maps["fwf"] = np.clip(maps["fwf"], 0.0, 1.0)
    direction = np.stack([smooth_field(shape, 2.0, rng) for _ in range(3)], axis=-1)
    if fibres == "anatomical":
        direction = anatomical_directions(fractions)
    elif fibres != "random":
        raise ValueError(f"fibres must be one of {FIBRES}, got {fibres!r}")
    maps["direction"] = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    maps["s0"] = sum(weights[t] * TISSUE_S0[t] for t in weights)
    for name in (*PARAMETERS, "s0"):
        maps[name] = np.where(brain, maps[name], 0.0)
    maps["direction"] = np.where(brain[..., None], maps["direction"], 0.0)
    maps["brain"] = brain
    return maps


def simulate_dwi(
    maps: Mapping[str, np.ndarray],
    scheme: Scheme,
    snr: float,
    rng: np.random.Generator,
    progress: bool | None = None,
) -> np.ndarray:
    """Noisy diffusion image of a phantom (brain signal plus Rician noise everywhere).

    Parameters
    ----------
    maps : mapping
        Output of :func:`phantom_parameters`.
    scheme : Scheme
        Acquisition scheme.
    snr : float
        Signal-to-noise ratio of a b = 0 signal of :data:`REFERENCE_S0`.
    rng : numpy.random.Generator
        Seeded generator.
    progress : bool, optional
        Show a progress bar (default: on a terminal).

    Returns
    -------
    ndarray, shape (X, Y, Z, M), float64
    """
    brain = maps["brain"]
    index = np.flatnonzero(brain)
    signal = np.zeros((brain.size, scheme.n_measurements))
    flat = {name: maps[name].reshape(brain.size, *maps[name].shape[3:]) for name in maps}
    for start in tqdm(range(0, index.size, _CHUNK), desc="phantom", disable=no_bar(progress)):
        rows = index[start : start + _CHUNK]
        signal[rows] = flat["s0"][rows, None] * noddi_signal(
            flat["odi"][rows],
            flat["ndi"][rows],
            flat["fwf"][rows],
            flat["direction"][rows],
            scheme.bvals,
            scheme.bvecs,
        )
    noisy = add_rician_noise(signal, snr, rng, s0=REFERENCE_S0)
    return noisy.reshape(*brain.shape, scheme.n_measurements)


def synthseg_labels(probabilities: Mapping[str, np.ndarray], affine: np.ndarray) -> np.ndarray:
    """SynthSeg-style FreeSurfer label volume from tissue probabilities (most likely tissue).

    Hemispheres split at world x = 0 (left: x < 0); CSF deeper than
    :data:`VENTRICLE_DEPTH_MM` is labelled as lateral ventricle.
    """
    tissues = ("WM", "GM", "CSF")
    stack = np.stack([probabilities[t] for t in tissues])
    brain = stack.sum(0) >= 0.5
    winner = np.argmax(stack, axis=0)
    ijk = np.indices(brain.shape).reshape(3, -1)
    x = (affine[0, :3] @ ijk + affine[0, 3]).reshape(brain.shape)
    right = (x >= 0).astype(int)
    voxel_mm = float(np.abs(affine[0, 0]))
    depth = ndimage.distance_transform_edt(brain) * voxel_mm
    labels = np.zeros(brain.shape, dtype=np.int16)
    for index, tissue in enumerate(tissues):
        selected = brain & (winner == index)
        if tissue == "CSF":
            deep = selected & (depth > VENTRICLE_DEPTH_MM)
            pair = np.array(FREESURFER_LABELS["ventricle"])
            labels[deep] = pair[right[deep]]
            selected = selected & ~deep
        pair = np.array(FREESURFER_LABELS[tissue])
        labels[selected] = pair[right[selected]]
    return labels
