"""Generate the shipped reference scheme ``noddi_bids/data/schemes/reference.{bval,bvec}``.

The reference protocol is the NODDI toolbox example scheme (docs/method.md, section 6):
81 volumes, 9 b = 0 volumes interleaved with 24 directions at b = 700 s/mm^2 and 48
directions at b = 2000 s/mm^2.

Directions are placed per shell by electrostatic repulsion with antipodal symmetry
(DIPY's ``disperse_charges``, which minimises the sum over pairs of
``1/|v_i - v_j| + 1/|v_i + v_j|``), starting from seeded random points, so the output
is deterministic. Each vector is given a canonical sign (z >= 0).

Acquisition order: 9 blocks of 9 volumes, each a b = 0 volume followed by 8 diffusion
volumes; the diffusion volumes alternate b = 700, 2000, 2000, b = 700, ... so both
shells are spread through the run (b = 0 at volumes 0, 9, ..., 72).

Minimum angle between directions (antipodal, i.e. ``arccos max |v_i . v_j|``) achieved
by this script with the seeds below: b = 700 (24 directions) 29.07 deg, b = 2000 (48
directions) 20.86 deg. The script fails if they drop below ``MIN_ANGLE_DEG``.

Usage::

    python tools/make_reference_scheme.py            # rewrite the package data
    python tools/make_reference_scheme.py --check    # verify the shipped files
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from dipy.core.sphere import HemiSphere, disperse_charges

#: (b-value in s/mm^2, number of directions, random seed) per shell.
SHELLS = ((700.0, 24, 700), (2000.0, 48, 2000))
N_B0 = 9
#: Lower bounds on the minimum antipodal angle between directions, degrees.
MIN_ANGLE_DEG = {700.0: 20.0, 2000.0: 14.0}
#: Repulsion schedule: (iterations, step constant) passed to ``disperse_charges``.
SCHEDULE = ((5000, 0.2), (5000, 0.05))
DEFAULT_OUTDIR = Path(__file__).resolve().parents[1] / "noddi_bids" / "data" / "schemes"
STEM = "reference"


def shell_directions(n: int, seed: int) -> np.ndarray:
    """Return `n` unit vectors (n, 3) well spread on the hemisphere, z >= 0."""
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((n, 3))
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    hemi = HemiSphere(xyz=start)
    for iters, const in SCHEDULE:
        hemi, _ = disperse_charges(hemi, iters, const=const)
    vecs = hemi.vertices / np.linalg.norm(hemi.vertices, axis=1, keepdims=True)
    vecs[vecs[:, 2] < 0] *= -1
    return vecs


def min_angle_deg(vecs: np.ndarray) -> float:
    """Return the smallest antipodal angle (degrees) between distinct rows of `vecs`."""
    dots = np.abs(vecs @ vecs.T)
    np.fill_diagonal(dots, 0.0)
    return float(np.degrees(np.arccos(np.clip(dots.max(), 0.0, 1.0))))


def build() -> tuple[np.ndarray, np.ndarray, dict[float, float]]:
    """Build the reference scheme.

    Returns
    -------
    bvals : ndarray, shape (81,)
        b-values in s/mm^2.
    bvecs : ndarray, shape (81, 3)
        Unit directions (zeros for b = 0).
    angles : dict
        Minimum antipodal angle (degrees) per shell b-value.

    """
    (b_low, n_low, seed_low), (b_high, n_high, seed_high) = SHELLS
    low = shell_directions(n_low, seed_low)
    high = shell_directions(n_high, seed_high)
    angles = {b_low: min_angle_deg(low), b_high: min_angle_deg(high)}
    for b, angle in angles.items():
        if angle < MIN_ANGLE_DEG[b]:
            raise RuntimeError(f"b={b:g}: minimum angle {angle:.2f} deg < {MIN_ANGLE_DEG[b]}")

    # Diffusion volumes: b_low, b_high, b_high, b_low, ... (ratio 24:48 = 1:2).
    n_dw = n_low + n_high
    is_low = np.arange(n_dw) % 3 == 0
    dw_bvals = np.where(is_low, b_low, b_high)
    dw_bvecs = np.empty((n_dw, 3))
    dw_bvecs[is_low] = low
    dw_bvecs[~is_low] = high

    per_block = n_dw // N_B0
    bvals, bvecs = [], []
    for block in range(N_B0):
        sl = slice(block * per_block, (block + 1) * per_block)
        bvals += [0.0, *dw_bvals[sl]]
        bvecs += [np.zeros((1, 3)), dw_bvecs[sl]]
    return np.array(bvals), np.vstack(bvecs), angles


def format_files(bvals: np.ndarray, bvecs: np.ndarray) -> tuple[str, str]:
    """Return the FSL text of the bval (integers) and bvec (3 rows, 6 decimals) files."""
    bval_text = " ".join(f"{int(b)}" for b in bvals) + "\n"
    bvec_text = "\n".join(" ".join(f"{x:.6f}" for x in row) for row in bvecs.T) + "\n"
    return bval_text, bvec_text


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the reference scheme files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=DEFAULT_OUTDIR, help="output folder")
    parser.add_argument("--check", action="store_true", help="verify files instead of writing")
    args = parser.parse_args(argv)

    bvals, bvecs, angles = build()
    texts = dict(zip(("bval", "bvec"), format_files(bvals, bvecs), strict=True))
    for b, angle in angles.items():
        print(f"b={b:g}: minimum angle between directions {angle:.2f} deg")
    for ext, text in texts.items():
        path = args.outdir / f"{STEM}.{ext}"
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                print(f"{path} differs from the generated scheme", file=sys.stderr)
                return 1
            print(f"{path} is up to date")
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
