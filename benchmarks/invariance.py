"""Invariance of the shipped rotation-invariant networks to the gradient table (docs/validation.md).

Usage: python benchmarks/invariance.py [--threads 2] [--voxels 20000]

For every shipped rotation-invariant network: noise-free signals of tissue drawn uniformly (ODI
0.05-0.8, NDI 0.2-0.9, FWF 0-0.5, random fibre orientations; plus CSF-like voxels with FWF
0.85-1), sampled on a reference table of the network's shells and on three other tables:

- the same table rotated as a whole;
- the table with every direction tilted at random by 3 degrees (SD per axis), as after motion
  correction;
- another well-spread (electrostatic) direction set with the same counts.

The reference tables have the network's shells with 24, 48, 64 or 90 directions for the first,
second, third and fourth shell, b = 0 x 6. Prints, per network and table, the largest and the
99th percentile absolute difference of ODI, NDI and FWF from the reference table's estimates.
"""

import argparse

import numpy as np


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--voxels", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def _table(shells, rng):
    from noddi_bids.model.directions import random_unit_vectors, spread_directions
    from noddi_bids.model.scheme import Scheme

    counts = (24, 48, 64, 90)[: len(shells)]
    bvals, bvecs = [np.zeros(6)], [np.zeros((6, 3))]
    for b, n in zip(shells, counts, strict=True):
        bvals.append(np.full(n, b))
        bvecs.append(spread_directions(random_unit_vectors(n, rng)))
    return Scheme(np.concatenate(bvals), np.concatenate(bvecs))


def main():
    args = _args()
    from noddi_bids.model.directions import perturb_directions, random_rotation
    from noddi_bids.model.scheme import Scheme
    from noddi_bids.nn.infer import OnnxEstimator, read_metadata
    from noddi_bids.nn.store import shipped_models
    from noddi_bids.nn.synth import random_directions, synthesise_signals

    rng = np.random.default_rng(args.seed)
    n_csf = args.voxels // 10
    tissue = np.concatenate([
        rng.uniform([0.05, 0.2, 0.0], [0.8, 0.9, 0.5], (args.voxels - n_csf, 3)),
        rng.uniform([0.05, 0.05, 0.85], [0.95, 0.95, 1.0], (n_csf, 3)),
    ])  # fmt: skip
    fibres = random_directions(tissue.shape[0], rng)
    print("| network | table | max abs diff ODI / NDI / FWF | 99th percentile ODI / NDI / FWF |")
    print("|---|---|---|---|")
    for name, path in shipped_models().items():
        meta = read_metadata(path)
        if meta.features is None:
            continue
        estimator = OnnxEstimator(path, args.threads)
        reference = _table(meta.features.shells, rng)
        weighted = ~reference.b0_mask[:, None]
        tables = {
            "rotated": Scheme(reference.bvals, reference.bvecs @ random_rotation(rng).T),
            "tilted 3 deg": Scheme(reference.bvals, np.where(weighted, perturb_directions(
                np.where(weighted, reference.bvecs, 1.0), 3.0, rng), 0.0)),
            "other set": _table(meta.features.shells, rng),
        }  # fmt: skip
        base = estimator.predict(synthesise_signals(tissue, fibres, reference), reference)
        for label, table in tables.items():
            estimates = estimator.predict(synthesise_signals(tissue, fibres, table), table)
            difference = np.abs(estimates - base)
            largest = " / ".join(f"{v:.4f}" for v in difference.max(axis=0))
            p99 = " / ".join(f"{v:.4f}" for v in np.percentile(difference, 99, axis=0))
            print(f"| {name} | {label} | {largest} | {p99} |")


if __name__ == "__main__":
    main()
