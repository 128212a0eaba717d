"""Export NODDI maps as DICOM series for the scanner console and PACS.

Each map (ODI, NDI or FWF from one estimator) becomes its own classic *MR Image Storage* series with
one instance per slice, as in the source study: values in [0, 1] are stored as unsigned integers
``round(1000 * value)`` (three decimals; BitsAllocated 16, BitsStored 12, HighBit 11,
PixelRepresentation 0) with RescaleSlope 0.001 and RescaleIntercept 0, so a viewer shows the real
value. Geometry comes from the NIfTI affine (RAS+) converted to DICOM's patient coordinates (LPS+).
See ``docs/dicom.md`` for the tags written and the reasons for the choices.

The functions here work on NIfTI files or nibabel images and need no Nipype;
:mod:`noddi_bids.interfaces.dicom` wraps them for workflows.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import nibabel as nb
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
)
from pydicom.valuerep import PersonName, format_number_as_ds

from noddi_bids import __version__
from noddi_bids.atomic import atomic_target
from noddi_bids.vocabulary import PARAMETERS
from noddi_bids.vocabulary import estimator as find_estimator
from noddi_bids.vocabulary import parameter as find_parameter

LOGGER = logging.getLogger(__name__)

#: Stored integer = round(value * SCALE); the DICOM RescaleSlope is its inverse.
SCALE = 1000
RESCALE_SLOPE = 1.0 / SCALE
BITS_STORED = 12
#: Values are clipped to this range before scaling (NODDI maps are volume fractions or indices).
VALUE_RANGE = (0.0, 1.0)

_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "noddi-bids.dicom")

#: Placeholder written where the BIDS input carries no patient name (BIDS data are de-identified).
PLACEHOLDER_PATIENT_NAME = "NODDI^ANONYMOUS"
PLACEHOLDER_PATIENT_ID = "NODDI-ANONYMOUS"
PLACEHOLDER_NOTE = "PLACEHOLDER"

# Patient/study attributes a caller may pass in ``patient`` (DICOM keywords). Anything else is
# rejected so that a typo does not silently vanish.
_ALLOWED_ATTRIBUTES = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "PatientAge",
        "PatientWeight",
        "PatientComments",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "StudyDescription",
        "AccessionNumber",
        "ReferringPhysicianName",
        "InstitutionName",
        "StationName",
        "MagneticFieldStrength",
        "EchoTime",
        "RepetitionTime",
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "MRAcquisitionType",
        "BodyPartExamined",
        "PatientPosition",
    }
)
_PLACEHOLDER_DEFAULTS = {
    "PatientName": PLACEHOLDER_PATIENT_NAME,
    "PatientID": PLACEHOLDER_PATIENT_ID,
}


def generate_uid(*parts: object) -> str:
    """Return a reproducible DICOM UID (``2.25.<int>``) derived from ``parts``.

    The same parts always give the same UID, so re-running the export on the same data writes the
    same study, series and instance UIDs; different parts give different UIDs. The number is a
    name-based (SHA-1, version 5) UUID written as an integer under the ``2.25`` root, as DICOM
    PS3.5 Annex B.2 allows, so no registered organisation root is needed.

    Parameters
    ----------
    *parts : object
        Strings (or objects with a meaningful ``str``) identifying the entity.

    Returns
    -------
    str
        A UID of at most 64 characters under the UUID-derived root ``2.25``.
    """
    name = "\x1f".join(str(part) for part in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def make_study_uid(subject: str, session: str | None = None, *, dataset: str = "") -> str:
    """Return the StudyInstanceUID for one BIDS session (one study per session).

    Parameters
    ----------
    subject : str
        Participant label, with or without the ``sub-`` prefix.
    session : str or None
        Session label, with or without ``ses-``; None for datasets without sessions.
    dataset : str
        Anything that tells datasets apart (e.g. the ``Name`` in ``dataset_description.json`` or
        the dataset DOI); two datasets with the same subject and session labels get different
        studies when this differs.

    Returns
    -------
    str
        A reproducible UID; every map of the session shares it.
    """
    subject = subject.removeprefix("sub-")
    session = "" if session is None else session.removeprefix("ses-")
    return generate_uid("study", dataset, subject, session)


def patient_attributes_from_bids(
    sidecar: str | os.PathLike | Mapping | None = None,
    participants_tsv: str | os.PathLike | None = None,
    *,
    subject: str | None = None,
    session: str | None = None,
) -> dict:
    """Collect patient/study DICOM attributes from BIDS metadata, where present.

    BIDS data are usually de-identified, so most patient attributes are absent; those are left out
    here and :func:`write_parametric_map_series` fills in clearly marked placeholders
    (``PatientName`` :data:`PLACEHOLDER_PATIENT_NAME`, a note in ``PatientComments``).

    Parameters
    ----------
    sidecar : path, mapping or None
        The DWI JSON sidecar (or its loaded content). Used keys: ``PatientName``,
        ``PatientBirthDate``, ``PatientSex``, ``StudyInstanceUID``, ``StudyID``,
        ``AccessionNumber``, ``StudyDescription``, ``InstitutionName``, ``StationName``,
        ``MagneticFieldStrength`` (T), ``EchoTime`` and ``RepetitionTime`` (BIDS seconds,
        converted to ms), ``ScanningSequence``, ``SequenceVariant``, ``ScanOptions`` (dcm2niix
        joins values with ``_``), ``MRAcquisitionType``, ``BodyPartExamined``, ``PatientPosition``,
        ``AcquisitionDateTime`` (-> StudyDate, StudyTime).
    participants_tsv : path or None
        ``participants.tsv``; the row of ``subject`` gives ``sex`` (-> PatientSex M/F/O), ``age``
        in years (-> PatientAge ``nnnY``) and ``weight`` in kg (-> PatientWeight), if present.
    subject : str or None
        Participant label (with or without ``sub-``). Sets ``PatientID`` to ``sub-<label>`` and
        selects the participants.tsv row.
    session : str or None
        Session label; sets ``StudyID`` to it when the sidecar has no StudyID.

    Returns
    -------
    dict
        DICOM keyword -> value, plus ``StudyInstanceUID`` when the sidecar carries one (so the maps
        can join the original study on PACS). Only attributes actually found are included.
    """
    meta = _load_sidecar(sidecar)
    attrs: dict = {}
    if subject:
        attrs["PatientID"] = f"sub-{subject.removeprefix('sub-')}"
    for key in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "AccessionNumber",
        "StudyDescription",
        "InstitutionName",
        "StationName",
        "MagneticFieldStrength",
        "MRAcquisitionType",
        "BodyPartExamined",
        "PatientPosition",
    ):
        if meta.get(key) not in (None, ""):
            attrs[key] = meta[key]
    for key in ("EchoTime", "RepetitionTime"):
        if isinstance(meta.get(key), int | float):
            attrs[key] = float(meta[key]) * 1000.0  # BIDS seconds -> DICOM milliseconds
    for key in ("ScanningSequence", "SequenceVariant", "ScanOptions"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            attrs[key] = value.split("_")
        elif isinstance(value, list) and value:
            attrs[key] = [str(v) for v in value]
    when = meta.get("AcquisitionDateTime")
    if isinstance(when, str) and "T" in when:
        day, clock = when.split("T", 1)
        attrs["StudyDate"] = day.replace("-", "")
        attrs["StudyTime"] = clock.replace(":", "")
    if session and "StudyID" not in attrs:
        attrs["StudyID"] = session.removeprefix("ses-")[:16]
    if participants_tsv is not None and subject:
        attrs.update(_participant_row_attributes(Path(participants_tsv), subject))
    return attrs


def patient_attributes_from_dicom(source: Dataset) -> dict:
    """Collect the patient/study attributes of a source DICOM instance for the maps.

    Parameters
    ----------
    source : pydicom Dataset
        An instance of the series the maps are computed from.

    Returns
    -------
    dict
        DICOM keyword -> value for every attribute :func:`write_parametric_map_series` accepts
        that the source carries with a value (names as text, multi-valued attributes as lists).
    """
    attrs = {}
    for keyword in sorted(_ALLOWED_ATTRIBUTES):
        value = source.get(keyword)
        if value in (None, ""):
            continue
        if isinstance(value, MultiValue):
            attrs[keyword] = [str(v) for v in value]
        elif isinstance(value, str | PersonName):
            attrs[keyword] = str(value)
        else:
            attrs[keyword] = value
    return attrs


def write_parametric_map_series(
    nifti: str | os.PathLike | nb.spatialimages.SpatialImage,
    out_dir: str | os.PathLike,
    *,
    parameter: str,
    estimator: str,
    series_number: int,
    study_uid: str,
    patient: Mapping | None = None,
    frame_of_reference_uid: str | None = None,
    description: str | None = None,
    source_series: str | None = None,
) -> list[Path]:
    """Write one NODDI map as a DICOM MR series, one instance per slice.

    Stored values are ``round(1000 * clip(value, 0, 1))`` as unsigned 12-bit integers with
    RescaleSlope 0.001: NaN and infinite voxels become 0, values below 0 become 0 and above 1
    become 1 (logged). Rows and columns of each instance follow the first and second voxel axes
    of the NIfTI; instance ``k`` is voxel slice ``k`` along the third axis.

    Parameters
    ----------
    nifti : path or nibabel image
        A 3-D map (a 4-D image with one volume is accepted).
    out_dir : path
        The series folder to create. It is written in a temporary sibling folder and renamed into
        place, so readers never see a half-written series; an existing folder is replaced.
    parameter : str
        ``od``/``icvf``/``isovf`` (BIDS labels) or ``odi``/``ndi``/``fwf``
        (:data:`noddi_bids.vocabulary.MAPS`), shown as ODI/NDI/FWF.
    estimator : str
        BIDS ``desc-`` label of :data:`noddi_bids.vocabulary.ESTIMATORS` (``nnmle``, ``nngt``,
        ``nnhybrid``, ``mle``), shown by its DICOM name (``NN-MLE``, ...).
    series_number : int
        SeriesNumber shown by viewers (positive).
    study_uid : str
        StudyInstanceUID shared by every map of the session (see :func:`make_study_uid`).
    patient : mapping or None
        Patient/study attributes by DICOM keyword (see :func:`patient_attributes_from_bids`).
        ``PatientName`` and ``PatientID`` fall back to placeholders, recorded in PatientComments.
    frame_of_reference_uid : str or None
        FrameOfReferenceUID; defaults to one derived from ``study_uid`` (same for every map of the
        session, since they share the DWI geometry).
    description : str or None
        SeriesDescription (64 characters at most); default ``NODDI <ODI|NDI|FWF> <estimator>``.
    source_series : str or None
        SeriesInstanceUID of the diffusion series the map was computed from, in the same study;
        recorded in RelatedSeriesSequence (0008,1250) with the purpose "Source image for image
        processing operation" (DCM 121322).

    Returns
    -------
    list of Path
        The written files in instance (slice) order, inside ``out_dir``.
    """
    img = nifti if isinstance(nifti, nb.spatialimages.SpatialImage) else nb.load(nifti)
    param_short, param_long = _parameter_names(parameter)
    est = find_estimator(estimator.lower())
    est_short, est_long = est.dicom, est.words
    if int(series_number) < 1:
        raise ValueError(f"series_number must be a positive integer, got {series_number!r}.")
    values = _as_3d(img)
    stored = quantise(values)
    geometry = slice_geometry(img.affine, values.shape)
    series_uid = generate_uid(
        "series", study_uid, param_short, est_short, series_number, _digest(stored, img.affine)
    )
    base = _series_dataset(
        patient,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_uid=frame_of_reference_uid,
        series_number=int(series_number),
        description=description or f"NODDI {param_short} {est_short}",
        comment=(
            f"NODDI {param_long} ({param_short}), estimator {est_short} ({est_long}). Stored value "
            f"= round({SCALE} x {param_short}), clipped to [0, 1] (NaN -> 0); real value = stored "
            f"x RescaleSlope {RESCALE_SLOPE:g}. Written by noddi-bids {__version__}."
        ),
        geometry=geometry,
        shape=values.shape,
        source_series=source_series,
    )
    return _write_instances(base, stored, geometry, Path(out_dir), f"{param_short}_{est_short}")


def write_direction_series(
    direction: np.ndarray,
    weight: np.ndarray,
    affine: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    series_number: int,
    study_uid: str,
    patient: Mapping | None = None,
    frame_of_reference_uid: str | None = None,
    description: str = "NODDI direction (colour)",
    weight_description: str = "brightness: the weight map",
    source_series: str | None = None,
) -> list[Path]:
    """Write a fibre-direction map as a direction-encoded colour series, one instance per slice.

    Colour follows the usual convention of diffusion tensor colour maps: red = left-right,
    green = anterior-posterior, blue = superior-inferior, each channel
    ``round(255 * |direction . axis| * weight)``. The instances are 8-bit RGB *Secondary
    Capture Image Storage* (MR Image Storage allows only greyscale) with the Frame of Reference
    and Image Plane attributes of the maps, so viewers place them like the other series.

    Parameters
    ----------
    direction : ndarray, shape (X, Y, Z, 3)
        Unit vectors in the FSL/BIDS b-vector frame of an image with ``affine`` (sign arbitrary;
        zero where there is no estimate).
    weight : ndarray, shape (X, Y, Z)
        Brightness in [0, 1] (clipped; non-finite -> 0).
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+, mm) transform of the maps.
    out_dir : path
        The series folder to create (atomically, as :func:`write_parametric_map_series`).
    series_number, study_uid, patient, frame_of_reference_uid, source_series
        As in :func:`write_parametric_map_series`.
    description : str
        SeriesDescription.
    weight_description : str
        What the brightness is, for ImageComments.

    Returns
    -------
    list of Path
        The written files in slice order.
    """
    direction = np.asarray(direction, dtype=np.float64)
    shape = direction.shape[:3]
    if direction.shape[3:] != (3,) or np.shape(weight) != shape:
        raise ValueError(
            f"direction must have shape (X, Y, Z, 3) and weight (X, Y, Z); got {direction.shape} "
            f"and {np.shape(weight)}."
        )
    patient_frame = bvecs_to_patient(np.nan_to_num(direction.reshape(-1, 3)), affine)
    brightness = np.clip(np.nan_to_num(np.asarray(weight, dtype=np.float64)), 0.0, 1.0)
    colour = np.abs(patient_frame).reshape(*shape, 3) * brightness[..., None]
    stored = np.rint(np.clip(colour, 0.0, 1.0) * 255).astype(np.uint8)
    geometry = slice_geometry(affine, shape)
    series_uid = generate_uid(
        "series", study_uid, "direction", series_number, _digest(stored, np.asarray(affine))
    )
    base = _series_dataset(
        patient,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_uid=frame_of_reference_uid,
        series_number=int(series_number),
        description=description,
        comment=(
            "NODDI mean fibre direction, colour-coded: red = left-right, green = "
            f"anterior-posterior, blue = superior-inferior; {weight_description}. Written by "
            f"noddi-bids {__version__}."
        ),
        geometry=geometry,
        shape=shape,
        source_series=source_series,
    )
    base.SOPClassUID = SecondaryCaptureImageStorage
    base.ConversionType = "WSD"
    for keyword in _MR_ONLY:
        if keyword in base:
            delattr(base, keyword)
    base.SamplesPerPixel = 3
    base.PhotometricInterpretation = "RGB"
    base.PlanarConfiguration = 0
    base.BitsAllocated = base.BitsStored = 8
    base.HighBit = 7
    return _write_instances(base, stored, geometry, Path(out_dir), "DIRECTION")


#: MR Image module and rescale attributes left out of the colour (Secondary Capture) series.
_MR_ONLY = (
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "EchoTime",
    "RepetitionTime", "EchoTrainLength", "MagneticFieldStrength", "RescaleIntercept",
    "RescaleSlope", "RescaleType",
)  # fmt: skip


def _write_instances(
    base: Dataset, stored: np.ndarray, geometry: dict, out_dir: Path, prefix: str
) -> list[Path]:
    """Write one instance per slice of ``stored`` (X, Y, Z[, channels]) into a new folder."""
    with atomic_target(out_dir) as tmp:
        tmp.mkdir()
        names = []
        for k in range(stored.shape[2]):
            ds = _instance_dataset(base, stored[:, :, k], k, geometry, base.SeriesInstanceUID)
            name = f"{prefix}_{k + 1:04d}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
    LOGGER.info("Wrote %d DICOM instances of %s to %s", len(names), prefix, out_dir)
    return [out_dir / name for name in names]


def quantise(values: np.ndarray) -> np.ndarray:
    """Return the stored integers ``round(1000 * clip(values, 0, 1))`` as uint16 (NaN -> 0).

    Parameters
    ----------
    values : ndarray
        Map values (any float shape).

    Returns
    -------
    ndarray of uint16
        Integers in [0, 1000], which fit 12 bits.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    low, high = VALUE_RANGE
    n_out = int(np.count_nonzero(finite & ((values < low) | (values > high))))
    if n_out or not finite.all():
        LOGGER.info(
            "DICOM export: %d non-finite voxels set to 0, %d voxels clipped to [%g, %g].",
            int(np.count_nonzero(~finite)),
            n_out,
            low,
            high,
        )
    clean = np.clip(np.where(finite, values, 0.0), low, high)
    return np.rint(clean * SCALE).astype(np.uint16)


