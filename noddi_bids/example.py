"""A small realistic example dataset, generated offline, and its comparison with the truth.

The phantom is built from the MNI152 grey- and white-matter probability maps that ship with
nilearn (no download). CSF is the rest of nilearn's brain mask. On a ~3 mm grid each voxel mixes
per-tissue NODDI parameters (:data:`TISSUE_PARAMETERS`) in proportion to its tissue
probabilities, plus smooth spatial variation; fibre orientations follow a smooth random field.
Signals come from the exact forward model with the reference protocol (81 volumes) and Rician
noise, and are written as a BIDS dataset::

    OUT/sub-01/dwi/sub-01_dwi.{nii.gz,bval,bvec,json}
    OUT/derivatives/truth/sub-01/dwi/sub-01_model-noddi_param-<p>_desc-truth_dwimap.nii.gz
    OUT/derivatives/synthseg/sub-01/anat/sub-01_{dseg,label-<T>_probseg}.nii.gz  (2 mm grid)

Usage (one line: make, run the app, report the error against the truth)::

    python -m noddi_bids.example make ex && noddi-bids ex ex/derivatives/noddi participant
        --synthseg-dir ex/derivatives/synthseg -w work && python -m noddi_bids.example compare
        ex ex/derivatives/noddi
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from noddi_bids.io.derivatives import PARAM_LABELS
from noddi_bids.model.noddi import ODI_MIN, noddi_signal
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import Scheme, reference_scheme, write_scheme

LOGGER = logging.getLogger(__name__)

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
_CHUNK = 2000
_PARAMETERS = ("odi", "ndi", "fwf")


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


def _crop(probabilities: Mapping[str, np.ndarray], affine: np.ndarray, margin: int = 3):
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


def phantom_parameters(
    fractions: Mapping[str, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Ground-truth maps of a phantom with the given tissue fractions.

    Parameters
    ----------
    fractions : mapping
        ``{"WM", "GM", "CSF"}`` fractions on one grid.
    rng : numpy.random.Generator
        Seeded generator.

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
    for index, name in enumerate(_PARAMETERS):
        maps[name] = sum(weights[t] * TISSUE_PARAMETERS[t][index] for t in weights)
    tissue_share = 1.0 - weights["CSF"]
    maps["odi"] = maps["odi"] + VARIATION_SD * tissue_share * smooth_field(shape, 1.5, rng)
    maps["ndi"] = maps["ndi"] + VARIATION_SD * tissue_share * smooth_field(shape, 1.5, rng)
    maps["odi"] = np.clip(maps["odi"], 2 * ODI_MIN, 0.99)
    maps["ndi"] = np.clip(maps["ndi"], 0.01, 0.99)
    maps["fwf"] = np.clip(maps["fwf"], 0.0, 1.0)
    direction = np.stack([smooth_field(shape, 2.0, rng) for _ in range(3)], axis=-1)
    maps["direction"] = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    maps["s0"] = sum(weights[t] * TISSUE_S0[t] for t in weights)
    for name in (*_PARAMETERS, "s0"):
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
    disable = not sys.stderr.isatty() if progress is None else not progress
    for start in tqdm(range(0, index.size, _CHUNK), desc="phantom", disable=disable):
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


def write_bids_dwi(
    root: Path,
    entities: Mapping[str, str],
    data: np.ndarray,
    affine: np.ndarray,
    scheme: Scheme,
    dtype: type = np.int16,
) -> Path:
    """Write a dwi run (image, bval, bvec, JSON) into a BIDS dataset, with its description.

    Parameters
    ----------
    root : Path
        Dataset root (``dataset_description.json`` is written if missing).
    entities : mapping
        ``sub``, optional ``ses``, ``acq``, ``dir``, ``run``.
    data : ndarray, shape (X, Y, Z, M)
        Image data (rounded when ``dtype`` is an integer type).
    affine : ndarray, shape (4, 4)
        Voxel-to-world transform.
    scheme : Scheme
        b-values and b-vectors.
    dtype : type
        Stored data type.

    Returns
    -------
    Path
        The image written.
    """
    root = Path(root)
    description = root / "dataset_description.json"
    if not description.exists():
        root.mkdir(parents=True, exist_ok=True)
        description.write_text(
            json.dumps({"Name": "noddi-bids example", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
        )
    folder = root / f"sub-{entities['sub']}"
    if entities.get("ses"):
        folder = folder / f"ses-{entities['ses']}"
    folder = folder / "dwi"
    folder.mkdir(parents=True, exist_ok=True)
    keys = ("sub", "ses", "acq", "dir", "run")
    stem = "_".join(f"{k}-{entities[k]}" for k in keys if entities.get(k)) + "_dwi"
    if np.issubdtype(dtype, np.integer):
        data = np.clip(np.rint(data), 0, np.iinfo(dtype).max)
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    image.header.set_xyzt_units("mm", "sec")
    path = folder / f"{stem}.nii.gz"
    nib.save(image, str(path))
    write_scheme(scheme, folder / f"{stem}.bval", folder / f"{stem}.bvec")
    sidecar = {"EchoTime": 0.083, "RepetitionTime": 5.8, "PhaseEncodingDirection": "j-"}
    (folder / f"{stem}.json").write_text(json.dumps(sidecar, indent=2))
    return path


def make_block_dataset(
    root: Path,
    shape: tuple[int, int, int] = (10, 10, 3),
    snr: float = 30.0,
    s0: float = 1000.0,
    seed: int = 0,
) -> Path:
    """Write a tiny one-participant BIDS dataset for quick end-to-end runs (smoke tests, CI).

    A block of random NODDI voxels (ODI 0.1-0.9, NDI 0.2-0.8, FWF 0-0.4, random orientations)
    inside a two-voxel noise-only border, reference protocol, Rician noise at ``snr``, 2 mm
    voxels, stored as float32.

    Parameters
    ----------
    root : Path
        Dataset root to create.
    shape : tuple of int
        Image size; the border is two voxels in x and y.
    snr : float
        Signal-to-noise ratio of the b = 0 signal.
    s0 : float
        b = 0 signal of the block.
    seed : int
        Random seed (parameters and noise).

    Returns
    -------
    Path
        ``root``.
    """
    rng = np.random.default_rng(seed)
    scheme = reference_scheme()
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, :] = True
    n = int(brain.sum())
    direction = rng.standard_normal((n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    fractions = rng.uniform((0.1, 0.2, 0.0), (0.9, 0.8, 0.4), (n, 3))
    signal = noddi_signal(*fractions.T, direction, scheme.bvals, scheme.bvecs)
    data = np.zeros((*shape, scheme.n_measurements))
    data[brain] = signal
    data = add_rician_noise(data.reshape(-1, data.shape[-1]), snr, rng).reshape(data.shape) * s0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1.0)
    write_bids_dwi(Path(root), {"sub": "01"}, data, affine, scheme, dtype=np.float32)
    (Path(root) / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t30\tF\n")
    return Path(root)


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


def make_example(
    out_dir: Path,
    voxel_size: float = 3.0,
    snr: float = 20.0,
    seed: int = 0,
    progress: bool | None = None,
) -> Path:
    """Write the example BIDS dataset with ground truth and SynthSeg-style derivatives.

    Parameters
    ----------
    out_dir : Path
        Dataset root (created).
    voxel_size : float
        Isotropic voxel size of the dwi grid, mm.
    snr : float
        SNR of a b = 0 signal of 1000 (white matter b = 0 is 900).
    seed : int
        Random seed.
    progress : bool, optional
        Progress bar.

    Returns
    -------
    Path
        The dwi image written.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    fine, fine_affine = _crop(*tissue_probabilities())
    fractions, affine = downsample(fine, fine_affine, voxel_size)
    maps = phantom_parameters(fractions, rng)
    scheme = reference_scheme()
    data = simulate_dwi(maps, scheme, snr, rng, progress)
    dwi = write_bids_dwi(out_dir, {"sub": "01"}, data, affine, scheme)
    (out_dir / "participants.tsv").write_text("participant_id\nsub-01\n")
    (out_dir / "README").write_text(
        "Synthetic NODDI phantom from the MNI152 tissue maps shipped with nilearn, written by "
        f"`python -m noddi_bids.example make` (voxel {voxel_size} mm, SNR {snr}, seed {seed}).\n"
    )
    truth = out_dir / "derivatives" / "truth"
    _description(truth, "noddi-bids example: ground truth")
    folder = truth / "sub-01" / "dwi"
    folder.mkdir(parents=True, exist_ok=True)
    for name, param in PARAM_LABELS.items():
        image = nib.Nifti1Image(maps[name].astype(np.float32), affine)
        nib.save(image, str(folder / f"sub-01_model-noddi_param-{param}_desc-truth_dwimap.nii.gz"))
    for tissue, fraction in fractions.items():
        image = nib.Nifti1Image(fraction.astype(np.float32), affine)
        nib.save(image, str(folder / f"sub-01_label-{tissue}_desc-truth_probseg.nii.gz"))
    synthseg = out_dir / "derivatives" / "synthseg"
    _description(synthseg, "SynthSeg-style segmentation of the example phantom")
    anat = synthseg / "sub-01" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    labels = synthseg_labels(fine, fine_affine)
    nib.save(nib.Nifti1Image(labels, fine_affine), str(anat / "sub-01_dseg.nii.gz"))
    for tissue, probability in fine.items():
        image = nib.Nifti1Image(probability.astype(np.float32), fine_affine)
        nib.save(image, str(anat / f"sub-01_label-{tissue}_probseg.nii.gz"))
    LOGGER.info("Example written to %s (%d brain voxels).", out_dir, int(maps["brain"].sum()))
    return dwi


