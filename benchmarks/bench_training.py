"""Time of the automatic training (``--model auto``) for shells no shipped network covers.

Usage: python benchmarks/bench_training.py [--threads 2] [--labels mle] [--shells 1000 2500]

Makes a scheme with the given shells (64 well-spread directions each, b = 0 x6) and asks
``noddi_bids.nn.store.resolve_model("auto", ...)`` for a network with an empty cache, exactly
as the app does for a new protocol: training data over random direction sets (with MLE labels
for ``mle``), early-stopped training, the spread head. Prints the time of each stage from the
network's metadata, the whole wall time and the load average before and after.
"""

import argparse
import logging
import os
import tempfile
import time


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--labels", default="mle", choices=("mle", "gt"))
    parser.add_argument("--shells", type=float, nargs="+", default=[1000.0, 2500.0])
    return parser.parse_args()


def main():
    args = _args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ["NODDI_BIDS_CACHE"] = tempfile.mkdtemp(prefix="noddi-bench-training-")
    import numpy as np

    from noddi_bids.model.directions import random_unit_vectors, spread_directions
    from noddi_bids.model.scheme import Scheme
    from noddi_bids.nn.infer import read_metadata
    from noddi_bids.nn.store import AUTO_RECIPE, resolve_model

    rng = np.random.default_rng(0)
    bvals = np.concatenate([np.zeros(6), *[np.full(64, b) for b in args.shells]])
    bvecs = np.concatenate(
        [np.zeros((6, 3)), *[spread_directions(random_unit_vectors(64, rng)) for _ in args.shells]]
    )
    scheme = Scheme(bvals, bvecs)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.2f}, threads {args.threads}")
    print(f"recipe {AUTO_RECIPE}; {scheme.summary()}")
    start = time.perf_counter()
    path = resolve_model("auto", scheme, labels=args.labels, n_threads=args.threads)
    total = time.perf_counter() - start
    record = read_metadata(path).training
    print(
        f"automatic training ({args.labels} labels): {total:.0f} s in all = training data "
        f"{record['synthesis_seconds']:.0f} s + training {record['training_seconds']:.0f} s "
        f"({record['epochs_run']} epochs, best {record['best_epoch']}, validation loss "
        f"{record['best_validation_loss']:.5f}) + spread head {record['spread']['seconds']:.0f} s;"
        f" load average {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    )


if __name__ == "__main__":
    main()
