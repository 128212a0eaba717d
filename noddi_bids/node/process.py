"""One complete diffusion series -> NODDI maps as DICOM series of the same study.

The steps are the BIDS App's, through the same functions: dcm2niix
(:mod:`noddi_bids.node.convert`), the scheme checks (:func:`~noddi_bids.model.scheme.read_scheme`),
the mean b = 0, brain mask and normalisation (:func:`~noddi_bids.model.reference.normalise_dwi`),
the network for the series' shells (:func:`~noddi_bids.nn.store.resolve_model`,
:class:`~noddi_bids.nn.infer.OnnxEstimator`), the fibre direction
(:func:`~noddi_bids.nn.features.fibre_direction`) and the DICOM writers of ``--dicom``
(:mod:`noddi_bids.io.dicom`). Each step is timed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from noddi_bids.io.derivatives import (
    derivative_path,
    save_nifti,
    write_dataset_description,
    write_json,
)
from noddi_bids.io.dicom import (
    patient_attributes_from_dicom,
    write_direction_series,
    write_parametric_map_series,
)
from noddi_bids.model.noddi import D_ISO
from noddi_bids.model.reference import normalise_dwi
from noddi_bids.model.scheme import Scheme, SchemeError, read_scheme
from noddi_bids.nn.features import FeatureError, fibre_direction
from noddi_bids.nn.infer import OnnxEstimator, SchemeMismatchError
from noddi_bids.nn.metadata import ModelError
from noddi_bids.nn.store import resolve_model
from noddi_bids.node.config import NodeConfig
from noddi_bids.node.convert import convert_series
from noddi_bids.vocabulary import ESTIMATORS, NETWORK_ESTIMATORS, PARAMETERS, parameter

LOGGER = logging.getLogger(__name__)

#: Scalar maps written, in SeriesNumber order.
MAPS = PARAMETERS
#: Series numbers of the maps: source SeriesNumber x this + 1, 2, 3 (4: direction), when that
#: stays below :data:`MAX_SERIES_NUMBER`; else FALLBACK_SERIES_NUMBER + 0..3.
SERIES_NUMBER_FACTOR = 100
MAX_SERIES_NUMBER = 2**31 - 1
FALLBACK_SERIES_NUMBER = 1001


class ProcessingError(ValueError):
    """A series that cannot give maps (the message says why, without patient data)."""


@dataclass
class SeriesMaps:
    """What processing one series produced.

    Attributes
    ----------
    out_dirs : list of Path
        One folder of DICOM files per map series.
    timings : dict
        Seconds per step.
    voxels : int
        Brain-mask voxels estimated.
    scheme : str
        Summary of the series' scheme.
    model : str
        File name of the network used.
    """

    out_dirs: list[Path]
    timings: dict[str, float] = field(default_factory=dict)
    voxels: int = 0
    scheme: str = ""
    model: str = ""


class Estimators:
    """Networks for the series' shells, loaded once and kept (thread-safe).

    Parameters
    ----------
    config : NodeConfig
        ``model``, ``train_missing``, ``d_par`` and ``threads``.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._loaded: dict[Path, OnnxEstimator] = {}
        self._lock = threading.Lock()

    def for_scheme(self, scheme: Scheme) -> OnnxEstimator:
        """Return the network for a scheme (found, or trained once when allowed).

        Raises
        ------
        ProcessingError
            No network applies and none may be trained, or the configured one does not apply.
        """
        config = self.config
        labels = "gt" if config.model in ("nn-gt", "nn-gt-raw") else "mle"
        threads = config.threads or None
        try:
            path = Path(
                resolve_model(
                    config.model,
                    scheme,
                    config.d_par,
                    D_ISO,
                    labels,
                    train=config.train_missing,
                    n_threads=threads,
                    progress=False,
                )
            )
            with self._lock:
                if path not in self._loaded:
                    self._loaded[path] = OnnxEstimator(path, n_threads=threads)
                estimator = self._loaded[path]
            estimator.check_scheme(scheme)
        except (ModelError, SchemeMismatchError, FileNotFoundError) as err:
            raise ProcessingError(f"no network: {err}") from err
        return estimator


