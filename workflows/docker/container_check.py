"""Helpers of ``workflows/docker/build_and_test.sh``: a test dataset and the comparison of runs.

``dataset DIR --shells B1 B2``
    The tiny block dataset (:func:`noddi_bids.example.bids.make_block_dataset`) with the
    reference protocol's directions on the shells ``B1``/``B2`` (s/mm^2) instead of 700/2000.
    Fails if a shipped network covers those shells, since the point is ``--model auto``
    training a network and caching it.
``compare A B [--atol X]``
    Every NIfTI image and TSV table of the derivatives folder ``A`` against the same file in
    ``B`` (the same files must exist in both): equal within ``X`` (default 1e-6). Prints the
    largest difference of each file; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from noddi_bids.example.bids import make_block_dataset
from noddi_bids.model.scheme import Scheme, reference_scheme
from noddi_bids.nn.store import find_model

PATTERNS = ("*.nii.gz", "*.tsv")


def shifted_scheme(shells: Sequence[float]) -> Scheme:
    """Return the reference protocol with its two shells (700, 2000 s/mm^2) moved to `shells`."""
    reference = reference_scheme()
    low, high = shells
    bvals = np.select(
        [reference.bvals > 1000.0, reference.bvals > 0.0], [high, low], reference.bvals
    )
    return Scheme(bvals, reference.bvecs)


def make_dataset(root: Path, shells: Sequence[float]) -> None:
    """Write the block dataset on `shells`; fail if a shipped network already covers them."""
    scheme = shifted_scheme(shells)
    shipped = find_model(scheme, cached=False)
    if shipped is not None:
        sys.exit(f"{shipped.name} covers {scheme.summary()}: choose shells no network covers")
    make_block_dataset(root, scheme=scheme)
    print(f"{root}: {scheme.summary()}")


def _values(path: Path) -> np.ndarray:
    if path.name.endswith(".nii.gz"):
        return np.asarray(nib.load(path).dataobj, dtype=float)
    table = pd.read_csv(path, sep="\t")
    return table.select_dtypes("number").to_numpy(dtype=float)


def compare(first: Path, second: Path, atol: float) -> int:
    """Compare every image and table of two derivatives folders; return the exit status."""
    names = {p.relative_to(first) for pattern in PATTERNS for p in first.rglob(pattern)}
    others = {p.relative_to(second) for pattern in PATTERNS for p in second.rglob(pattern)}
    failures = [f"only in {first}: {n}" for n in sorted(names - others)]
    failures += [f"only in {second}: {n}" for n in sorted(others - names)]
    for name in sorted(names & others):
        a, b = _values(first / name), _values(second / name)
        if a.shape != b.shape:
            failures.append(f"{name}: shapes {a.shape} and {b.shape}")
            continue
        differences = np.abs(a - b)[np.isfinite(a) | np.isfinite(b)]
        largest = float(np.nan_to_num(differences, nan=np.inf).max(initial=0.0))
        print(f"{largest:9.2e}  {name}")
        if largest > atol:
            failures.append(f"{name}: differs by {largest:.3g} > {atol:g}")
    for failure in failures:
        print(f"MISMATCH {failure}", file=sys.stderr)
    print(f"{len(names & others)} files compared, {len(failures)} mismatch(es)")
    return 1 if failures or not names else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset")
    dataset.add_argument("root", type=Path)
    dataset.add_argument("--shells", type=float, nargs=2, default=(1000.0, 2500.0))
    pair = commands.add_parser("compare")
    pair.add_argument("first", type=Path)
    pair.add_argument("second", type=Path)
    pair.add_argument("--atol", type=float, default=1e-6)
    args = parser.parse_args(argv)
    if args.command == "dataset":
        make_dataset(args.root, args.shells)
        return 0
    return compare(args.first, args.second, args.atol)


if __name__ == "__main__":
    sys.exit(main())
