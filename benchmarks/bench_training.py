"""Time of the automatic training (``--model auto``) and the accuracy of the model it makes.

Usage: python benchmarks/bench_training.py [--threads 2] [--labels mle] [--repeats 100]
           [--out build/bench_training]

Trains a network for the reference scheme exactly as ``--model auto`` does for a new protocol
(:func:`noddi_bids.nn.store.train_auto_model`: 2^18 samples, MLE labelling, early-stopped
training), timing each stage, then runs the study's synthetic evaluation on the automatic model,
the shipped full-recipe model with the same labels and the MLE fitter, and prints the grid-mean
|bias| and SD per parameter of each (TSVs and figures go to --out).
"""

import argparse
import logging
import os
import time
from pathlib import Path


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--labels", default="mle", choices=("mle", "gt"))
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("build/bench_training"))
    return parser.parse_args()


def main():
    args = _args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from noddi_bids.model.scheme import reference_scheme
    from noddi_bids.nn.evaluate import evaluate, mle_estimator, network_estimator, overall
    from noddi_bids.nn.figures import bias_quiver, sd_lines
    from noddi_bids.nn.infer import OnnxEstimator
    from noddi_bids.nn.store import AUTO_RECIPE, shipped_models, train_auto_model

    scheme = reference_scheme()
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"auto_{args.labels}.onnx"
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, threads {args.threads}")
    print(f"recipe {AUTO_RECIPE}")
    start = time.perf_counter()
    train_auto_model(scheme, target, labels=args.labels, n_threads=args.threads, progress=False)
    total = time.perf_counter() - start
    auto = OnnxEstimator(target, n_threads=args.threads)
    record = auto.metadata.training
    print(
        f"automatic training: {total:.0f} s in all = synthesis + labelling "
        f"{record['synthesis_seconds']:.0f} s + training {record['training_seconds']:.0f} s "
        f"({record['epochs_run']} epochs, best {record['best_epoch']}, validation loss "
        f"{record['best_validation_loss']:.5f}); load average now {os.getloadavg()[0]:.2f}"
    )
    full = OnnxEstimator(shipped_models()[f"nn-{args.labels}"], n_threads=args.threads)
    print(f"full recipe: validation loss {full.metadata.training['best_validation_loss']:.5f}")
    estimators = {
        f"NN_{args.labels.upper()} auto": network_estimator(auto, scheme),
        f"NN_{args.labels.upper()} full": network_estimator(full, scheme),
        "MLE": mle_estimator(scheme, n_threads=args.threads),
    }
    result = evaluate(scheme, estimators, n_repeats=args.repeats)
    summary = overall(result.table)
    result.table.to_csv(args.out / "evaluation.tsv", sep="\t", index=False, float_format="%.6g")
    summary.to_csv(args.out / "summary.tsv", sep="\t", float_format="%.6g")
    bias_quiver(result.table, args.out / "bias.png")
    sd_lines(result.table, args.out / "sd.png")
    print(summary.round(4).to_string())


if __name__ == "__main__":
    main()
