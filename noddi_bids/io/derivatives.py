"""Derivative names, sidecars and atomic writes.

Every output path of noddi-bids is built by :func:`derivative_path`, with entities in one fixed
order (:data:`ENTITY_ORDER`)::

    sub-<label>[_ses-<label>][_acq-<label>][_rec-<label>][_dir-<label>][_run-<index>]
        [_space-<label>][_model-<noddi|gmnoddi>][_param-<label>][_stat-sd][_label-<WM|GM|CSF>]
        [_desc-<label>]_<suffix>.<extension>

in ``sub-<label>[/ses-<label>]/dwi/``. Maps stay on the grid of the input dwi run: its ``space-``
is kept (a preprocessed input such as QSIPrep's ``space-T1w``), and a raw input has none (BIDS:
the native space of the source data).

Every sidecar's content is built here too, from the values the workflow nodes pass along the
graph: the maps' (:func:`map_sidecar`, from :func:`estimate_sidecar` with :func:`network_details`
or :func:`fit_details`), the reference image's and brain mask's (:func:`reference_sidecar`,
:func:`brain_mask_sidecar`), the tissue masks' and table's (:func:`tissue_mask_sidecar`,
:func:`tissue_table_sidecar`, from :func:`synthseg_details` or :func:`builtin_details`); every
image sidecar ends with :func:`image_sidecar`'s provenance.

Every file is written atomically (:func:`noddi_bids.atomic.atomic_target`), so a crash never
leaves a half-written derivative.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import pandas as pd

from noddi_bids import __version__
from noddi_bids.atomic import atomic_target
from noddi_bids.model.scheme import Scheme
from noddi_bids.tissue import synthseg
from noddi_bids.tissue.stats import TABLE_COLUMNS
from noddi_bids.vocabulary import FLAGS, MODELS, NODDI, STATISTICS, TISSUE_NAMES, estimator
from noddi_bids.vocabulary import parameter as find_parameter

#: Order of entities in derivative names (BIDS order, then the diffusion-derivatives ones).
ENTITY_ORDER = (
    "sub", "ses", "acq", "rec", "dir", "run", "space", "model", "param", "stat", "label", "desc"
)  # fmt: skip
#: Entities a derivative adds to those of its run.
DERIVATIVE_ENTITIES = ("model", "param", "stat", "label", "desc")
#: How the brain mask is made when none is given (``BrainMask`` of its sidecar).
AUTOMATIC_BRAIN_MASK = "dipy median_otsu"
#: Name of the input dataset in BIDS URIs (``bids:<name>:<path>``) and ``DatasetLinks``.
INPUT_DATASET = {"raw": "raw", "derivative": "preprocessed"}
#: ``.bidsignore`` of the derivatives: what the BIDS schema does not (yet) describe, as QSIRecon
#: does. Folders are named without a trailing slash (the schema validator tests folder paths
#: without one).
BIDSIGNORE = (
    "# diffusion-derivatives proposal (BEP016): model-/param- maps, reference images, and the\n"
    "# voxel flags of an estimate (masks with model-/param- entities)\n"
    "*_dwimap.nii.gz\n"
    "*_dwimap.json\n"
    "*_model-*\n"
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


def estimate_sidecar(
    label: str,
    d_par: float,
    d_iso: float,
    scheme: Scheme,
    details: Mapping[str, Any],
    gradient_check: Mapping[str, Any] | None = None,
    model: str = NODDI,
) -> dict[str, Any]:
    """Sidecar content shared by the maps of one estimator.

    Parameters
    ----------
    label : str
        ``desc-`` label of the estimator (:data:`noddi_bids.vocabulary.ESTIMATORS`).
    d_par, d_iso : float
        Fixed intra-neurite parallel and free-water diffusivities of the estimate, mm^2/s.
    scheme : Scheme
        The run's acquisition scheme.
    details : mapping
        What only this estimator knows (:func:`network_details`, :func:`fit_details`).
    gradient_check : mapping, optional
        Verdict of the gradient-table check of the run
        (:meth:`noddi_bids.qc.gradients.GradientCheck.to_dict` and ``Applied``).
    model : str
        ``model-`` label of the NODDI variant (:data:`noddi_bids.vocabulary.MODELS`).
    """
    checked = {"GradientCheck": dict(gradient_check)} if gradient_check else {}
    return {
        "Model": MODELS[model].display,
        "Estimator": label,
        "EstimatorDescription": estimator(label).description,
        "Dpar": d_par,
        "Diso": d_iso,
        "DiffusivityUnits": "mm^2/s",
        "Scheme": {
            "Summary": scheme.summary(),
            "Hash": scheme.hash,
            "Shells": [float(b) for b in scheme.shells],
            "ShellCounts": [int(n) for n in scheme.shell_counts],
            "B0Volumes": scheme.n_b0,
            "B0Threshold": scheme.b0_threshold,
            "BValueUnits": "s/mm^2",
        },
        **checked,
        **details,
    }


def network_details(
    *,
    model_file: str,
    sha256: str,
    labels: str,
    inputs: str,
    fit_orders: Sequence[int] | None,
    version: str,
    snr: float | Sequence[float],
    direction: bool,
) -> dict[str, Any]:
    """Sidecar details of a network's estimate.

    Parameters
    ----------
    model_file : str
        Name of the ONNX file.
    sha256 : str
        Its SHA-256 checksum.
    labels : str
        Training label type (``mle``, ``gt``, ``hybrid``).
    inputs : str
        What the network applies to, in words.
    fit_orders : sequence of int or None
        Spherical-harmonic orders of the shells' fits (rotation-invariant networks).
    version : str
        noddi-bids version that trained it.
    snr : float or sequence of float
        Training SNR (constant or range).
    direction : bool
        Whether the fibre direction map was made (from the shells' quadratic fits).
    """
    details: dict[str, Any] = {
        "ModelFile": model_file,
        "ModelSHA256": sha256,
        "ModelLabels": labels,
        "ModelInputs": inputs,
    }
    if fit_orders is not None:
        details["FitOrders"] = [int(order) for order in fit_orders]
    details.update(ModelVersion=version, ModelTrainingSNR=snr, Software="ONNX Runtime")
    if direction:
        details["DirectionMethod"] = (
            "eigenvector of least signal of the shells' order-2 spherical-harmonic fits"
        )
    return details


def fit_details(converged_fraction: float) -> dict[str, Any]:
    """Sidecar details of the maximum-likelihood fit's estimate.

    Parameters
    ----------
    converged_fraction : float
        Fraction of the voxels whose fit converged.
    """
    return {
        "NoiseModel": "Rician; sigma per voxel from the b = 0 volumes",
        "ConvergedFraction": converged_fraction,
    }


def excluded_voxels(n_nonfinite: int, n_nonpositive_b0: int) -> dict[str, int]:
    """``ExcludedVoxels`` of the brain mask and map sidecars (brain voxels left out)."""
    return {"NonFinite": int(n_nonfinite), "NonPositiveB0": int(n_nonpositive_b0)}


def map_sidecar(
    name: str,
    estimate: Mapping[str, Any],
    excluded: Mapping[str, int],
    details: Mapping[str, Any] | None = None,
    stat: str | None = None,
) -> dict[str, Any]:
    """Sidecar of one map: what it holds in words and units, the estimate, excluded voxels.

    Parameters
    ----------
    name : str
        Name of the map (:data:`noddi_bids.vocabulary.ALL_MAPS`: ``odi``, ..., ``nrmse``).
    estimate : mapping
        :func:`estimate_sidecar` of the estimator.
    excluded : mapping
        :func:`excluded_voxels` of the run.
    details : mapping, optional
        How the map was made, beyond the estimate (:func:`quality_details`,
        :func:`uncertainty_details`).
    stat : str, optional
        ``stat-`` label of a statistic of the estimate (:data:`~noddi_bids.vocabulary.STATISTICS`).
    """
    description = find_parameter(name).description
    if stat is not None:
        description = f"{STATISTICS[stat].capitalize()} of the estimate of: {description}"
    return {
        "Description": description,
        "Units": find_parameter(name).units,
        **estimate,
        **(details or {}),
        "ExcludedVoxels": dict(excluded),
    }


def quality_details(
    predicted_s0: str, noise_block: int, out_of_model: tuple[float, int] | None
) -> dict[str, Any]:
    """How the goodness-of-fit maps and flags of an estimate were made (:mod:`noddi_bids.qc`).

    Parameters
    ----------
    predicted_s0 : str
        Which S0 the prediction used, in words.
    noise_block : int
        Side of the block of the local noise level, voxels.
    out_of_model : tuple or None
        The out-of-model ratio and the number of voxels flagged; None when there is no noise
        level (fewer than two b = 0 volumes).
    """
    details: dict[str, Any] = {
        "PredictedSignal": "NODDI forward model of the estimate (ODI, NDI, FWF, fibre "
        "direction, Dpar, Diso)",
        "PredictedS0": predicted_s0,
        "Volumes": "all, b = 0 included",
        "RMSE": "sqrt(mean over volumes of (measured - predicted)^2), units of the dwi image",
        "NRMSE": "RMSE / mean b = 0 signal of the voxel",
        "NoiseLevel": f"median over the brain voxels of the {noise_block}x{noise_block}x"
        f"{noise_block} block of the SD (ddof 1) of the b = 0 signals / mean b = 0, divided by "
        "median(chi_k)/sqrt(k), k = b = 0 volumes - 1",
    }
    if out_of_model is not None:
        details["OutOfModelRatio"] = float(out_of_model[0])
        details["OutOfModelVoxels"] = int(out_of_model[1])
    return {"FitQuality": details}


def uncertainty_details(n_singular: int) -> dict[str, Any]:
    """How the standard deviations of the fit were computed (:mod:`noddi_bids.fit.uncertainty`).

    Parameters
    ----------
    n_singular : int
        Fitted voxels without a standard deviation of ODI, NDI or FWF.
    """
    return {
        "Uncertainty": {
            "Method": "expected Fisher information of the Rician likelihood at the estimate "
            "(exact model Jacobian; per-measurement information h(S/sigma)/sigma^2, h tabulated "
            "by quadrature), inverted in (ODI, NDI, FWF, two orientation angles, S0): the delta "
            "method from the optimiser's sin^2 parameters",
            "Statistic": "standard deviation (square root of the diagonal of the inverse "
            "information)",
            "NoiseSigma": "per voxel from the b = 0 volumes, as the fit",
            "SingularVoxels": int(n_singular),
        }
    }


def network_uncertainty_details() -> dict[str, Any]:
    """How a network's standard deviations were computed (its spread head, docs/models.md)."""
    return {
        "Uncertainty": {
            "Method": "the network's spread head: a second network on the same inputs, trained "
            "by the Gaussian likelihood of the estimates' errors against the ground truth of the "
            "synthetic training data",
            "Statistic": "standard deviation of the estimate's error against the truth (its "
            "variance and bias together, for data like this voxel's)",
        }
    }


def flag_sidecar(
    flag: str, estimate: Mapping[str, Any], details: Mapping[str, Any]
) -> dict[str, Any]:
    """Sidecar of a voxel flag of an estimate (``model-noddi_param-<flag>_desc-<est>_mask``).

    Parameters
    ----------
    flag : str
        Name of the flag (:data:`noddi_bids.vocabulary.FLAGS`).
    estimate : mapping
        :func:`estimate_sidecar` of the estimator.
    details : mapping
        How the flag was set (:func:`quality_details`).
    """
    return {"Type": "ROI", "Description": FLAGS[flag].description, **estimate, **details}


def reference_sidecar() -> dict[str, Any]:
    """Sidecar of the mean b = 0 image (``desc-meanb0_dwiref``)."""
    return {"Description": "Mean of the b = 0 volumes"}


def brain_mask_sidecar(
    origin: str | None, mask_voxels: int, excluded: Mapping[str, int]
) -> dict[str, Any]:
    """Sidecar of the brain mask (``desc-brain_mask``).

    Parameters
    ----------
    origin : str or None
        Where a given mask comes from, in words; None: made by :data:`AUTOMATIC_BRAIN_MASK`.
    mask_voxels : int
        Voxels of the mask (those estimated).
    excluded : mapping
        :func:`excluded_voxels`: brain voxels left out of the mask.
    """
    return {
        "Type": "Brain",
        "Description": "Brain mask of the voxels estimated",
        "BrainMask": origin or AUTOMATIC_BRAIN_MASK,
        "MaskVoxels": int(mask_voxels),
        "ExcludedVoxels": dict(excluded),
    }


def synthseg_details(segmentation_files: Sequence[str]) -> dict[str, Any]:
    """How tissue masks were made from SynthSeg outputs (:mod:`noddi_bids.tissue.synthseg`).

    Parameters
    ----------
    segmentation_files : sequence of str
        The SynthSeg outputs used (absolute paths).
    """
    return {
        "Method": "SynthSeg",
        "SegmentationFiles": list(segmentation_files),
        "Thresholds": dict(synthseg.THRESHOLDS),
        "FreeSurferLabels": {t: list(v) for t, v in synthseg.TISSUE_LABELS.items()},
    }


def builtin_details() -> dict[str, Any]:
    """How tissue masks were made by the DTI classification (:mod:`noddi_bids.tissue.builtin`)."""
    from noddi_bids.tissue import builtin  # imports DIPY: only where the classification ran

    md = "mm^2/s"
    return {
        "Method": "built-in DTI classification (approximate)",
        "Rules": {
            "CSF": f"MD >= {builtin.CSF_MIN_MD:g} {md}",
            "WM": f"FA >= {builtin.WM_MIN_FA:g} and MD < {builtin.TISSUE_MAX_MD:g} {md}",
            "GM": f"FA < {builtin.GM_MAX_FA:g} and MD < {builtin.TISSUE_MAX_MD:g} {md}",
        },
        "DTIMaxBValue": builtin.DTI_MAX_B,
    }


def tissue_mask_sidecar(tissue: str, details: Mapping[str, Any]) -> dict[str, Any]:
    """Sidecar of a tissue mask (``label-<tissue>_mask``), ``details`` saying how it was made."""
    return {
        "Type": "ROI",
        "Description": f"Mask of the {TISSUE_NAMES[tissue]} ({tissue}) on the dwi grid",
        **details,
    }


def tissue_table_sidecar(details: Mapping[str, Any]) -> dict[str, Any]:
    """Sidecar of the tissue table (``desc-tissue_stats.tsv``): its columns and the masks."""
    return {**TABLE_COLUMNS, "TissueMasks": dict(details), "SoftwareVersion": __version__}


def image_sidecar(sidecar: Mapping[str, Any], sources: Sequence[str]) -> dict[str, Any]:
    """Return an image's sidecar with its provenance last.

    ``SpatialReference`` is the dwi run (the first source: every image is on its grid);
    ``Sources`` the files it derives from; ``SoftwareVersion`` this noddi-bids.
    """
    return {
        **sidecar,
        "SpatialReference": sources[0],
        "Sources": list(sources),
        "SoftwareVersion": __version__,
    }


def sidecar_path(image: Path) -> Path:
    """JSON sidecar of a NIfTI image: the same name with ``.json`` for ``.nii.gz``."""
    return image.with_name(image.name.removesuffix(".nii.gz") + ".json")


def write_image(image: Path, target: Path, sidecar: Mapping[str, Any]) -> list[Path]:
    """Copy an image to its derivative path and write its JSON sidecar beside it.

    Parameters
    ----------
    image : Path
        The image to copy (NIfTI, ``.nii.gz``).
    target : Path
        Its derivative path (:func:`derivative_path`, :func:`map_path`).
    sidecar : mapping
        The complete sidecar (see :func:`image_sidecar`).

    Returns
    -------
    list of Path
        The image and its sidecar.
    """
    copy_file(Path(image), target)
    return [target, write_json(sidecar, sidecar_path(target))]


def map_path(
    output_dir: Path,
    source: Mapping[str, str],
    parameter: str,
    label: str,
    model: str = NODDI,
    stat: str | None = None,
) -> Path:
    """Path of an estimator's map: ``..._model-noddi_param-<p>_desc-<estimator>_dwimap.nii.gz``.

    Parameters
    ----------
    output_dir, source
        As for :func:`derivative_path`.
    parameter : str
        Name of the map (:data:`noddi_bids.vocabulary.ALL_MAPS`), written as its ``param-``
        label.
    label : str
        ``desc-`` label of the estimator (:data:`noddi_bids.vocabulary.ESTIMATORS`).
    model : str
        ``model-`` label of the NODDI variant (``noddi``; ``gmnoddi`` for ``--gm-noddi``).
    stat : str, optional
        ``stat-`` label of a statistic of the estimate (``sd``).

    Raises
    ------
    ValueError
        If the estimator or the statistic is unknown.

    Examples
    --------
    >>> map_path(Path("out"), {"sub": "01"}, "ndi", "nnhybrid").name
    'sub-01_model-noddi_param-icvf_desc-nnhybrid_dwimap.nii.gz'
    >>> map_path(Path("out"), {"sub": "01"}, "ndi_modulated", "mle", "gmnoddi").name
    'sub-01_model-gmnoddi_param-icvfmodulated_desc-mle_dwimap.nii.gz'
    >>> map_path(Path("out"), {"sub": "01"}, "odi", "mle", stat="sd").name
    'sub-01_model-noddi_param-od_stat-sd_desc-mle_dwimap.nii.gz'
    """
    entities = {
        "model": MODELS[model].label,
        "param": find_parameter(parameter).label,
        "desc": estimator(label).label,
    }
    if stat is not None:
        if stat not in STATISTICS:
            raise ValueError(f"Unknown statistic {stat!r}; expected one of {list(STATISTICS)}.")
        entities["stat"] = stat
    return derivative_path(output_dir, source, "dwimap", ".nii.gz", **entities)


def flag_path(
    output_dir: Path, source: Mapping[str, str], flag: str, label: str, model: str = NODDI
) -> Path:
    """Path of a voxel flag of an estimate: ``..._model-noddi_param-<flag>_desc-<est>_mask``.

    Examples
    --------
    >>> flag_path(Path("out"), {"sub": "01"}, "outofmodel", "mle").name
    'sub-01_model-noddi_param-outofmodel_desc-mle_mask.nii.gz'
    """
    desc, param = estimator(label).label, FLAGS[flag].label
    return derivative_path(
        output_dir, source, "mask", ".nii.gz", model=MODELS[model].label, param=param, desc=desc
    )


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
