"""Example BIDS datasets: a dwi run, the tiny block dataset of tests and CI, the phantom example.

The phantom example (:func:`make_example`, the README's ``python -m noddi_bids.example make``)::

    OUT/sub-01/dwi/sub-01_dwi.{nii.gz,bval,bvec,json}
    OUT/derivatives/truth/sub-01/dwi/sub-01_model-noddi_param-<p>_desc-truth_dwimap.nii.gz
    OUT/derivatives/synthseg/sub-01/anat/sub-01_{dseg,label-<T>_probseg}.nii.gz  (2 mm grid)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from noddi_bids.example.phantom import (
    crop_to_brain,
    downsample,
    phantom_parameters,
    simulate_dwi,
    synthseg_labels,
    tissue_probabilities,
)
from noddi_bids.model.directions import (
    perturb_directions,
    random_rotation,
    random_unit_vectors,
    spread_directions,
)
from noddi_bids.model.noddi import noddi_signal
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import Scheme, reference_scheme, write_scheme
from noddi_bids.vocabulary import MAPS

LOGGER = logging.getLogger(__name__)


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
    scheme: Scheme | None = None,
) -> Path:
    """Write a tiny one-participant BIDS dataset for quick end-to-end runs (smoke tests, CI).

    A block of random NODDI voxels (ODI 0.1-0.9, NDI 0.2-0.8, FWF 0-0.4, random orientations)
    inside a two-voxel noise-only border, Rician noise at ``snr``, 2 mm voxels, stored as
    float32.

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
    scheme : Scheme, optional
        Acquisition protocol (default: the reference protocol).

    Returns
    -------
    Path
        ``root``.
    """
    rng = np.random.default_rng(seed)
    scheme = scheme or reference_scheme()
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


#: Gradient tables of the example (:func:`example_scheme`).
TABLES = ("motion", "reference", "rotated", "other")
#: SD of the per-volume tilt of the ``motion`` table, degrees (motion-corrected b-vectors).
MOTION_TILT_DEGREES = 1.5


def example_scheme(table: str, seed: int = 0) -> Scheme:
    """Gradient table of the example: the reference protocol's shells, counts and volume order.

    Parameters
    ----------
    table : {"motion", "reference", "rotated", "other"}
        ``reference``: the reference scheme itself; ``rotated``: rotated as a whole (another
        head position); ``motion``: rotated and every direction tilted at random by
        :data:`MOTION_TILT_DEGREES` (SD), as the b-vectors of a motion-corrected subject are;
        ``other``: another well-spread (electrostatic) direction set per shell.
    seed : int
        Seed of the rotation, tilts or directions.

    Returns
    -------
    Scheme
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    reference = reference_scheme()
    rng = np.random.default_rng([seed, TABLES.index(table)])
    bvecs = reference.bvecs.copy()
    weighted = ~reference.b0_mask
    if table in ("rotated", "motion"):
        bvecs = bvecs @ random_rotation(rng).T
    if table == "motion":
        bvecs[weighted] = perturb_directions(bvecs[weighted], MOTION_TILT_DEGREES, rng)
    if table == "other":
        for shell in range(reference.shells.size):
            volumes = reference.shell_index == shell
            bvecs[volumes] = spread_directions(random_unit_vectors(int(volumes.sum()), rng))
    return Scheme(reference.bvals, bvecs)


def make_example(
    out_dir: Path,
    voxel_size: float = 3.0,
    snr: float = 20.0,
    seed: int = 0,
    progress: bool | None = None,
    table: str = "motion",
    fibres: str = "random",
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
        Random seed (the tissue and the noise draws do not depend on `table`).
    progress : bool, optional
        Progress bar.
    table : str
        Gradient table (:func:`example_scheme`); by default the reference protocol as a
        motion-corrected subject has it: rotated, each direction tilted.
    fibres : {"random", "anatomical"}
        Fibre orientations (:func:`noddi_bids.example.phantom.phantom_parameters`): a smooth
        random field (default), or along the anatomy, as the gradient-table check needs.

    Returns
    -------
    Path
        The dwi image written.
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    fine, fine_affine = crop_to_brain(*tissue_probabilities())
    fractions, affine = downsample(fine, fine_affine, voxel_size)
    maps = phantom_parameters(fractions, rng, fibres)
    scheme = example_scheme(table, seed)
    data = simulate_dwi(maps, scheme, snr, rng, progress)
    dwi = write_bids_dwi(out_dir, {"sub": "01"}, data, affine, scheme)
    (out_dir / "participants.tsv").write_text("participant_id\nsub-01\n")
    (out_dir / "README").write_text(
        "Synthetic NODDI phantom from the MNI152 tissue maps shipped with nilearn, written by "
        f"`python -m noddi_bids.example make` (voxel {voxel_size} mm, SNR {snr}, seed {seed}, "
        f"gradient table {table}{'' if fibres == 'random' else f', {fibres} fibres'}).\n"
    )
    truth = out_dir / "derivatives" / "truth"
    _description(truth, "noddi-bids example: ground truth")
    folder = truth / "sub-01" / "dwi"
    folder.mkdir(parents=True, exist_ok=True)
    for name, param in ((p.name, p.label) for p in MAPS.values()):
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
