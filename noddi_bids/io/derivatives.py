"""Derivative names, sidecars and atomic writes.

Every output path of noddi-bids is built by :func:`derivative_path`, with entities in one fixed
order (:data:`ENTITY_ORDER`)::

    sub-<label>[_ses-<label>][_acq-<label>][_rec-<label>][_dir-<label>][_run-<index>]
        [_space-<label>][_model-noddi][_param-<od|icvf|isovf|direction>][_label-<WM|GM|CSF>]
        [_desc-<label>]_<suffix>.<extension>

in ``sub-<label>[/ses-<label>]/dwi/``. Maps stay on the grid of the input dwi run: its ``space-``
is kept (a preprocessed input such as QSIPrep's ``space-T1w``), and a raw input has none (BIDS:
the native space of the source data).

Every file is written atomically (:func:`noddi_bids.atomic.atomic_target`), so a crash never
leaves a half-written derivative.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from noddi_bids import __version__
from noddi_bids.atomic import atomic_target

#: Order of entities in derivative names (BIDS order, then the diffusion-derivatives ones).
ENTITY_ORDER = (
    "sub", "ses", "acq", "rec", "dir", "run", "space", "model", "param", "label", "desc"
)  # fmt: skip
#: NODDI parameters: name in noddi-bids -> ``param-`` label of the diffusion-derivatives proposal.
PARAM_LABELS = {"odi": "od", "ndi": "icvf", "fwf": "isovf", "direction": "direction"}
#: Estimator descriptions: ``desc-`` label -> plain words.
ESTIMATOR_DESCRIPTIONS = {
    "nnmle": "neural network trained on maximum-likelihood labels (NN_MLE)",
    "nngt": "neural network trained on ground-truth labels (NN_GT)",
    "nnhybrid": "neural network trained on a mix of MLE and ground-truth labels",
    "mle": "conventional Rician maximum-likelihood fit",
}
#: Network training labels -> ``desc-`` label.
NN_DESC = {"mle": "nnmle", "gt": "nngt", "hybrid": "nnhybrid"}
#: Name of the input dataset in BIDS URIs (``bids:<name>:<path>``) and ``DatasetLinks``.
INPUT_DATASET = {"raw": "raw", "derivative": "preprocessed"}
#: ``.bidsignore`` of the derivatives: what the BIDS schema does not (yet) describe, as QSIRecon
#: does. Folders are named without a trailing slash (the schema validator tests folder paths
#: without one).
BIDSIGNORE = (
    "# diffusion-derivatives proposal (BEP016): model-/param- maps, reference images\n"
    "*_dwimap.nii.gz\n"
    "*_dwimap.json\n"
    "*_dwiref.nii.gz\n"
    "*_dwiref.json\n"
    "# per-run tables (desc-tissue_stats) and group tables\n"
    "*_stats.tsv\n"
    "*_stats.json\n"
    "group_*\n"
    "# reports, their figures, crash logs and the --dicom series\n"
    "*.html\n"
    "figures\n"
    "logs\n"
    "dicom\n"
)


def derivative_name(source: Mapping[str, str], suffix: str, extension: str, **entities: str) -> str:
    """File name of a derivative of a run.

    Parameters
    ----------
    source : mapping
        The run's entities (``sub``, ``ses``, ``acq``, ``rec``, ``dir``, ``run``, ``space``).
    suffix : str
        BIDS suffix, e.g. ``dwimap``, ``mask``, ``stats``.
    extension : str
        With the leading dot, e.g. ``.nii.gz``.
    **entities : str
        Added entities (``model``, ``param``, ``label``, ``desc``).

    Returns
    -------
    str

    Examples
    --------
    >>> derivative_name({"sub": "01", "run": "1"}, "dwimap", ".nii.gz",
    ...                 desc="nnmle", model="noddi", param="od")
    'sub-01_run-1_model-noddi_param-od_desc-nnmle_dwimap.nii.gz'
    """
    merged = {**source, **entities}
    unknown = sorted(set(merged) - set(ENTITY_ORDER))
    if unknown:
        raise ValueError(f"unknown entities {unknown} for a derivative name")
    parts = [f"{key}-{merged[key]}" for key in ENTITY_ORDER if merged.get(key)]
    return "_".join([*parts, suffix]) + extension


def derivative_path(
    output_dir: Path, source: Mapping[str, str], suffix: str, extension: str, **entities: str
) -> Path:
    """Full path of a derivative: ``output_dir/sub-<label>[/ses-<label>]/dwi/<name>``."""
    folder = Path(output_dir) / f"sub-{source['sub']}"
    if source.get("ses"):
        folder = folder / f"ses-{source['ses']}"
    return folder / "dwi" / derivative_name(source, suffix, extension, **entities)


def save_nifti(image: nib.Nifti1Image, path: Path) -> Path:
    """Write a NIfTI image atomically and return ``path``."""
    with atomic_target(path) as temporary:
        nib.save(image, str(temporary))
    return Path(path)


def copy_file(source: Path, path: Path) -> Path:
    """Copy a file atomically and return ``path``."""
    with atomic_target(path) as temporary:
        shutil.copyfile(source, temporary)
    return Path(path)


def write_json(data: Mapping[str, Any], path: Path) -> Path:
    """Write JSON (indented, sorted keys as given) atomically and return ``path``."""
    with atomic_target(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return Path(path)


def write_tsv(table: pd.DataFrame, path: Path) -> Path:
    """Write a table as TSV (``n/a`` for missing values) atomically and return ``path``."""
    with atomic_target(path) as temporary:
        table.to_csv(temporary, sep="\t", index=False, na_rep="n/a")
    return Path(path)


def input_dataset_name(bids_dir: Path) -> str:
    """Name of the input dataset in BIDS URIs: ``preprocessed`` for a derivative, else ``raw``.

    Parameters
    ----------
    bids_dir : Path
        The input dataset (its ``dataset_description.json`` has been checked already).
    """
    description = Path(bids_dir) / "dataset_description.json"
    try:
        kind = json.loads(description.read_text(encoding="utf-8")).get("DatasetType", "raw")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        kind = "raw"
    return INPUT_DATASET.get(kind, "raw")


def source_uri(bids_dir: Path, path: Path) -> str:
    """BIDS URI of an input file, e.g. ``bids:raw:sub-01/dwi/sub-01_dwi.nii.gz``.

    The dataset name is resolved by ``DatasetLinks`` of ``dataset_description.json``
    (:func:`write_dataset_description`). A file outside the input dataset (a ``--mask-dir``
    mask) gets its absolute ``file://`` URI.
    """
    path = Path(path).absolute()
    if not path.is_relative_to(Path(bids_dir).absolute()):
        return path.as_uri()
    relative = path.relative_to(Path(bids_dir).absolute()).as_posix()
    return f"bids:{input_dataset_name(bids_dir)}:{relative}"


def dataset_location(output_dir: Path, bids_dir: Path) -> str:
    """Location of the input dataset for ``DatasetLinks``.

    A path relative to the derivatives folder when the derivatives lie inside the input dataset
    (``<bids_dir>/derivatives/noddi``: ``../..``, valid wherever the dataset is moved), the
    absolute ``file://`` URI otherwise.
    """
    output_dir, bids_dir = Path(output_dir).absolute(), Path(bids_dir).absolute()
    if output_dir.is_relative_to(bids_dir):
        return Path(os.path.relpath(bids_dir, output_dir)).as_posix()
    return bids_dir.as_uri()


def write_dataset_description(output_dir: Path, bids_dir: Path | None = None) -> None:
    """Write ``dataset_description.json`` (DatasetType derivative) and ``.bidsignore``.

    Parameters
    ----------
    output_dir : Path
        Derivatives folder (created if needed).
    bids_dir : Path, optional
        Input dataset, recorded in ``SourceDatasets`` and in ``DatasetLinks`` under the name the
        sidecars' BIDS URIs use (:func:`source_uri`).
    """
    generated = {
        "Name": "noddi-bids",
        "Version": __version__,
        "CodeURL": "https://github.com/noddi-bids/noddi-bids",
    }
    container = os.environ.get("NODDI_BIDS_CONTAINER")
    if container:
        generated["Container"] = {"Type": container, "Tag": __version__}
    description: dict[str, Any] = {
        "Name": "noddi-bids: NODDI maps",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
    }
    if bids_dir is not None:
        name = input_dataset_name(bids_dir)
        description["SourceDatasets"] = [{"URL": f"bids:{name}:"}]
        description["DatasetLinks"] = {name: dataset_location(output_dir, bids_dir)}
    write_json(description, Path(output_dir) / "dataset_description.json")
    with atomic_target(Path(output_dir) / ".bidsignore") as temporary:
        temporary.write_text(BIDSIGNORE, encoding="utf-8")