def process_series(
    folder: Path,
    work_dir: Path,
    out_dir: Path,
    config: NodeConfig,
    estimators: Estimators,
) -> SeriesMaps:
    """Compute the NODDI maps of one received series and write them as DICOM series.

    Parameters
    ----------
    folder : Path
        The series' instances.
    work_dir : Path
        Empty scratch folder (conversion outputs).
    out_dir : Path
        Folder receiving one sub-folder per map series (``odi``, ``ndi``, ``fwf``,
        ``direction``).
    config : NodeConfig
        ``b0_threshold`` and ``archive_dir``, and the network settings of ``estimators``.
    estimators : Estimators
        Network cache.

    Returns
    -------
    SeriesMaps

    Raises
    ------
    ProcessingError
        The series is not usable (conversion, scheme, network); nothing is written to out_dir.
    """
    timings: dict[str, float] = {}
    files = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
    if not files:
        raise ProcessingError("no instances")
    with _timed(timings, "convert"):
        source = pydicom.dcmread(files[0], stop_before_pixels=True)
        try:
            converted = convert_series(folder, work_dir)
        except ValueError as err:
            raise ProcessingError(str(err)) from err
    with _timed(timings, "load"):
        image = nib.load(converted.image)
        data = image.get_fdata(dtype=np.float32)
        if data.ndim != 4:
            raise ProcessingError(f"dcm2niix wrote a {data.ndim}-D image, not a diffusion series")
        try:
            scheme = read_scheme(
                converted.bval,
                converted.bvec,
                b0_threshold=config.b0_threshold,
                n_volumes=data.shape[3],
            )
        except SchemeError as err:
            raise ProcessingError(f"unusable b-values/b-vectors: {_short(err, work_dir)}") from err
    with _timed(timings, "mask"):
        reference = normalise_dwi(data, scheme.b0_mask)
        if not reference.mask.any():
            raise ProcessingError("the brain mask is empty (no signal above the background)")
    with _timed(timings, "model"):
        estimator = estimators.for_scheme(scheme)
    with _timed(timings, "estimate"):
        predicted = estimator.predict(reference.signals, scheme)
        try:
            direction = fibre_direction(reference.signals, scheme)
        except FeatureError as err:
            LOGGER.info("no fibre direction map: %s", err)
            direction = None
    desc = NETWORK_ESTIMATORS[estimator.metadata.labels]
    volumes = {name: _volume(reference.mask, predicted[:, i]) for i, name in enumerate(MAPS)}
    with _timed(timings, "write"):
        out_dirs = _write_dicom(
            source, volumes, direction, reference.mask, image.affine, desc, out_dir
        )
    if config.archive_dir is not None:
        with _timed(timings, "archive"):
            sidecar = {
                "Model": "NODDI",
                "Estimator": desc,
                "EstimatorDescription": ESTIMATORS[desc].words,
                "ModelFile": estimator.path.name,
                "ModelSHA256": estimator.sha256,
                "Scheme": scheme.summary(),
            }
            fibres = None if direction is None else _volume(reference.mask, direction)
            write_archive(
                config.archive_dir, source, volumes, reference.mask, image, sidecar, desc, fibres
            )
    return SeriesMaps(
        out_dirs, timings, int(reference.mask.sum()), scheme.summary(), estimator.path.name
    )


def series_numbers(source_number: object) -> list[int]:
    """SeriesNumbers of the ODI, NDI, FWF and direction series derived from a source series.

    Examples
    --------
    >>> series_numbers(7)
    [701, 702, 703, 704]
    >>> series_numbers(None)
    [1001, 1002, 1003, 1004]
    """
    try:
        first = int(source_number) * SERIES_NUMBER_FACTOR + 1  # type: ignore[call-overload]
    except (TypeError, ValueError):
        first = FALLBACK_SERIES_NUMBER
    if not 0 < first <= MAX_SERIES_NUMBER - 3:
        first = FALLBACK_SERIES_NUMBER
    return [first + k for k in range(4)]


