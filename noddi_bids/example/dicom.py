"""A diffusion series as a scanner would send it: classic MR files or one Enhanced MR file.

The inline node (:mod:`noddi_bids.node`) and its tests need DICOM input. These writers turn a
4-D image with its scheme into

* classic *MR Image Storage*: one file per slice per volume, with the standard diffusion
  attributes at top level — DiffusionBValue (0018,9087), DiffusionGradientOrientation
  (0018,9089) in patient coordinates, DiffusionDirectionality (0018,9075) — and
  ImagesInAcquisition (0020,1002) = slices x volumes (the node's expected-count trigger);
* *Enhanced MR Image Storage*: one multi-frame file, frames ordered volume by volume, with
  per-frame Frame Content, Plane Position and MR Diffusion groups.

Pixel values are the image rounded to unsigned 16-bit integers (RescaleSlope 1), so a BIDS copy
of the same data written as integers holds exactly the same numbers. Manufacturer is
``Philips``: dcm2niix reads the standard attributes with that vendor's conventions, the ones
that apply to both forms (see ``docs/inline.md``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
)
from pydicom.valuerep import format_number_as_ds

from noddi_bids.atomic import atomic_target
from noddi_bids.io.dicom import bvecs_to_patient, generate_uid, slice_geometry
from noddi_bids.model.scheme import B0_THRESHOLD

#: Patient of the example series (a phantom, not a person).
PHANTOM_PATIENT = {"PatientName": "PHANTOM^NODDI", "PatientID": "NODDI-PHANTOM-01"}
#: Vendor label written (see the module docstring).
MANUFACTURER = "Philips"
#: Echo and repetition time written, ms.
ECHO_TIME_MS = 83.0
REPETITION_TIME_MS = 5800.0


class _Table(NamedTuple):
    bvals: np.ndarray
    bvecs: np.ndarray

    @property
    def b0_mask(self) -> np.ndarray:
        return self.bvals <= B0_THRESHOLD


def write_dwi_series(
    out_dir: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    bvals: np.ndarray,
    bvecs: np.ndarray,
    *,
    enhanced: bool = False,
    patient: Mapping[str, str] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 7,
    description: str = "DWI multi-shell",
) -> list[Path]:
    """Write a diffusion image as a DICOM series (classic single-frame or Enhanced MR).

    Parameters
    ----------
    out_dir : path
        Folder to create (written under a temporary name and renamed).
    data : ndarray, shape (X, Y, Z, M)
        The image; rounded and clipped to unsigned 16-bit integers.
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+, mm) transform; rows of each image run along the second voxel
        axis and columns along the first, as :func:`noddi_bids.io.dicom.slice_geometry` says.
    bvals : ndarray, shape (M,)
        b-values of the volumes, s/mm^2 (any table, even one NODDI cannot use: the node's tests
        send such series).
    bvecs : ndarray, shape (M, 3)
        FSL/BIDS b-vectors of the volumes (image frame).
    enhanced : bool
        One Enhanced MR multi-frame file instead of one classic file per slice and volume.
    patient : mapping, optional
        PatientName, PatientID and other patient/study attributes; default
        :data:`PHANTOM_PATIENT`.
    study_uid, series_uid : str, optional
        Default: derived from the patient, the series number and the data.
    series_number : int
        SeriesNumber.
    description : str
        SeriesDescription.

    Returns
    -------
    list of Path
        The files written, in order.
    """
    data = np.asarray(data)
    table = _Table(np.asarray(bvals, dtype=float), np.asarray(bvecs, dtype=float))
    if (
        data.ndim != 4
        or data.shape[3] != table.bvals.size
        or table.bvecs.shape != (data.shape[3], 3)
    ):
        raise ValueError(
            f"data of shape {data.shape} does not match {table.bvals.size} b-values and "
            f"b-vectors of shape {table.bvecs.shape}"
        )
    stored = np.clip(np.rint(data), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    patient = dict(patient or PHANTOM_PATIENT)
    digest = generate_uid("dwi", stored.shape, stored[::4, ::4, ::2, ::8].tobytes().hex())
    study_uid = study_uid or generate_uid("study", patient.get("PatientID"), digest)
    series_uid = series_uid or generate_uid("series", study_uid, series_number, digest)
    geometry = slice_geometry(affine, stored.shape[:3])
    gradients = bvecs_to_patient(table.bvecs, affine)
    base = _base_dataset(patient, study_uid, series_uid, series_number, description)
    base.Rows, base.Columns = stored.shape[1], stored.shape[0]
    out_dir = Path(out_dir)
    with atomic_target(out_dir) as tmp:
        tmp.mkdir()
        if enhanced:
            names = [_write_enhanced(tmp, base, stored, table, gradients, geometry)]
        else:
            names = _write_classic(tmp, base, stored, table, gradients, geometry)
    return [out_dir / name for name in names]


def _write_classic(
    folder: Path,
    base: Dataset,
    stored: np.ndarray,
    table: _Table,
    gradients: np.ndarray,
    geometry: dict,
) -> list[str]:
    n_slices, n_volumes = stored.shape[2], stored.shape[3]
    base.SOPClassUID = MRImageStorage
    base.ImageOrientationPatient = _ds(geometry["orientation"])
    base.PixelSpacing = _ds(geometry["pixel_spacing"])
    base.SliceThickness = _ds(geometry["slice_thickness"])
    base.SpacingBetweenSlices = _ds(geometry["slice_thickness"])
    base.EchoTime = _ds(ECHO_TIME_MS)
    base.RepetitionTime = _ds(REPETITION_TIME_MS)
    base.ScanningSequence = ["EP"]
    base.SequenceVariant = ["SK"]
    base.ScanOptions = ""
    base.MRAcquisitionType = "2D"
    base.AcquisitionNumber = 1
    base.ImagesInAcquisition = n_slices * n_volumes
    base.NumberOfTemporalPositions = n_volumes
    base.RescaleIntercept, base.RescaleSlope = "0", "1"
    names = []
    for v in range(n_volumes):
        b_value = float(table.bvals[v])
        for k in range(n_slices):
            index = v * n_slices + k
            ds = Dataset()
            ds.update(base)
            ds.SOPInstanceUID = generate_uid("instance", base.SeriesInstanceUID, index)
            ds.InstanceNumber = index + 1
            ds.TemporalPositionIdentifier = v + 1
            ds.ImagePositionPatient = _ds(geometry["positions"][k])
            ds.SliceLocation = _ds(geometry["slice_locations"][k])
            ds.DiffusionBValue = b_value
            ds.DiffusionDirectionality = "NONE" if table.b0_mask[v] else "DIRECTIONAL"
            if not table.b0_mask[v]:
                ds.DiffusionGradientOrientation = [float(g) for g in gradients[v]]
            ds.PixelData = np.ascontiguousarray(stored[:, :, k, v].T).astype("<u2").tobytes()
            name = f"IM_{index + 1:05d}.dcm"
            _save(ds, folder / name)
            names.append(name)
    return names


def _write_enhanced(
    folder: Path,
    base: Dataset,
    stored: np.ndarray,
    table: _Table,
    gradients: np.ndarray,
    geometry: dict,
) -> str:
    n_slices, n_volumes = stored.shape[2], stored.shape[3]
    ds = base
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = generate_uid("instance", base.SeriesInstanceUID, "enhanced")
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = "3"
    ds.PulseSequenceName = "DWI_EPI"
    ds.EchoPulseSequence = "SPIN"
    ds.MultipleSpinEcho = "NO"
    ds.PhaseContrast = "NO"
    ds.VelocityEncodingAcquisitionSequence = Sequence()
    ds.MRAcquisitionType = "2D"
    ds.AcquisitionDuration = 60.0
    ds.AcquisitionContextSequence = Sequence()
    ds.NumberOfFrames = n_slices * n_volumes
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.DimensionOrganizationType = "3D_TEMPORAL"
    organisation = generate_uid("dimension-organisation", base.SeriesInstanceUID)
    ds.DimensionOrganizationSequence = Sequence([Dataset()])
    ds.DimensionOrganizationSequence[0].DimensionOrganizationUID = organisation
    ds.DimensionIndexSequence = Sequence(
        [
            _dimension(organisation, 0x00209128, 0x00209111, "Temporal Position Index"),
            _dimension(organisation, 0x00209057, 0x00209111, "In-Stack Position Number"),
        ]
    )
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    measures = shared.PixelMeasuresSequence[0]
    measures.PixelSpacing = _ds(geometry["pixel_spacing"])
    measures.SliceThickness = _ds(geometry["slice_thickness"])
    measures.SpacingBetweenSlices = _ds(geometry["slice_thickness"])
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = _ds(geometry["orientation"])
    shared.MRTimingAndRelatedParametersSequence = Sequence([Dataset()])
    timing = shared.MRTimingAndRelatedParametersSequence[0]
    timing.RepetitionTime = REPETITION_TIME_MS
    timing.FlipAngle = 90.0
    timing.EchoTrainLength = 1
    timing.RFEchoTrainLength = 1
    timing.GradientEchoTrainLength = 1
    timing.OperatingModeSequence = Sequence()
    timing.SpecificAbsorptionRateSequence = Sequence()
    shared.MREchoSequence = Sequence([Dataset()])
    shared.MREchoSequence[0].EffectiveEchoTime = ECHO_TIME_MS
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    transform = shared.PixelValueTransformationSequence[0]
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = "0", "1", "US"
    shared.FrameAnatomySequence = Sequence([Dataset()])
    anatomy = shared.FrameAnatomySequence[0]
    anatomy.FrameLaterality = "U"
    anatomy.AnatomicRegionSequence = Sequence([_code("12738006", "SCT", "Brain")])
    shared.MRReceiveCoilSequence = Sequence([Dataset()])
    coil = shared.MRReceiveCoilSequence[0]
    coil.ReceiveCoilName, coil.ReceiveCoilType = "HEAD", "MULTICOIL"
    coil.QuadratureReceiveCoil = "NO"
    shared.MRAveragesSequence = Sequence([Dataset()])
    shared.MRAveragesSequence[0].NumberOfAverages = 1
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for v in range(n_volumes):
        for k in range(n_slices):
            frame = Dataset()
            frame.FrameContentSequence = Sequence([Dataset()])
            content = frame.FrameContentSequence[0]
            content.StackID = "1"
            content.InStackPositionNumber = k + 1
            content.TemporalPositionIndex = v + 1
            content.DimensionIndexValues = [v + 1, k + 1]
            frame.PlanePositionSequence = Sequence([Dataset()])
            frame.PlanePositionSequence[0].ImagePositionPatient = _ds(geometry["positions"][k])
            frame.MRDiffusionSequence = Sequence([Dataset()])
            diffusion = frame.MRDiffusionSequence[0]
            diffusion.DiffusionBValue = float(table.bvals[v])
            diffusion.DiffusionDirectionality = "NONE" if table.b0_mask[v] else "DIRECTIONAL"
            if not table.b0_mask[v]:
                direction = Dataset()
                direction.DiffusionGradientOrientation = [float(g) for g in gradients[v]]
                diffusion.DiffusionGradientDirectionSequence = Sequence([direction])
            frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    planes = np.transpose(stored, (3, 2, 1, 0))  # volume, slice, row (axis 2), column (axis 1)
    ds.PixelData = np.ascontiguousarray(planes).astype("<u2").tobytes()
    name = "IM_ENHANCED.dcm"
    _save(ds, folder / name)
    return name


def _base_dataset(
    patient: Mapping[str, str],
    study_uid: str,
    series_uid: str,
    series_number: int,
    description: str,
) -> Dataset:
    now = _dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION"]
    ds.InstanceCreationDate = ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    for key, value in patient.items():
        setattr(ds, key, value)
    ds.PatientBirthDate = ds.get("PatientBirthDate", "")
    ds.PatientSex = ds.get("PatientSex", "O")
    ds.StudyInstanceUID = study_uid
    ds.StudyID = ds.get("StudyID", "1")
    ds.AccessionNumber = ds.get("AccessionNumber", "")
    ds.ReferringPhysicianName = ""
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = generate_uid("frame-of-reference", study_uid)
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "noddi-bids example phantom"
    ds.SoftwareVersions = "1"
    ds.MagneticFieldStrength = "3"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    return ds


def _dimension(organisation: str, index_pointer: int, group_pointer: int, label: str) -> Dataset:
    item = Dataset()
    item.DimensionOrganizationUID = organisation
    item.DimensionIndexPointer = index_pointer
    item.FunctionalGroupPointer = group_pointer
    item.DimensionDescriptionLabel = label
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _save(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def _ds(values) -> list[str] | str:
    if np.ndim(values) == 0:
        return format_number_as_ds(float(values))
    return [format_number_as_ds(float(v)) for v in values]
