"""Command line ``python -m noddi_bids.example {make,compare,dicom} ...``.

Usage (one line: make, run the app, report the error against the truth)::

    python -m noddi_bids.example make ex && noddi-bids ex ex/derivatives/noddi participant
        --synthseg-dir ex/derivatives/synthseg -w work && python -m noddi_bids.example compare
        ex ex/derivatives/noddi

``dicom`` writes a dwi run as a DICOM diffusion series, as a scanner sends it, for the inline
node (``docs/inline.md``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from noddi_bids.example.bids import TABLES, make_example
from noddi_bids.example.compare import compare_with_truth
from noddi_bids.example.phantom import FIBRES


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m noddi_bids.example {make,compare} ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m noddi_bids.example",
        description="Make the example phantom dataset, or compare the app's maps with its truth.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write the example BIDS dataset")
    make.add_argument("out_dir")
    make.add_argument("--voxel-size", type=float, default=3.0, help="mm (default 3)")
    make.add_argument("--snr", type=float, default=20.0, help="SNR at b = 0 (default 20)")
    make.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    make.add_argument(
        "--table",
        choices=TABLES,
        default="motion",
        help="gradient table: the reference protocol as a motion-corrected subject has it "
        "(rotated, each direction tilted; default), the reference itself, rotated as a whole, "
        "or another well-spread direction set",
    )
    make.add_argument(
        "--fibres",
        choices=FIBRES,
        default="random",
        help="fibre orientations: a smooth random field (default), or along the anatomy (white "
        "matter's sheets and tubes, radial in the cortex), as the gradient-table check needs",
    )
    compare = commands.add_parser("compare", help="error of the app's maps against the truth")
    compare.add_argument("example_dir")
    compare.add_argument("derivatives_dir")
    dicom = commands.add_parser("dicom", help="write a dwi run as a DICOM diffusion series")
    dicom.add_argument("dwi", help="the run's .nii.gz (its .bval and .bvec beside it)")
    dicom.add_argument("out_dir", help="series folder to create")
    dicom.add_argument(
        "--enhanced",
        action="store_true",
        help="one Enhanced MR multi-frame file (default: classic)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "make":
        make_example(
            Path(args.out_dir), args.voxel_size, args.snr, args.seed, table=args.table,
            fibres=args.fibres,
        )  # fmt: skip
        return 0
    if args.command == "dicom":
        return _write_dicom(Path(args.dwi), Path(args.out_dir), args.enhanced)
    table = compare_with_truth(Path(args.example_dir), Path(args.derivatives_dir))
    if table.empty:
        sys.stderr.write("no maps or tissue masks found to compare\n")
        return 1
    sys.stdout.write(table.to_string(index=False, float_format="%.3f") + "\n")
    return 0


def _write_dicom(dwi: Path, out_dir: Path, enhanced: bool) -> int:
    import nibabel as nib

    from noddi_bids.example.dicom import write_dwi_series
    from noddi_bids.model.scheme import SchemeError, read_scheme

    stem = dwi.name.removesuffix(".gz").removesuffix(".nii")
    try:
        image = nib.load(dwi)
        scheme = read_scheme(
            dwi.with_name(f"{stem}.bval"), dwi.with_name(f"{stem}.bvec"), n_volumes=image.shape[3]
        )
    except (OSError, SchemeError, IndexError) as err:
        sys.stderr.write(f"{dwi}: {err}\n")
        return 1
    files = write_dwi_series(
        out_dir,
        np.asarray(image.dataobj),
        image.affine,
        scheme.bvals,
        scheme.bvecs,
        enhanced=enhanced,
    )
    logging.getLogger(__name__).info("Wrote %d DICOM files to %s", len(files), out_dir)
    return 0