def _description(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    description = {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "noddi-bids example"}],
    }
    (folder / "dataset_description.json").write_text(json.dumps(description, indent=2))


def compare_with_truth(example_dir: Path, derivatives_dir: Path) -> pd.DataFrame:
    """Error of every estimator's maps against the ground truth, per tissue.

    Parameters
    ----------
    example_dir : Path
        Root written by :func:`make_example`.
    derivatives_dir : Path
        Output folder of ``noddi-bids`` run on it.

    Returns
    -------
    pandas.DataFrame
        Columns tissue, estimator, parameter, n_voxels, truth (mean), estimate (mean), bias
        (mean of estimate - truth) and mae (mean absolute error), in the app's tissue masks
        (CSF: FWF only).
    """
    from noddi_bids.tissue.stats import TISSUE_PARAMETERS, TISSUES

    truth_dir = Path(example_dir) / "derivatives" / "truth" / "sub-01" / "dwi"
    out = Path(derivatives_dir) / "sub-01" / "dwi"

    def load(path: Path) -> np.ndarray:
        return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)

    estimators = sorted(
        {p.name.split("desc-")[1].split("_")[0] for p in out.glob("*model-noddi*_dwimap.nii.gz")}
    )
    rows = []
    for tissue in TISSUES:
        mask_file = out / f"sub-01_label-{tissue}_mask.nii.gz"
        if not mask_file.exists():
            continue
        mask = load(mask_file) > 0
        for estimator in estimators:
            for name in TISSUE_PARAMETERS[tissue]:
                param = PARAM_LABELS[name]
                truth = load(
                    truth_dir / f"sub-01_model-noddi_param-{param}_desc-truth_dwimap.nii.gz"
                )
                estimate = load(
                    out / f"sub-01_model-noddi_param-{param}_desc-{estimator}_dwimap.nii.gz"
                )
                keep = mask & np.isfinite(estimate)
                error = estimate[keep] - truth[keep]
                rows.append(
                    {
                        "tissue": tissue,
                        "estimator": estimator,
                        "parameter": name,
                        "n_voxels": int(keep.sum()),
                        "truth": float(truth[keep].mean()),
                        "estimate": float(estimate[keep].mean()),
                        "bias": float(error.mean()),
                        "mae": float(np.abs(error).mean()),
                    }
                )
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m noddi_bids.example {make,compare} ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m noddi_bids.example",
        description="Make the example phantom dataset, or compare the app's maps with its truth.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write the example BIDS dataset")
    make.add_argument("out_dir")
    make.add_argument("--voxel-size", type=float, default=3.0, help="mm (default 3)")
    make.add_argument("--snr", type=float, default=20.0, help="SNR at b = 0 (default 20)")
    make.add_argument("--seed", type=int, default=0)
    compare = commands.add_parser("compare", help="error of the app's maps against the truth")
    compare.add_argument("example_dir")
    compare.add_argument("derivatives_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "make":
        make_example(Path(args.out_dir), args.voxel_size, args.snr, args.seed)
        return 0
    table = compare_with_truth(Path(args.example_dir), Path(args.derivatives_dir))
    if table.empty:
        sys.stderr.write("no maps or tissue masks found to compare\n")
        return 1
    sys.stdout.write(table.to_string(index=False, float_format="%.3f") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