def slice_geometry(affine: np.ndarray, shape: tuple[int, int, int]) -> dict:
    """Convert a NIfTI voxel-to-RAS affine into DICOM image-plane attributes (LPS).

    DICOM columns run along the first voxel axis and rows along the second; slice ``k`` is the
    third axis. Shear between the slice axis and the image plane is kept through
    ImagePositionPatient (each slice is positioned exactly).

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+, mm) affine of the map.
    shape : tuple of int
        Map shape (i, j, k).

    Returns
    -------
    dict
        ``orientation`` (6 direction cosines), ``pixel_spacing`` ([row spacing, column spacing] in
        mm, i.e. [|axis 2|, |axis 1|]), ``slice_thickness`` (mm), ``positions`` (one LPS position
        per slice, mm), ``normal`` (unit slice normal, LPS) and ``slice_locations`` (positions
        projected on the normal, mm).
    """
    affine = np.asarray(affine, dtype=np.float64)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    steps = lps[:3, :3]
    sizes = np.linalg.norm(steps, axis=0)
    if np.any(sizes <= 0):
        raise ValueError(f"Degenerate affine (zero voxel size): {affine.tolist()}.")
    row_cosine = steps[:, 0] / sizes[0]
    col_cosine = steps[:, 1] / sizes[1]
    if abs(float(row_cosine @ col_cosine)) > 1e-4:
        raise ValueError(
            "The map's first two voxel axes are not perpendicular (sheared in-plane), which "
            "DICOM image planes cannot represent; resample the map first."
        )
    normal = np.cross(row_cosine, col_cosine)
    positions = [lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3] for k in range(shape[2])]
    return {
        "orientation": [*row_cosine.tolist(), *col_cosine.tolist()],
        "pixel_spacing": [float(sizes[1]), float(sizes[0])],
        "slice_thickness": float(abs(steps[:, 2] @ normal)),
        "positions": [p.tolist() for p in positions],
        "normal": normal.tolist(),
        "slice_locations": [float(p @ normal) for p in positions],
    }


