"""Finding and checking the inputs of a participant run (pybids queries).

Everything here runs before the Nipype graph is built, so that bad input fails fast with the
right exit code and the output folder untouched: :func:`collect_dwi_runs` returns one
validated :class:`DwiRun` per diffusion run, with the scheme already read and the image data
read once to catch truncated files.

The input may be a raw dataset or a preprocessed derivative dataset (``DatasetType``
``derivative``, e.g. QSIPrep's ``sub-01/dwi/sub-01_space-T1w_desc-preproc_dwi.nii.gz``): then the
``desc-preproc`` dwi are selected when present, ``space-`` is kept in the run's entities, and the
pipeline's own ``desc-brain_mask`` in the same space is used as the brain mask.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import shutil
import subprocess
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from noddi_bids.config import (
    Config,
    EmptySelectionError,
    InputError,
    InvalidDatasetError,
    MissingInputError,
)
from noddi_bids.model.scheme import Scheme, SchemeError, SchemeWarning, read_scheme
from noddi_bids.tissue.synthseg import SYNTHSEG_POSTERIOR_LABELS
from noddi_bids.vocabulary import TISSUES

LOGGER = logging.getLogger(__name__)

#: pybids entity names kept in derivative names, with their BIDS keys, in BIDS order.
NAME_ENTITIES = {
    "subject": "sub",
    "session": "ses",
    "acquisition": "acq",
    "reconstruction": "rec",
    "direction": "dir",
    "run": "run",
    "space": "space",
}
#: ``desc-`` label of the preprocessed dwi series of a derivative dataset (QSIPrep, ...).
PREPROC_DESC = "preproc"
_ENTITY = re.compile(r"(?:^|_)([a-zA-Z]+)-([a-zA-Z0-9]+)")
_NIFTI = (".nii", ".nii.gz")


@dataclass(frozen=True)
class DwiRun:
    """One diffusion run and the files that go with it.

    Attributes
    ----------
    dwi, bval, bvec : Path
        The 4-D image and its b-values / b-vectors (found through BIDS inheritance).
    entities : dict
        BIDS keys (``sub``, ``ses``, ``acq``, ``rec``, ``dir``, ``run``) present in the name.
    metadata : dict
        Merged JSON sidecar metadata.
    scheme : Scheme
        The validated acquisition scheme.
    shape : tuple of int
        Image shape (X, Y, Z, M).
    synthseg : SegmentationFiles or None
        SynthSeg outputs for this run.
    brain_mask : Path or None
        Brain mask to use: from ``--mask-dir``, else the input dataset's own (preprocessed
        input), else None (automatic mask).
    brain_mask_origin : str
        Where ``brain_mask`` comes from, in words (recorded in the mask sidecar).
    gradient_check : dict or None
        Verdict of the gradient-table check (``GradientCheck`` of the map sidecars; None when
        not checked), set before the workflow is built.
    """

    dwi: Path
    bval: Path
    bvec: Path
    entities: dict[str, str]
    metadata: dict[str, Any]
    scheme: Scheme
    shape: tuple[int, ...]
    synthseg: SegmentationFiles | None = None
    brain_mask: Path | None = None
    brain_mask_origin: str = ""
    gradient_check: dict[str, Any] | None = None

    @property
    def subject(self) -> str:
        """Participant label (without ``sub-``)."""
        return self.entities["sub"]

    @property
    def name(self) -> str:
        """Entities joined as in a file name, e.g. ``sub-01_ses-1_run-2``."""
        return "_".join(f"{key}-{value}" for key, value in self.entities.items())


@dataclass(frozen=True)
class SegmentationFiles:
    """SynthSeg outputs of one participant/session.

    Attributes
    ----------
    labels : Path or None
        Label volume (FreeSurfer label numbers), e.g. ``*_dseg.nii.gz`` or ``*_synthseg.nii.gz``.
    posteriors : Path or None
        4-D posterior volume written by ``mri_synthseg --post`` (one frame per label).
    probseg : dict
        Tissue probability maps ``{"WM": path, "GM": path, "CSF": path}`` (``*_label-WM_probseg``).
    """

    labels: Path | None = None
    posteriors: Path | None = None
    probseg: dict[str, Path] = field(default_factory=dict)


def parse_entities(name: str) -> dict[str, str]:
    """BIDS ``key-value`` pairs of a file name, in order of appearance.

    Examples
    --------
    >>> parse_entities("sub-01_ses-2_acq-ms_dwi.nii.gz")
    {'sub': '01', 'ses': '2', 'acq': 'ms'}
    """
    return dict(_ENTITY.findall(name.split(".")[0]))


def check_bids_root(bids_dir: Path) -> dict[str, Any]:
    """Return ``dataset_description.json`` of ``bids_dir``, checked to be a BIDS dataset root.

    Raises
    ------
    InvalidDatasetError
        If the description is missing, unreadable or lacks ``Name`` or ``BIDSVersion``.
    """
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise InvalidDatasetError(
            f"{bids_dir}: not a BIDS dataset (no dataset_description.json at its root)."
        )
    try:
        content = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidDatasetError(f"{description}: unreadable JSON ({err}).") from err
    missing = [key for key in ("Name", "BIDSVersion") if key not in content]
    if missing:
        raise InvalidDatasetError(f"{description}: lacks required field(s) {', '.join(missing)}.")
    return content


def is_derivative(description: dict[str, Any]) -> bool:
    """Whether a dataset description is that of a derivative (preprocessed) dataset."""
    return description.get("DatasetType") == "derivative"


def validate_dataset(bids_dir: Path) -> None:
    """Run the BIDS validator when available.

    The ``bids-validator`` command (Node/Deno) is used when it is on PATH and its errors fail the
    run. Otherwise the Python ``bids_validator`` package checks every file name under ``sub-*``;
    names it rejects are logged (pybids ignores them).

    A derivative dataset (preprocessed input, e.g. QSIPrep) is not checked: raw-data naming
    does not apply to it, and its files are selected by their entities.

    Raises
    ------
    InvalidDatasetError
        If the validator command reports errors.
    """
    if is_derivative(check_bids_root(bids_dir)):
        LOGGER.info(
            "%s: a derivative dataset (preprocessed input); raw BIDS validation does not apply.",
            bids_dir,
        )
        return
    command = shutil.which("bids-validator")
    if command is not None:
        result = subprocess.run(
            [command, str(bids_dir), "--json", "--ignoreWarnings"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise InvalidDatasetError(
                f"{bids_dir}: the BIDS validator reports errors (rerun `bids-validator "
                f"{bids_dir}` to see them, or pass --skip-bids-validation)."
            )
        return
    from bids_validator import BIDSValidator

    validator = BIDSValidator()
    rejected = [
        path.relative_to(bids_dir).as_posix()
        for path in sorted(bids_dir.glob("sub-*/**/*"))
        if path.is_file() and not validator.is_bids("/" + path.relative_to(bids_dir).as_posix())
    ]
    if rejected:
        LOGGER.warning(
            "%d file(s) do not follow BIDS naming and are ignored, e.g. %s",
            len(rejected),
            rejected[0],
        )


def collect_dwi_runs(config: Config) -> list[DwiRun]:
    """Find, read and check every selected diffusion run.

    Parameters
    ----------
    config : Config
        Run settings (BIDS folder, labels, filters, b = 0 threshold, SynthSeg/mask folders).

    Returns
    -------
    list of DwiRun
        One entry per dwi run, sorted by file name. Selected participants without dwi data
        are logged and skipped.

    Raises
    ------
    InvalidDatasetError, EmptySelectionError, MissingInputError, InputError
        As described in ``docs/usage.md`` (exit codes 16, 18, 66 and 1).
    """
    from bids import BIDSLayout
    from bids.exceptions import BIDSValidationError

    description = check_bids_root(config.bids_dir)
    derivative = is_derivative(description)
    try:
        layout = BIDSLayout(
            str(config.bids_dir),
            validate=not (config.skip_bids_validation or derivative),
            config=["bids", "derivatives"] if derivative else ["bids"],
        )
    except (BIDSValidationError, ValueError) as err:
        raise InvalidDatasetError(f"{config.bids_dir}: {err}") from err
    subjects = _select(layout.get_subjects(), config.participant_labels, "participant")
    if not subjects:
        raise InvalidDatasetError(f"{config.bids_dir}: no sub-<label> folders found.")
    query: dict[str, Any] = {"subject": subjects, "datatype": "dwi", "suffix": "dwi"}
    if config.session_labels:
        query["session"] = _select(layout.get_sessions(), config.session_labels, "session")
    query.update(config.bids_filters.get("dwi", {}))
    query["extension"] = list(_NIFTI)
    files = layout.get(return_type="object", **query)
    preprocessed = [f for f in files if f.entities.get("desc") == PREPROC_DESC]
    if preprocessed and "desc" not in query:
        files = preprocessed
    with_dwi = {f.entities["subject"] for f in files}
    for subject in sorted(set(subjects) - with_dwi):
        LOGGER.warning("sub-%s: no diffusion data match the selection; skipped.", subject)
    if not files:
        if config.bids_filters:
            raise EmptySelectionError("the --bids-filter-file query selects no dwi run.")
        raise MissingInputError(
            f"{config.bids_dir}: no dwi runs for the selected participant(s) {', '.join(subjects)}."
        )
    pipeline = _pipeline_name(description) if derivative else None
    runs = [_read_run(layout, f, config, pipeline) for f in sorted(files, key=lambda f: f.path)]
    LOGGER.info("Found %d dwi run(s) of %d participant(s).", len(runs), len(with_dwi))
    return runs


def _select(available: Iterable[str], wanted: tuple[str, ...], what: str) -> list[str]:
    available = sorted(available)
    if not wanted:
        return available
    unknown = [label for label in wanted if label not in available]
    if unknown:
        raise EmptySelectionError(
            f"{what} label(s) {', '.join(unknown)} not found; the dataset has "
            f"{', '.join(available) or 'none'}."
        )
    return list(wanted)


def _pipeline_name(description: dict[str, Any]) -> str:
    """Name of the pipeline that made a derivative dataset (``GeneratedBy``), for sidecars."""
    generated = description.get("GeneratedBy") or [{}]
    name = generated[0].get("Name") if isinstance(generated[0], dict) else None
    return str(name or "the preprocessing pipeline")


def _read_run(layout: Any, bids_file: Any, config: Config, pipeline: str | None) -> DwiRun:
    """Read and check one dwi run; ``pipeline`` names a derivative input's pipeline."""
    dwi = Path(bids_file.path)
    bval = _companion(layout, dwi, "bval")
    bvec = _companion(layout, dwi, "bvec")
    shape = check_dwi_image(dwi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SchemeWarning)
        try:
            scheme = read_scheme(bval, bvec, b0_threshold=config.b0_threshold, n_volumes=shape[3])
        except SchemeError as err:
            raise InputError(str(err)) from err
    entities = {
        key: str(bids_file.entities[name])
        for name, key in NAME_ENTITIES.items()
        if name in bids_file.entities
    }
    synthseg = find_segmentation(config.synthseg_dir, entities) if config.synthseg_dir else None
    mask, origin = None, ""
    if config.mask_dir:
        mask, origin = find_brain_mask(config.mask_dir, entities), "user-supplied"
    elif pipeline is not None:
        mask = find_pipeline_mask(layout, entities)
        origin = f"input dataset ({pipeline} desc-brain_mask)" if mask else ""
    if mask is not None:
        check_same_grid(mask, dwi)
    return DwiRun(
        dwi=dwi,
        bval=bval,
        bvec=bvec,
        entities=entities,
        metadata=dict(layout.get_metadata(str(dwi))),
        scheme=scheme,
        shape=shape,
        synthseg=synthseg,
        brain_mask=mask,
        brain_mask_origin=origin,
    )


