"""Throughput and memory of the batched Rician MLE fitter on the reference protocol at SNR 15.

Usage: python benchmarks/bench_fit.py [--voxels 20000] [--memory-voxels 200000] [--threads 2]

Prints voxels/s with the grid-search start and started from given (ground-truth) parameters,
iterations, and the peak resident memory of a separate process fitting ``--memory-voxels``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time

import numpy as np

from noddi_bids.fit.mle import NoddiMLE
from noddi_bids.model.noddi import noddi_signal
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import reference_scheme


def synthetic(n, rng, scheme):
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    truth = {
        "odi": rng.uniform(0.05, 0.95, n),
        "ndi": rng.uniform(0.05, 0.95, n),
        "fwf": rng.uniform(0.05, 0.45, n),
        "direction": directions,
    }
    unique = min(n, 20000)  # the exact model is slow; tile a pool of distinct voxels
    pool = noddi_signal(*(truth[k][:unique] for k in ("odi", "ndi", "fwf", "direction")),
                        scheme.bvals, scheme.bvecs)  # fmt: skip
    signal = np.resize(pool, (n, scheme.n_measurements))
    truth = {k: np.resize(v, (n, *v.shape[1:])) for k, v in truth.items()}
    return add_rician_noise(signal, 15, rng), truth


def timed_fit(fitter, data, **kwargs):
    start = time.perf_counter()
    fit = fitter.fit(data, sigma=1 / 15, progress=False, **kwargs)
    return fit, time.perf_counter() - start


def memory_child(n, threads):
    scheme = reference_scheme()
    data, _ = synthetic(n, np.random.default_rng(1), scheme)
    NoddiMLE(scheme, n_threads=threads).fit(data, sigma=1 / 15, progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=20000)
    parser.add_argument("--memory-voxels", type=int, default=200000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return
    scheme = reference_scheme()
    fitter = NoddiMLE(scheme, n_threads=args.threads)
    data, truth = synthetic(args.voxels, np.random.default_rng(0), scheme)
    timed_fit(fitter, data[:8])  # compile / load the cached kernels
    print(f"machine: {platform.processor() or platform.machine()}, threads: {args.threads}")
    print(f"scheme: {scheme.summary()}, SNR 15, {args.voxels} voxels")
    fit, seconds = timed_fit(fitter, data, init=truth)
    print(
        f"started from given parameters: {args.voxels / seconds:9.0f} voxels/s "
        f"(mean iterations {fit.iterations.mean():.1f}, converged {fit.converged.mean():.2%})"
    )
    fit, seconds = timed_fit(fitter, data)
    print(
        f"grid-search start ({fitter.n_starts} starts): {args.voxels / seconds:9.0f} voxels/s "
        f"(mean iterations {fit.iterations.mean():.1f}, converged {fit.converged.mean():.2%})"
    )
    peak = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(args.memory_voxels),
         "--threads", str(args.threads)],
        check=True, capture_output=True, text=True,
    ).stdout.split()[-1]  # fmt: skip
    print(f"peak memory fitting {args.memory_voxels} voxels (grid start): {float(peak):.2f} GB")


if __name__ == "__main__":
    main()
