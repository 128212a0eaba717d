"""Derivative names, sidecars and atomic writes.

Every output path of noddi-bids is built by :func:`derivative_path`, with entities in one fixed
order (:data:`ENTITY_ORDER`)::

    sub-<label>[_ses-<label>][_acq-<label>][_rec-<label>][_dir-<label>][_run-<index>]
        [_model-noddi][_param-<od|icvf|isovf|direction>][_label-<WM|GM|CSF>][_desc-<label>]
        _<suffix>.<extension>

in ``sub-<label>[/ses-<label>]/dwi/``. Maps stay on the grid of the input dwi run, so no
``space-`` entity is written (BIDS: the native space of the source data).

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
ENTITY_ORDER = ("sub", "ses", "acq", "rec", "dir", "run", "model", "param", "label", "desc")
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
BIDSIGNORE = ("*.html\n", "figures/\n", "logs/\n", "group_*.tsv\n", "dicom/\n")


def derivative_name(source: Mapping[str, str], suffix: str, extension: str, **entities: str) -> str:
    """File name of a derivative of a run.

    Parameters
    ----------
    source : mapping
        The run's entities (``sub``, ``ses``, ``acq``, ``rec``, ``dir``, ``run``).
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


def write_dataset_description(output_dir: Path, bids_dir: Path | None = None) -> None:
    """Write ``dataset_description.json`` (DatasetType derivative) and ``.bidsignore``.

    Parameters
    ----------
    output_dir : Path
        Derivatives folder (created if needed).
    bids_dir : Path, optional
        Raw dataset, recorded in ``SourceDatasets``.
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
        description["SourceDatasets"] = [{"URL": Path(bids_dir).as_uri()}]
    write_json(description, Path(output_dir) / "dataset_description.json")
    with atomic_target(Path(output_dir) / ".bidsignore") as temporary:
        temporary.write_text("".join(BIDSIGNORE), encoding="utf-8")