def _companion(layout: Any, dwi: Path, extension: str) -> Path:
    try:
        found = layout.get_nearest(
            str(dwi), extension=f".{extension}", suffix="dwi", strict=False, full_search=True
        )
    except (ValueError, KeyError):
        found = None
    if not found:
        raise MissingInputError(f"{dwi}: no .{extension} file found (BIDS inheritance searched).")
    return Path(found)


def check_dwi_image(path: Path) -> tuple[int, ...]:
    """Load a diffusion image completely and return its shape.

    Raises
    ------
    InputError
        If the file is not a readable NIfTI, is truncated or corrupt, or is not 4-D.
    """
    image = read_image(path)
    if image.ndim != 4:
        raise InputError(
            f"{path}: diffusion image must be 4-D (x, y, z, volumes); got shape {image.shape}."
        )
    if image.shape[3] < 2:
        raise InputError(f"{path}: diffusion image has a single volume.")
    return tuple(int(n) for n in image.shape)


def read_image(path: Path) -> nib.Nifti1Image:
    """Load a NIfTI image and read its data once (catches truncated and corrupt files).

    Raises
    ------
    InputError
        If the header or the data cannot be read.
    """
    try:
        image = nib.load(str(path))
        np.asanyarray(image.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        raise InputError(f"{path}: unreadable or truncated NIfTI ({err}).") from err
    return image


def check_same_grid(path: Path, dwi: Path, atol: float = 1e-3) -> None:
    """Check that an image (a brain mask) is 3-D and on the voxel grid of a dwi image.

    Parameters
    ----------
    path : Path
        The image to check (already known to be readable).
    dwi : Path
        The dwi image.
    atol : float
        Tolerance on the affines' entries, mm.

    Raises
    ------
    InputError
        If the shape differs from the dwi image's first three dimensions or the affines differ.
    """
    image, reference = nib.load(str(path)), nib.load(str(dwi))
    shape, expected = tuple(image.shape), tuple(reference.shape[:3])
    if shape != expected:
        raise InputError(
            f"{path}: not on the grid of {dwi.name}: shape {shape}, the dwi grid is {expected}."
        )
    if not np.allclose(image.affine, reference.affine, atol=atol):
        raise InputError(
            f"{path}: not on the grid of {dwi.name}: its affine differs from the dwi image's "
            f"(voxel-to-world {np.round(image.affine[:3], 3).tolist()} vs "
            f"{np.round(reference.affine[:3], 3).tolist()})."
        )


def _matching(folder: Path, entities: dict[str, str], pattern: str) -> list[Path]:
    """Files under ``folder`` whose name has the run's subject (and session) and ``pattern``.

    Among several candidates, those sharing more of the run's entities come first.
    """
    found = []
    for path in sorted(folder.rglob(f"sub-{entities['sub']}_*")):
        if not fnmatch.fnmatch(path.name, f"*{pattern}") or not path.name.endswith(_NIFTI):
            continue
        names = parse_entities(path.name)
        if "ses" in entities and names.get("ses", entities["ses"]) != entities["ses"]:
            continue
        clash = [k for k in ("acq", "dir", "run") if k in names and names[k] != entities.get(k)]
        if clash:
            continue
        found.append(path)
    shared = {
        path: sum(parse_entities(path.name).get(k) == v for k, v in entities.items())
        for path in found
    }
    return sorted(found, key=lambda path: -shared[path])


def find_segmentation(folder: Path, entities: dict[str, str]) -> SegmentationFiles:
    """Find SynthSeg outputs for a run in ``folder`` and check that they are readable.

    Recognised names (any depth, starting with ``sub-<label>``): BIDS derivatives
    ``*_dseg.nii[.gz]`` and ``*_label-{WM,GM,CSF}_probseg.nii[.gz]``; plain SynthSeg outputs
    ``*synthseg*.nii[.gz]`` (labels) and ``*post*.nii[.gz]`` (4-D posteriors).

    Raises
    ------
    MissingInputError
        If nothing is found for the run.
    InputError
        If a file found cannot be read.
    """
    probseg = {}
    for tissue in TISSUES:
        candidates = _matching(folder, entities, f"label-{tissue}_probseg.nii*")
        if candidates:
            probseg[tissue] = candidates[0]
    posteriors = [p for p in _matching(folder, entities, "post*.nii*") if "label-" not in p.name]
    labels = _matching(folder, entities, "_dseg.nii*") or [
        p for p in _matching(folder, entities, "synthseg*.nii*") if "post" not in p.name
    ]
    files = SegmentationFiles(
        labels=labels[0] if labels else None,
        posteriors=posteriors[0] if posteriors else None,
        probseg=probseg,
    )
    if files.labels is None and files.posteriors is None and not probseg:
        raise MissingInputError(
            f"{folder}: no SynthSeg output for {'_'.join(f'{k}-{v}' for k, v in entities.items())}"
            " (expected sub-<label>..._dseg.nii.gz, ..._label-WM_probseg.nii.gz or "
            "..._synthseg.nii.gz)."
        )
    for path in [files.labels, *probseg.values()]:
        if path is not None and read_image(path).ndim != 3:
            raise InputError(f"{path}: SynthSeg labels and probability maps must be 3-D images.")
    if files.posteriors is not None:
        shape = read_image(files.posteriors).shape
        if len(shape) != 4 or shape[3] != len(SYNTHSEG_POSTERIOR_LABELS):
            raise InputError(
                f"{files.posteriors}: SynthSeg posteriors must be 4-D with "
                f"{len(SYNTHSEG_POSTERIOR_LABELS)} frames (SynthSeg 2.0, no parcellation); "
                f"got shape {shape}."
            )
    return files


def find_brain_mask(folder: Path, entities: dict[str, str]) -> Path:
    """Find a run's brain mask (``sub-<label>..._desc-brain_mask.nii[.gz]``) in ``folder``.

    Raises
    ------
    MissingInputError
        If none is found.
    InputError
        If it cannot be read.
    """
    candidates = _matching(folder, entities, "desc-brain_mask.nii*")
    if not candidates:
        raise MissingInputError(
            f"{folder}: no brain mask for sub-{entities['sub']} (expected "
            "sub-<label>[_ses-<label>]_desc-brain_mask.nii.gz)."
        )
    read_image(candidates[0])
    return candidates[0]


def find_pipeline_mask(layout: Any, entities: dict[str, str]) -> Path | None:
    """Find the brain mask a preprocessing pipeline wrote for a dwi run (None if there is none).

    It is the ``desc-brain_mask`` in the run's ``dwi`` folder with the same entities (``space-``
    included; an entity the run lacks must be absent too), as QSIPrep writes
    ``sub-01_space-T1w_desc-brain_mask.nii.gz`` beside ``sub-01_space-T1w_desc-preproc_dwi``.

    Raises
    ------
    InputError
        If the mask cannot be read.
    """
    from bids.layout import Query

    query = {
        name: entities.get(key, Query.NONE) for name, key in NAME_ENTITIES.items() if key != "sub"
    }
    found = layout.get(
        subject=entities["sub"],
        datatype="dwi",
        desc="brain",
        suffix="mask",
        extension=list(_NIFTI),
        return_type="filename",
        **query,
    )
    if not found:
        return None
    path = Path(sorted(found)[0])
    read_image(path)
    return path
