"""Gradient-table check: false alarms, detection and speed (docs/qc.md).

Usage: python benchmarks/gradient_check.py [--snr 20] [--seed 0]

The example phantom (``python -m noddi_bids.example make``) with anatomical fibre orientations
(``--fibres anatomical``: along the white matter, radial in the cortex), simulated with each of
20 correct gradient tables (the reference protocol; rotated as a whole, seeds 0-5; rotated and
tilted as after motion correction, seeds 0-6, the example's default; other well-spread
direction sets, seeds 0-5) through the fitter's exact tables, with Rician noise at ``--snr``.
Prints, for each table, the check's verdict on the table as given (must be ``ok``) and on the
table with x flipped, y flipped, z flipped, and x and y swapped (must be ``error``, naming the
correction), with the track ratio; then the verdict on the example's default random orientation
field (no spatial structure: ``inconclusive`` expected) and the time of the check on about
100,000 brain voxels (the phantom on a 2.6 mm grid), of the check alone and of the app's whole
step (read the image, brain mask, normalise, check).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from noddi_bids.example.bids import example_scheme, write_bids_dwi
from noddi_bids.example.phantom import (
    REFERENCE_S0,
    crop_to_brain,
    downsample,
    phantom_parameters,
    tissue_probabilities,
)
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.reference import normalise_dwi
from noddi_bids.nn.synth import synthesise_signals
from noddi_bids.qc.gradients import candidate_transforms, check_gradient_table
from noddi_bids.vocabulary import PARAMETERS

#: The 20 correct tables: (example table, seed).
TABLES = (
    [("reference", 0)]
    + [("rotated", seed) for seed in range(6)]
    + [("motion", seed) for seed in range(7)]
    + [("other", seed) for seed in range(6)]
)
#: Errors of the issue, as the stored table's axes in terms of the true ones.
ERRORS = ("(-x, y, z)", "(x, -y, z)", "(x, y, -z)", "(y, x, z)")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snr", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def phantom(voxel_size: float, fibres: str, seed: int):
    """The example's maps on a grid (as ``make_example`` builds them) and its affine."""
    fine, fine_affine = crop_to_brain(*tissue_probabilities())
    fractions, affine = downsample(fine, fine_affine, voxel_size)
    return phantom_parameters(fractions, np.random.default_rng(seed), fibres), affine


def simulate(maps, scheme, snr: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy dwi data of the phantom (fast tables instead of the exact quadrature)."""
    brain = maps["brain"]
    data = np.zeros((brain.size, scheme.n_measurements))
    rows = np.flatnonzero(brain)
    parameters = np.column_stack([maps[p].reshape(-1)[rows] for p in PARAMETERS])
    directions = maps["direction"].reshape(-1, 3)[rows]
    data[rows] = maps["s0"].reshape(-1)[rows, None] * synthesise_signals(
        parameters, directions, scheme
    )
    noisy = add_rician_noise(data, snr, rng, s0=REFERENCE_S0)
    return noisy.reshape(*brain.shape, scheme.n_measurements)


def check(data, scheme, zooms):
    reference = normalise_dwi(data.astype(np.float32), scheme.b0_mask)
    return check_gradient_table(reference.signals, reference.mask, scheme, zooms)


def main() -> int:
    args = _args()
    rng = np.random.default_rng(args.seed)
    transforms = {t.name: t for t in candidate_transforms()}
    maps, affine = phantom(3.0, "anatomical", args.seed)
    zooms = tuple(float(z) for z in np.abs(np.diag(affine)[:3]))
    print(f"## Anatomical example, SNR {args.snr:g}: verdict (track ratio)\n")
    print("| table | seed | as given | x flipped | y flipped | z flipped | x, y swapped |")
    print("|---|---|---|---|---|---|---|")
    false_alarms, missed, ratios_ok, ratios_error = 0, 0, [], []
    for table, seed in TABLES:
        scheme = example_scheme(table, seed)
        data = simulate(maps, scheme, args.snr, rng)
        found = check(data, scheme, zooms)
        false_alarms += found.verdict != "ok"
        ratios_ok.append(found.ratio)
        cells = [f"{found.verdict} ({found.ratio:.2f}, contrast {found.contrast:.2f})"]
        for error in ERRORS:
            wrong = check(data, transforms[error].apply(scheme), zooms)
            right = wrong.verdict == "error" and wrong.correction.name == error
            missed += not right
            ratios_error.append(wrong.ratio)
            cells.append(f"{wrong.verdict}: {wrong.correction.name} ({wrong.ratio:.2f})")
        print(f"| {table} | {seed} | " + " | ".join(cells) + " |")
    print(f"\nFalse alarms: {false_alarms} of {len(TABLES)} correct tables (largest ratio "
          f"{max(ratios_ok):.3f}); errors missed or misnamed: {missed} of "
          f"{len(TABLES) * len(ERRORS)} (smallest ratio {min(ratios_error):.3f}).\n")  # fmt: skip

    random_maps, _ = phantom(3.0, "random", args.seed)
    scheme = example_scheme("motion", args.seed)
    found = check(simulate(random_maps, scheme, args.snr, rng), scheme, zooms)
    print(f"Default example (random orientation field), table as given: {found.verdict} "
          f"(ratio {found.ratio:.3f}, contrast {found.contrast:.3f}); with x flipped: "
          f"{check(simulate(random_maps, scheme, args.snr, rng), transforms['(-x, y, z)'].apply(scheme), zooms).verdict}.\n")  # noqa: E501  # fmt: skip

    big, big_affine = phantom(2.6, "anatomical", args.seed)
    data = simulate(big, scheme, args.snr, rng).astype(np.float32)
    reference = normalise_dwi(data, scheme.b0_mask)
    big_zooms = tuple(float(z) for z in np.abs(np.diag(big_affine)[:3]))
    check_gradient_table(reference.signals, reference.mask, scheme, big_zooms)  # compiled
    start = time.perf_counter()
    found = check_gradient_table(reference.signals, reference.mask, scheme, big_zooms)
    alone = time.perf_counter() - start
    from noddi_bids.cli.run import check_gradient_table as app_step
    from noddi_bids.io.bids import DwiRun

    with tempfile.TemporaryDirectory() as folder:
        dwi = write_bids_dwi(Path(folder), {"sub": "01"}, data, big_affine, scheme)
        run = DwiRun(dwi=dwi, bval=dwi, bvec=dwi, entities={"sub": "01"}, metadata={},
                     scheme=scheme, shape=data.shape)  # fmt: skip
        start = time.perf_counter()
        app_step(run, "warn")
        whole = time.perf_counter() - start
    print(f"Speed: {reference.signals.shape[0]} brain voxels ({found.n_seeds} seeds, verdict "
          f"{found.verdict}): check {alone:.2f} s; the app's step (read, mask, normalise, "
          f"check) {whole:.2f} s.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
