"""What the node reads from each received instance.

Its series, whether it is diffusion-weighted, how many instances the series announces, and
whether the instance is whole. Only identifiers and acquisition attributes are read here,
nothing about the patient, so that what the node logs never holds patient data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage

#: SOP classes the node accepts: classic single-frame MR and Enhanced (multi-frame) MR.
ACCEPTED_SOP_CLASSES = (MRImageStorage, EnhancedMRImageStorage)
#: Attributes that mark a diffusion-weighted instance: the standard ones (DiffusionBValue,
#: DiffusionDirectionality, MR Diffusion Sequence) and the vendors' private b-value tags
#: (Siemens CSA 0019,100C; GE 0043,1039; Philips 2001,1003).
DIFFUSION_TAGS = tuple(
    Tag(t) for t in (0x00189087, 0x00189075, 0x00189117, 0x0019100C, 0x00431039, 0x20011003)
)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class InstanceError(ValueError):
    """A received instance the node cannot use (the message says why, without patient data)."""


@dataclass(frozen=True)
class InstanceInfo:
    """The attributes of one instance that the node tracks.

    Attributes
    ----------
    sop_uid, series_uid, study_uid : str
        Identifiers (validated UIDs).
    diffusion : bool
        The instance carries diffusion attributes (:data:`DIFFUSION_TAGS`, at top level or in a
        functional group of an Enhanced MR instance) or ImageType DIFFUSION.
    frames : int
        Frames in the instance (1 for classic MR).
    expected : int or None
        Instances the series should have, from the headers: InConcatenationTotalNumber of an
        Enhanced MR concatenation, 1 for an Enhanced MR instance without one, else
        ImagesInAcquisition (0020,1002) of a classic instance (trusted by the tracker only
        under the conditions in :mod:`noddi_bids.node.tracker`).
    acquisition : str
        AcquisitionNumber ("" when absent).
    position : tuple of float
        ImagePositionPatient rounded to 0.01 mm (empty for Enhanced MR).
    geometry : tuple
        Rows, Columns, PixelSpacing and ImageOrientationPatient (rounded): instances of one
        acquisition share it.
    """

    sop_uid: str
    series_uid: str
    study_uid: str
    diffusion: bool
    frames: int
    expected: int | None
    acquisition: str
    position: tuple[float, ...]
    geometry: tuple


def inspect_instance(ds: Dataset) -> InstanceInfo:
    """Check a received instance and return what the node tracks of it.

    Parameters
    ----------
    ds : pydicom Dataset
        The instance (file meta information optional).

    Returns
    -------
    InstanceInfo

    Raises
    ------
    InstanceError
        Missing or invalid UIDs, an SOP class other than MR / Enhanced MR, no pixel data, or
        native pixel data shorter or longer than Rows x Columns x frames x samples x bits
        (a truncated or malformed instance).
    """
    try:
        sop_uid = _uid(ds, "SOPInstanceUID")
        series_uid = _uid(ds, "SeriesInstanceUID")
        study_uid = _uid(ds, "StudyInstanceUID")
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class not in ACCEPTED_SOP_CLASSES:
            raise InstanceError(f"SOP class {sop_class or '(none)'} is not MR or Enhanced MR")
        frames = int(ds.get("NumberOfFrames") or 1)
        _check_pixels(ds, frames)
        enhanced = sop_class == EnhancedMRImageStorage
        return InstanceInfo(
            sop_uid=sop_uid,
            series_uid=series_uid,
            study_uid=study_uid,
            diffusion=_is_diffusion(ds, enhanced),
            frames=frames,
            expected=_expected(ds, enhanced),
            acquisition=str(ds.get("AcquisitionNumber", "") or ""),
            position=() if enhanced else _rounded(ds.get("ImagePositionPatient") or ()),
            geometry=_geometry(ds, enhanced),
        )
    except InstanceError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoding error means an unusable instance
        raise InstanceError(f"unreadable attributes ({type(err).__name__}: {err})") from err


def _uid(ds: Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if not value or len(value) > 64 or not _UID.match(value):
        raise InstanceError(f"missing or invalid {keyword}")
    return value


def _check_pixels(ds: Dataset, frames: int) -> None:
    if "PixelData" not in ds:
        raise InstanceError("no pixel data")
    transfer = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if transfer is not None and transfer.is_compressed:
        return  # encapsulated: the decoder checks the fragments
    expected = (
        int(ds.Rows)
        * int(ds.Columns)
        * frames
        * int(ds.get("SamplesPerPixel", 1))
        * int(ds.BitsAllocated)
        // 8
    )
    length = len(ds.PixelData)
    if length not in (expected, expected + 1):  # one pad byte keeps an odd length even
        raise InstanceError(
            f"pixel data of {length} bytes where Rows x Columns x frames needs {expected} "
            "(truncated or malformed)"
        )


def _is_diffusion(ds: Dataset, enhanced: bool) -> bool:
    if any(tag in ds for tag in DIFFUSION_TAGS):
        return True
    if "DIFFUSION" in [str(v).upper() for v in (ds.get("ImageType") or [])]:
        return True
    if not enhanced:
        return False
    groups = [*ds.get("SharedFunctionalGroupsSequence", [])]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        groups.append(per_frame[0])
    return any("MRDiffusionSequence" in group for group in groups)


def _expected(ds: Dataset, enhanced: bool) -> int | None:
    if enhanced:
        total = ds.get("InConcatenationTotalNumber") if "ConcatenationUID" in ds else 1
        return int(total) if total else None
    count = ds.get("ImagesInAcquisition")
    return int(count) if count not in (None, "") and int(count) > 0 else None


def _rounded(values) -> tuple[float, ...]:
    return tuple(float(v) for v in np.round(np.asarray(values, dtype=float), 2))


def _geometry(ds: Dataset, enhanced: bool) -> tuple:
    spacing, orientation = ds.get("PixelSpacing"), ds.get("ImageOrientationPatient")
    if enhanced:
        shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
        measures = (shared.get("PixelMeasuresSequence") or [Dataset()])[0]
        plane = (shared.get("PlaneOrientationSequence") or [Dataset()])[0]
        spacing, orientation = measures.get("PixelSpacing"), plane.get("ImageOrientationPatient")
    return (
        int(ds.Rows),
        int(ds.Columns),
        _rounded(spacing or ()),
        tuple(float(v) for v in np.round(np.asarray(orientation or (), dtype=float), 4)),
    )
