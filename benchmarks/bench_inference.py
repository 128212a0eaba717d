"""Inference throughput of a NODDI network, and the fp32 GEMM peak it is bounded by.

Usage: python benchmarks/bench_inference.py [--model nn-mle] [--threads 2] [--voxels 1000000]

Prints voxels/s of :meth:`noddi_bids.nn.infer.OnnxEstimator.predict` from signals normalised by
b = 0 on the reference scheme (best of several runs over the given number of voxels): for a
rotation-invariant network (``nn-mle``, ``nn-gt``) that includes the feature extraction (the
per-shell spherical-harmonic fits, in NumPy), for a raw-signal network (``nn-mle-raw``) the
network alone. Then the floating-point rate this implies, and the float32 matrix-multiply rate
of NumPy measured in the same run on matrices of the same shapes (the same FLOPs: the fits'
projection and the network's layers) and on a large square product, so the share of the
machine's GEMM peak can be read off. Set OMP/OpenBLAS threads through --threads (exported
before NumPy loads).
"""

import argparse
import os
import sys
import time


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="nn-mle", help="nn-mle, nn-gt, nn-mle-raw, nn-gt-raw or an .onnx path"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--voxels", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk", type=int, nargs="*", default=[1024, 2048, 4096, 65_536])
    return parser.parse_args()


def _best(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    args = _args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import numpy as np

    from noddi_bids.model.scheme import reference_scheme
    from noddi_bids.nn.features import design
    from noddi_bids.nn.infer import OnnxEstimator
    from noddi_bids.nn.store import resolve_model
    from noddi_bids.nn.synth import make_training_set

    scheme = reference_scheme()
    estimator = OnnxEstimator(resolve_model(args.model, scheme), n_threads=args.threads)
    sample = make_training_set(scheme, 2**16, labels="gt", seed=1).inputs
    signals = np.resize(sample, (args.voxels, sample.shape[1]))
    shapes = []  # (rows, columns) of every matrix a voxel's row vector is multiplied by
    features = estimator.metadata.features
    if features is not None:
        shapes.append(design(scheme, features).projection.shape)
    widths = [estimator.metadata.n_inputs, 120, 120, 120, 3]
    shapes += list(zip(widths[:-1], widths[1:], strict=True))
    flops_per_voxel = 2 * sum(a * b for a, b in shapes)

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs visible, "
        f"load average {os.getloadavg()[0]:.2f}, threads {args.threads}"
    )
    print(
        f"model {estimator.path.name} ({estimator.metadata.labels} labels, "
        f"{estimator.metadata.describe()}), {flops_per_voxel} FLOP/voxel, {args.voxels} voxels"
    )
    estimator.predict(signals[:100_000], scheme)
    best_rate = 0.0
    for chunk in args.chunk:
        seconds = _best(
            lambda c=chunk: estimator.predict(signals, scheme, chunk_size=c), args.repeats
        )
        rate = args.voxels / seconds
        best_rate = max(best_rate, rate)
        print(
            f"ONNX Runtime chunk {chunk:>7}: {rate:,.0f} voxels/s "
            f"({rate * flops_per_voxel / 1e9:.1f} GFLOP/s)"
        )

    rng = np.random.default_rng(0)
    rows = 65_536
    weights = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
    inputs = [rng.standard_normal((rows, w.shape[0]), dtype=np.float32) for w in weights]

    def layer_gemms():
        for x, w in zip(inputs, weights, strict=True):
            x @ w

    seconds = _best(layer_gemms, args.repeats * 3)
    layer_rate = rows * flops_per_voxel / seconds / 1e9
    square = rng.standard_normal((2048, 2048), dtype=np.float32)
    seconds = _best(lambda: square @ square, args.repeats)
    square_rate = 2 * 2048**3 / seconds / 1e9
    peak = max(layer_rate, square_rate)
    print(
        f"NumPy fp32 GEMM, same shapes ({rows} rows, same FLOPs per voxel): "
        f"{layer_rate:.1f} GFLOP/s = {layer_rate * 1e9 / flops_per_voxel:,.0f} voxels/s bound"
    )
    print(f"NumPy fp32 GEMM, 2048^3: {square_rate:.1f} GFLOP/s")
    achieved = best_rate * flops_per_voxel / 1e9
    print(
        f"best ONNX Runtime: {best_rate:,.0f} voxels/s = {achieved:.1f} GFLOP/s = "
        f"{100 * achieved / peak:.0f}% of the measured fp32 GEMM peak ({peak:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