def _write_dicom(
    source: pydicom.Dataset,
    volumes: dict[str, np.ndarray],
    direction: np.ndarray | None,
    mask: np.ndarray,
    affine: np.ndarray,
    desc: str,
    out_dir: Path,
) -> list[Path]:
    """Write the map series (same study and frame of reference, source series referenced)."""
    common = {
        "study_uid": str(source.StudyInstanceUID),
        "patient": patient_attributes_from_dicom(source),
        "frame_of_reference_uid": str(source.get("FrameOfReferenceUID", "")) or None,
        "source_series": str(source.SeriesInstanceUID),
    }
    numbers = series_numbers(source.get("SeriesNumber"))
    origin = str(source.get("SeriesDescription", "") or "").strip()
    estimator = ESTIMATORS[desc].dicom
    out_dirs = []
    for name, number in zip(MAPS, numbers, strict=False):
        short = parameter(name).display
        image = nib.Nifti1Image(volumes[name], affine)
        description = f"NODDI {short} {estimator}" + (f" of {origin}" if origin else "")
        write_parametric_map_series(
            image,
            out_dir / name,
            parameter=name,
            estimator=desc,
            series_number=number,
            description=description[:64],
            **common,
        )
        out_dirs.append(out_dir / name)
    if direction is not None:
        description = f"NODDI direction {estimator}" + (f" of {origin}" if origin else "")
        weight = (1.0 - volumes["odi"]) * (1.0 - volumes["fwf"])
        write_direction_series(
            _volume(mask, direction),
            weight,
            affine,
            out_dir / "direction",
            series_number=numbers[3],
            description=description[:64],
            weight_description="brightness (1 - ODI) x (1 - FWF)",
            **common,
        )
        out_dirs.append(out_dir / "direction")
    return out_dirs


def write_archive(
    archive_dir: Path,
    source: pydicom.Dataset,
    volumes: dict[str, np.ndarray],
    mask: np.ndarray,
    image: nib.Nifti1Image,
    sidecar: dict,
    desc: str,
    direction: np.ndarray | None = None,
) -> list[Path]:
    """Write the maps and brain mask of a series as a BIDS derivative dataset.

    Labels are pseudonyms, so that no patient identifier appears in file names:
    ``sub-`` the first 12 hex digits of SHA-256(PatientID), ``ses-`` the same of the
    StudyInstanceUID, ``run-`` the source SeriesNumber. The sidecars record the source study and
    series UIDs.

    Parameters
    ----------
    archive_dir : Path
        Derivative dataset root.
    source : pydicom Dataset
        An instance of the source series.
    volumes : dict
        ``odi``, ``ndi``, ``fwf`` maps (X, Y, Z).
    mask : ndarray of bool
        Brain mask.
    image : nibabel image
        The converted diffusion image (affine and header of the maps).
    sidecar : dict
        Estimator metadata for every map's sidecar.
    desc : str
        ``desc-`` label of the estimator.
    direction : ndarray, shape (X, Y, Z, 3), optional
        Fibre direction map.

    Returns
    -------
    list of Path
        The images written.
    """
    entities = {
        "sub": _pseudonym(source.get("PatientID", "")),
        "ses": _pseudonym(source.StudyInstanceUID),
        "run": str(int(source.get("SeriesNumber") or 1)),
    }
    sources = {
        "SourceStudyInstanceUID": str(source.StudyInstanceUID),
        "SourceSeriesInstanceUID": str(source.SeriesInstanceUID),
    }
    write_dataset_description(archive_dir)
    maps = dict(volumes, **({} if direction is None else {"direction": direction}))
    written = []
    for name, values in maps.items():
        path = derivative_path(
            archive_dir,
            entities,
            "dwimap",
            ".nii.gz",
            model="noddi",
            param=parameter(name).label,
            desc=desc,
        )
        written.append(save_nifti(nib.Nifti1Image(values, image.affine), path))
        write_json({**sidecar, **sources}, path.with_name(path.name.replace(".nii.gz", ".json")))
    path = derivative_path(archive_dir, entities, "mask", ".nii.gz", desc="brain")
    written.append(save_nifti(nib.Nifti1Image(mask.astype(np.uint8), image.affine), path))
    write_json({"Type": "Brain", **sources}, path.with_name(path.name.replace(".nii.gz", ".json")))
    return written


def _volume(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Put per-voxel values (N[, K]) into a float32 volume, 0 outside the mask."""
    values = np.asarray(values, dtype=np.float32)
    volume = np.zeros(mask.shape + values.shape[1:], dtype=np.float32)
    volume[mask] = values
    return volume


def _pseudonym(text: object) -> str:
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()[:12]


def _short(err: Exception, folder: Path) -> str:
    """Return an error message without the scratch folder's path."""
    return str(err).replace(f"{folder}/", "")


@contextmanager
def _timed(timings: dict[str, float], step: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = round(time.perf_counter() - start, 4)
