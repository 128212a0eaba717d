"""DICOM -> NIfTI + bval/bvec with dcm2niix, the binary of the PyPI ``dcm2niix`` package.

dcm2niix knows the vendors' b-value and b-vector conventions (Siemens CSA, GE and Philips
private tags, the standard MR Diffusion attributes). The binary is taken from the installed
Python package, never from ``PATH``: Debian's older dcm2niix writes zero b-values or b-vectors
for some files the PyPI build reads correctly (see ``docs/inline.md``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: dcm2niix options: uncompressed NIfTI (fast), BIDS sidecar without patient data, fixed name,
#: no sub-folders, all files of the folder are one series, the user's defaults file ignored,
#: original integers kept.
DCM2NIIX_OPTIONS = (
    "-z",
    "n",
    "-b",
    "y",
    "-ba",
    "y",
    "-f",
    "series",
    "-d",
    "0",
    "-a",
    "y",
    "-g",
    "i",
    "-l",
    "o",
)
#: Output lines kept in the failure record.
_OUTPUT_LINES = 40


class ConversionError(ValueError):
    """dcm2niix gave no usable diffusion image (the message says what was wrong)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class Converted:
    """The files dcm2niix wrote for one series.

    Attributes
    ----------
    image, bval, bvec, sidecar : Path
        4-D NIfTI, FSL/BIDS b-values and b-vectors (image frame), BIDS JSON sidecar.
    output : str
        dcm2niix's messages (last lines).
    """

    image: Path
    bval: Path
    bvec: Path
    sidecar: Path
    output: str


def dcm2niix_binary() -> Path:
    """Path of the dcm2niix binary inside the installed PyPI ``dcm2niix`` package.

    Raises
    ------
    ConversionError
        If the package is not installed or its binary is missing.
    """
    try:
        import dcm2niix
    except ImportError as err:
        raise ConversionError(
            "the dcm2niix Python package is not installed (pip install dcm2niix)"
        ) from err
    binary = Path(dcm2niix.bin)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise ConversionError(f"the dcm2niix package has no executable binary at {binary}")
    return binary


def convert_series(folder: Path, out_dir: Path, binary: Path | None = None) -> Converted:
    """Convert the instances of one series into a 4-D NIfTI with its b-values and b-vectors.

    Parameters
    ----------
    folder : Path
        The series' DICOM files (and nothing else).
    out_dir : Path
        Empty folder for dcm2niix's outputs (created).
    binary : Path, optional
        dcm2niix to run; default :func:`dcm2niix_binary`.

    Returns
    -------
    Converted

    Raises
    ------
    ConversionError
        dcm2niix failed, wrote no image, wrote several (the series mixes acquisitions), or
        found no b-values.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [str(binary or dcm2niix_binary()), *DCM2NIIX_OPTIONS, "-o", str(out_dir), str(folder)]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    output = "\n".join((result.stdout + result.stderr).splitlines()[-_OUTPUT_LINES:])
    images = sorted(out_dir.glob("*.nii"))
    if result.returncode != 0 and not images:
        raise ConversionError(f"dcm2niix failed (exit status {result.returncode})", output)
    if not images:
        raise ConversionError("dcm2niix wrote no image", output)
    if len(images) > 1:
        raise ConversionError(
            f"the series mixes {len(images)} acquisitions (dcm2niix wrote {len(images)} images)",
            output,
        )
    image = images[0]
    stem = image.name.removesuffix(".nii")
    bval, bvec = out_dir / f"{stem}.bval", out_dir / f"{stem}.bvec"
    if not (bval.is_file() and bvec.is_file()):
        raise ConversionError(
            "no b-values or b-vectors: dcm2niix found no readable diffusion attributes",
            output,
        )
    return Converted(image, bval, bvec, out_dir / f"{stem}.json", output)
