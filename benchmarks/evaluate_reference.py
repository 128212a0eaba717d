"""The study's synthetic evaluation of the shipped networks and the MLE fitter (docs/validation.md).

Usage: python benchmarks/evaluate_reference.py [--threads 2] [--repeats 100] [--snr 15 30 50]
           [--out build/validation] [--figures docs/figures]

Grid ODI, NDI 0.05..0.95 and FWF 0.05..0.45 (step 0.1), fibre along x, 100 noise repeats at
each SNR, reference scheme. Estimators: the shipped rotation-invariant networks of the reference
shells (NN_MLE, NN_GT), the study's raw-signal networks (NN_MLE raw, NN_GT raw, trained at SNR
15 only), MLE (the full conventional fit: grid search, tensor orientation, Levenberg-Marquardt,
known sigma) and, to separate the network from its labels, "MLE from truth": the same fitter
started at the ground truth, which is how the NN_MLE training labels were made. Writes the
per-point TSV and grid-mean summary per SNR, the figures ``validation_bias.png``,
``validation_sd.png``, ``validation_scatter.png`` at the first SNR, and prints each summary as a
Markdown table, then the calibration of the rotation-invariant networks' uncertainty: the share
of the grid's noisy signals whose truth lies within +-1 reported SD of the estimate, per
parameter (68 % for a calibrated Gaussian SD). ``--high-fwf MODEL ...`` instead prints the mean
FWF estimate of networks at FWF 0.7-1 and SNR 15, 30, 50 (beyond the grid's FWF range).
"""

import argparse
import logging
from pathlib import Path

import numpy as np


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--snr", type=float, nargs="+", default=[15.0, 30.0, 50.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("build/validation"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    parser.add_argument(
        "--high-fwf",
        nargs="+",
        metavar="[NAME=]MODEL",
        help="instead: mean FWF estimate of these networks at FWF 0.7-1 and SNR 15-50",
    )
    return parser.parse_args()


def high_fwf_check(specs, threads, seed, n=2000):
    """Print the mean FWF estimate of each network at high FWF and several SNRs.

    ODI and NDI uniform in [0.1, 0.9], random orientations, Rician noise, 2000 signals per cell.
    """
    from noddi_bids.model.noise import add_rician_noise
    from noddi_bids.model.normalise import normalise_by_b0
    from noddi_bids.model.scheme import reference_scheme
    from noddi_bids.nn.infer import OnnxEstimator
    from noddi_bids.nn.store import resolve_model
    from noddi_bids.nn.synth import random_directions, synthesise_signals

    scheme = reference_scheme()
    models = {}
    for spec in specs:
        name, _, model = spec.rpartition("=")
        models[name or model] = OnnxEstimator(resolve_model(model, scheme), threads)
    rng = np.random.default_rng(seed)
    print("| true FWF | SNR | " + " | ".join(models) + " |")
    print("|---|---|" + "---|" * len(models))
    for fwf in (0.7, 0.9, 0.95, 1.0):
        truth = np.column_stack(
            [rng.uniform(0.1, 0.9, n), rng.uniform(0.1, 0.9, n), np.full(n, fwf)]
        )
        clean = synthesise_signals(truth, random_directions(n, rng), scheme)
        for snr in (15, 30, 50):
            signals, _ = normalise_by_b0(add_rician_noise(clean, snr, rng), scheme.b0_mask)
            means = [m.predict(signals, scheme)[:, 2].mean() for m in models.values()]
            print(f"| {fwf} | {snr} | " + " | ".join(f"{v:.3f}" for v in means) + " |")


def main():
    args = _args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.high_fwf:
        high_fwf_check(args.high_fwf, args.threads, args.seed)
        return
    from noddi_bids.fit.mle import NoddiMLE
    from noddi_bids.model.normalise import normalise_by_b0
    from noddi_bids.model.scheme import reference_scheme
    from noddi_bids.nn.evaluate import (
        FIBRE,
        evaluate,
        evaluation_grid,
        mle_estimator,
        network_estimator,
        overall,
        simulate,
    )
    from noddi_bids.nn.figures import bias_quiver, scatter_versus, sd_lines
    from noddi_bids.nn.infer import OnnxEstimator
    from noddi_bids.nn.store import resolve_model

    scheme = reference_scheme()
    grid = evaluation_grid()
    truth = np.repeat(grid, args.repeats, axis=0)
    fitter = NoddiMLE(scheme, n_threads=args.threads)
    networks = {
        "NN_MLE": resolve_model("nn-mle", scheme),
        "NN_GT": resolve_model("nn-gt", scheme),
        "NN_MLE raw": resolve_model("nn-mle-raw", scheme),
        "NN_GT raw": resolve_model("nn-gt-raw", scheme),
    }
    for index, snr in enumerate(args.snr):

        def mle_from_truth(noisy, snr=snr):
            init = {"odi": truth[:, 0], "ndi": truth[:, 1], "fwf": truth[:, 2], "s0": 1.0}
            init["direction"] = np.broadcast_to(np.asarray(FIBRE), truth.shape)
            return fitter.fit(noisy, sigma=1.0 / snr, init=init).parameters

        estimators = {
            name: network_estimator(OnnxEstimator(path, args.threads), scheme)
            for name, path in networks.items()
        }
        estimators["MLE"] = mle_estimator(scheme, snr, n_threads=args.threads)
        estimators["MLE from truth"] = mle_from_truth
        result = evaluate(scheme, estimators, grid, args.repeats, snr, args.seed)
        out = args.out / f"snr{snr:g}"
        out.mkdir(parents=True, exist_ok=True)
        result.table.to_csv(out / "evaluation.tsv", sep="\t", index=False, float_format="%.6g")
        summary = overall(result.table)
        summary.to_csv(out / "summary.tsv", sep="\t", float_format="%.6g")
        if index == 0:
            shown = ("NN_MLE", "NN_GT", "MLE")
            study = result.table[result.table["estimator"].isin(shown)]
            study_estimates = {k: v for k, v in result.estimates.items() if k in shown}
            bias_quiver(study, args.figures / "validation_bias.png")
            sd_lines(study, args.figures / "validation_sd.png")
            scatter_versus(study_estimates, "MLE", args.figures / "validation_scatter.png")
        print(f"\nSNR {snr:g}\n")
        print(
            "| estimator | ODI mean abs bias | ODI mean SD | NDI mean abs bias | NDI mean SD "
            "| FWF mean abs bias | FWF mean SD |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, row in summary.iterrows():
            cells = " | ".join(
                f"{row[f'{p}_{k}']:.4f}" for p in ("odi", "ndi", "fwf") for k in ("abs_bias", "sd")
            )
            print(f"| {name} | {cells} |")
        noisy, _ = normalise_by_b0(simulate(scheme, grid, args.repeats, snr, args.seed),
                                   scheme.b0_mask)  # fmt: skip
        for name in ("NN_MLE", "NN_GT"):
            estimates, spread = OnnxEstimator(networks[name], args.threads).predict_with_spread(
                noisy, scheme
            )
            inside = np.mean(np.abs(estimates - truth) <= spread, axis=0)
            print(f"\n{name} at SNR {snr:g}: truth within +-1 SD for ODI / NDI / FWF: "
                  + " / ".join(f"{100 * v:.1f} %" for v in inside))  # fmt: skip


if __name__ == "__main__":
    main()
