"""What the optimiser's stopping tolerance costs in likelihood, from the true parameters.

Usage: python benchmarks/fit_tolerance.py [--voxels 20000] [--threads 2] [--tolerances ...]

Fits the voxels of ``bench_fit.py`` (reference protocol, SNR 15) started from their true
parameters at each tolerance and at 1e-10, and prints, per tolerance, the share of voxels whose
log-likelihood ends more than 1e-3 and 1e-4 below the tightly converged fit, the mean iterations
and the throughput (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fit import synthetic  # noqa: E402

from noddi_bids.fit.mle import NoddiMLE  # noqa: E402
from noddi_bids.model.scheme import reference_scheme  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tolerances", type=float, nargs="+", default=[1e-5, 3e-5, 1e-4, 3e-4])
    args = parser.parse_args()
    scheme = reference_scheme()
    data, truth = synthetic(args.voxels, np.random.default_rng(0), scheme)
    tight = NoddiMLE(scheme, n_threads=args.threads, tolerance=1e-10)
    converged = tight.fit(data, sigma=1 / 15, init=truth, progress=False).log_likelihood
    print("| tolerance | > 1e-3 below | > 1e-4 below | iterations | voxels/s |")
    print("|---|---|---|---|---|")
    for tolerance in args.tolerances:
        fitter = NoddiMLE(scheme, n_threads=args.threads, tolerance=tolerance)
        start = time.perf_counter()
        fit = fitter.fit(data, sigma=1 / 15, init=truth, progress=False)
        speed = args.voxels / (time.perf_counter() - start)
        below = converged - fit.log_likelihood
        print(f"| {tolerance:g} | {np.mean(below > 1e-3):.2%} | {np.mean(below > 1e-4):.2%} "
              f"| {fit.iterations.mean():.2f} | {speed:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