def bvecs_to_patient(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Turn FSL/BIDS b-vectors (image frame) into DICOM patient directions (LPS+).

    FSL's b-vectors are in the image's voxel axes, with the first axis flipped when the
    voxel-to-world matrix has a positive determinant (neurological storage); DICOM's
    DiffusionGradientOrientation (0018,9089) is in the patient frame.

    Parameters
    ----------
    bvecs : ndarray, shape (M, 3)
        Vectors in the FSL convention of an image with voxel-to-world (RAS+) ``affine``.
    affine : ndarray, shape (4, 4)
        Voxel-to-world transform of the image the vectors belong to.

    Returns
    -------
    ndarray, shape (M, 3)
        Directions in patient coordinates (LPS+); unit length where the input was, zero rows
        stay zero.

    Examples
    --------
    >>> bvecs_to_patient(np.array([[1.0, 0.0, 0.0]]), np.diag([2.0, 2.0, 2.0, 1.0])).tolist()
    [[1.0, 0.0, 0.0]]
    """
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    axes = axes / np.linalg.norm(axes, axis=0)
    flip = np.diag([-1.0 if np.linalg.det(axes) > 0 else 1.0, 1.0, 1.0])
    return np.asarray(bvecs, dtype=np.float64) @ (np.diag([-1.0, -1.0, 1.0]) @ axes @ flip).T + 0.0


def _series_dataset(
    patient: Mapping | None,
    *,
    study_uid: str,
    series_uid: str,
    frame_uid: str | None,
    series_number: int,
    description: str,
    comment: str,
    geometry: dict,
    shape: tuple[int, int, int],
    source_series: str | None = None,
) -> Dataset:
    """Build the attributes shared by every instance of the series.

    ``patient`` is checked and completed with placeholders (:func:`_patient_defaults`);
    ``frame_uid`` defaults to one derived from the study.
    """
    attrs = _patient_defaults(patient or {})
    frame_uid = frame_uid or generate_uid("frame-of-reference", study_uid)
    now = _dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.SOPClassUID = MRImageStorage
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient module (type 2 attributes exist even when empty).
    ds.PatientName = attrs["PatientName"]
    ds.PatientID = attrs["PatientID"]
    ds.PatientBirthDate = attrs.get("PatientBirthDate", "")
    ds.PatientSex = attrs.get("PatientSex", "")
    for key in ("PatientAge", "PatientWeight", "PatientComments"):
        if key in attrs:
            setattr(ds, key, _ds_value(attrs[key]) if key == "PatientWeight" else attrs[key])
    # General Study module.
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = attrs.get("StudyDate", "")
    ds.StudyTime = attrs.get("StudyTime", "")
    ds.ReferringPhysicianName = attrs.get("ReferringPhysicianName", "")
    ds.StudyID = str(attrs.get("StudyID", ""))[:16]
    ds.AccessionNumber = str(attrs.get("AccessionNumber", ""))[:16]
    if "StudyDescription" in attrs:
        ds.StudyDescription = str(attrs["StudyDescription"])[:64]
    # General Series module.
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description[:64]
    ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    if "BodyPartExamined" in attrs:
        ds.BodyPartExamined = str(attrs["BodyPartExamined"])[:16]
    if source_series:
        related = Dataset()
        related.StudyInstanceUID = study_uid
        related.SeriesInstanceUID = source_series
        purpose = Dataset()
        purpose.CodeValue = "121322"
        purpose.CodingSchemeDesignator = "DCM"
        purpose.CodeMeaning = "Source image for image processing operation"
        related.PurposeOfReferenceCodeSequence = [purpose]
        ds.RelatedSeriesSequence = [related]
    ds.PatientPosition = attrs.get("PatientPosition", "")
    # Frame of Reference module.
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment module: this software produced the instances.
    ds.Manufacturer = "noddi-bids"
    ds.ManufacturerModelName = "noddi-bids"
    ds.SoftwareVersions = __version__
    for key in ("InstitutionName", "StationName"):
        if key in attrs:
            setattr(ds, key, str(attrs[key])[: 64 if key == "InstitutionName" else 16])
    # General Image module.
    ds.DerivationDescription = "NODDI model estimate from multi-shell diffusion MRI (noddi-bids)"
    ds.ImageComments = comment
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.AcquisitionNumber = 1
    ds.ImagesInAcquisition = shape[2]
    # MR Image module.
    ds.ScanningSequence = attrs.get("ScanningSequence", ["EP"])
    ds.SequenceVariant = attrs.get("SequenceVariant", ["NONE"])
    ds.ScanOptions = attrs.get("ScanOptions", "")
    ds.MRAcquisitionType = attrs.get("MRAcquisitionType", "2D")
    ds.EchoTime = _ds_value(attrs["EchoTime"]) if "EchoTime" in attrs else ""
    ds.RepetitionTime = _ds_value(attrs["RepetitionTime"]) if "RepetitionTime" in attrs else ""
    ds.EchoTrainLength = ""
    if "MagneticFieldStrength" in attrs:
        ds.MagneticFieldStrength = _ds_value(attrs["MagneticFieldStrength"])
    # Image Plane module (per-slice position set in _instance_dataset).
    ds.ImageOrientationPatient = [_ds_value(v) for v in geometry["orientation"]]
    ds.PixelSpacing = [_ds_value(v) for v in geometry["pixel_spacing"]]
    ds.SliceThickness = _ds_value(geometry["slice_thickness"])
    ds.SpacingBetweenSlices = _ds_value(geometry["slice_thickness"])
    # Image Pixel module: unsigned 12-bit integers in 16-bit words, rows = axis 2, cols = axis 1.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = shape[1]
    ds.Columns = shape[0]
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = _ds_value(RESCALE_SLOPE)
    ds.RescaleType = "US"
    return ds


def _instance_dataset(
    base: Dataset, plane: np.ndarray, k: int, geometry: dict, series_uid: str
) -> Dataset:
    """Return the instance for voxel slice ``k`` (``plane`` indexed [i, j])."""
    ds = Dataset()
    ds.update(base)
    sop_uid = generate_uid("instance", series_uid, k)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds_value(v) for v in geometry["positions"][k]]
    ds.SliceLocation = _ds_value(geometry["slice_locations"][k])
    rows_first = np.swapaxes(plane, 0, 1)  # DICOM rows run along the second voxel axis
    dtype = "<u2" if base.BitsAllocated == 16 else "u1"
    ds.PixelData = np.ascontiguousarray(rows_first).astype(dtype).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = base.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"NODDIBIDS_{__version__}"[:16]
    ds.file_meta = meta
    return ds


def _patient_defaults(patient: Mapping) -> dict:
    """Validate caller attributes and fill placeholders, noting them in PatientComments."""
    unknown = set(patient) - _ALLOWED_ATTRIBUTES - {"StudyInstanceUID"}
    if unknown:
        raise ValueError(
            f"Unsupported patient/study attribute(s) {sorted(unknown)}; "
            f"allowed: {sorted(_ALLOWED_ATTRIBUTES)}."
        )
    attrs = {k: v for k, v in patient.items() if v not in (None, "") and k != "StudyInstanceUID"}
    placeholders = [key for key in _PLACEHOLDER_DEFAULTS if key not in attrs]
    for key in placeholders:
        attrs[key] = _PLACEHOLDER_DEFAULTS[key]
    if placeholders:
        note = (
            f"{PLACEHOLDER_NOTE}: {', '.join(placeholders)} not in the BIDS input; placeholder "
            "value(s) written by noddi-bids."
        )
        previous = attrs.get("PatientComments")
        attrs["PatientComments"] = f"{previous} {note}" if previous else note
    return attrs


def _participant_row_attributes(path: Path, subject: str) -> dict:
    """Return PatientSex/PatientAge/PatientWeight from the participants.tsv row of ``subject``."""
    if not path.is_file():
        return {}
    label = f"sub-{subject.removeprefix('sub-')}"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle, delimiter="\t")]
    row = next((r for r in rows if r.get("participant_id") == label), None)
    if row is None:
        return {}
    attrs = {}
    sex = (row.get("sex") or "").strip().lower()
    sexes = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}
    if sex in sexes:
        attrs["PatientSex"] = sexes[sex]
    age = _as_float(row.get("age"))
    if age is not None and 0 <= age < 1000:
        attrs["PatientAge"] = f"{int(age):03d}Y"
    weight = _as_float(row.get("weight"))
    if weight is not None and weight > 0:
        attrs["PatientWeight"] = weight
    return attrs


def _load_sidecar(sidecar: str | os.PathLike | Mapping | None) -> Mapping:
    if sidecar is None:
        return {}
    if isinstance(sidecar, Mapping):
        return sidecar
    path = Path(sidecar)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read the BIDS sidecar {path}: {err}") from err


def _as_float(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _as_3d(img: nb.spatialimages.SpatialImage) -> np.ndarray:
    data = np.asanyarray(img.dataobj, dtype=np.float64)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"Expected a 3-D map, got an image of shape {data.shape}.")
    return data


def _parameter_names(key: str) -> tuple[str, str]:
    """Display name and words of a scalar NODDI parameter (name or ``param-`` label)."""
    found = find_parameter(key.lower())
    if found.name not in PARAMETERS:
        raise ValueError(f"Unknown parameter {key!r}: only {list(PARAMETERS)} are scalar maps.")
    return found.display, found.words


def _digest(stored: np.ndarray, affine: np.ndarray) -> str:
    sha = hashlib.sha256(np.ascontiguousarray(stored).tobytes())
    sha.update(np.asarray(stored.shape, dtype=np.int64).tobytes())
    sha.update(np.round(np.asarray(affine, dtype=np.float64), 6).tobytes())
    return sha.hexdigest()


def _ds_value(value: float) -> str:
    """Format a number as a valid DICOM decimal string (at most 16 characters)."""
    return format_number_as_ds(float(value))
