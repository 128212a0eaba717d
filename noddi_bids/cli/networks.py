"""Command-line entry points ``noddi-bids-train`` and ``noddi-bids-evaluate``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from noddi_bids import __version__
from noddi_bids.cli.parser import HelpFormatter
from noddi_bids.model.noddi import D_ISO, D_PAR
from noddi_bids.model.scheme import B0_THRESHOLD, Scheme, read_scheme, reference_scheme
from noddi_bids.nn.synth import (
    DEFAULT_SAMPLES,
    DEFAULT_SNR,
    DEFAULT_SNR_RANGE,
    DEFAULT_TRAINING_SCHEMES,
    LABEL_TYPES,
    ParameterLimits,
)
from noddi_bids.vocabulary import ESTIMATORS, MAPS, MLE, NETWORK_ESTIMATORS, PARAMETERS

LOGGER = logging.getLogger("noddi_bids")
#: Name of the maximum-likelihood fit in evaluation tables and figures.
MLE_NAME = ESTIMATORS[MLE].display


def _snr(text: str) -> float | tuple[float, float]:
    """Parse ``15`` or a range ``10:30``."""
    try:
        parts = [float(part) for part in text.split(":")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"SNR must be a number or LOW:HIGH, got {text!r}") from err
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"SNR must be a number or LOW:HIGH, got {text!r}")


def _int_range(text: str) -> tuple[int, int]:
    """Parse ``LOW:HIGH`` integers."""
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH integers, got {text!r}") from err
    return low, high


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"noddi-bids {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug log and tracebacks")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads; all cores when omitted"
    )


def train_parser() -> argparse.ArgumentParser:
    """Argument parser of ``noddi-bids-train``."""
    defaults = ParameterLimits()
    parser = argparse.ArgumentParser(
        prog="noddi-bids-train",
        description="Train a NODDI network and export it to ONNX: by default a rotation-"
        "invariant network for the shells of a scheme (any direction set with those shells), "
        "or with --inputs signal the study's raw-signal network for one exact scheme.",
        formatter_class=HelpFormatter,
    )
    scheme = parser.add_argument_group("scheme")
    scheme.add_argument(
        "--bval", type=Path, help="FSL/BIDS .bval file; the reference scheme when omitted"
    )
    scheme.add_argument(
        "--bvec", type=Path, help="FSL/BIDS .bvec file; the reference scheme when omitted"
    )
    scheme.add_argument(
        "--shells",
        type=float,
        nargs="+",
        metavar="B",
        help="invariant inputs: the shells' b-values (s/mm^2) instead of --bval/--bvec",
    )
    scheme.add_argument(
        "--b0-threshold",
        type=float,
        default=B0_THRESHOLD,
        help="volumes with b <= this value (s/mm^2) count as b = 0",
    )
    scheme.add_argument(
        "--inputs",
        choices=("invariant", "signal"),
        default="invariant",
        help="rotation-invariant features of the shells, or the raw signals of the exact scheme",
    )
    scheme.add_argument(
        "--directions",
        type=_int_range,
        default=None,
        metavar="LOW:HIGH",
        help="invariant inputs: directions per shell to train for (default 6:160)",
    )
    scheme.add_argument(
        "--schemes",
        type=int,
        default=DEFAULT_TRAINING_SCHEMES,
        help="invariant inputs: random direction sets the samples are spread over",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, help="output .onnx file (required unless --labels-only)"
    )
    output.add_argument(
        "--labels",
        choices=LABEL_TYPES,
        default="mle",
        help="training labels: mle (maximum-likelihood fits of the noisy signals), gt (the "
        "simulated ground truth) or hybrid (a weighted sum of both losses)",
    )
    output.add_argument("--save-mle-labels", type=Path, help="save the MLE labels (.npz) for reuse")
    output.add_argument(
        "--labels-only",
        action="store_true",
        help="stop after computing and saving the MLE labels (with --save-mle-labels)",
    )
    output.add_argument(
        "--mle-labels",
        type=Path,
        help="reuse MLE labels saved by --save-mle-labels for the same data settings",
    )
    output.add_argument(
        "--hybrid-weight",
        type=float,
        default=0.5,
        help="hybrid labels: weight in [0, 1] of the ground-truth term (the MLE term gets 1 - it)",
    )
    data = parser.add_argument_group("training data")
    data.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help="simulated signals (90%% training, 10%% validation)",
    )
    data.add_argument(
        "--snr",
        type=_snr,
        default=None,
        help=f"SNR at b = 0, or LOW:HIGH drawn per sample (default {DEFAULT_SNR_RANGE[0]:g}:"
        f"{DEFAULT_SNR_RANGE[1]:g} log-uniformly for invariant inputs, {DEFAULT_SNR:g} for signal)",
    )
    data.add_argument("--seed", type=int, default=0, help="seed of data, split and weights")
    for name in PARAMETERS:
        data.add_argument(
            f"--{name}-limits",
            type=float,
            nargs=2,
            metavar=("LOW", "HIGH"),
            default=getattr(defaults, name),
            help=f"uniform sampling limits of {MAPS[name].display}",
        )
    data.add_argument(
        "--d-par", type=float, default=D_PAR, help="intra-neurite parallel diffusivity, mm^2/s"
    )
    data.add_argument(
        "--d-iso", type=float, default=D_ISO, help="free-water (isotropic) diffusivity, mm^2/s"
    )
    fit = parser.add_argument_group("optimiser")
    fit.add_argument("--epochs", type=int, default=500, help="maximum number of epochs")
    fit.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many epochs without a lower validation loss; all --epochs when "
        "omitted",
    )
    fit.add_argument(
        "--batch-size", type=int, default=1000, help="training samples per optimiser step"
    )
    fit.add_argument(
        "--learning-rate", type=float, default=5e-4, help="learning rate of the Adam optimiser"
    )
    fit.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="PyTorch device: auto (CUDA when present, else CPU), cpu or cuda",
    )
    _common(parser)
    return parser


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``noddi-bids-train``."""
    args = train_parser().parse_args(argv)
    return _run(args.verbose, lambda: _train(args, argv))


def _train(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    if (args.bval is None) != (args.bvec is None):
        raise ValueError("give both --bval and --bvec, or neither (reference scheme)")
    if args.shells and (args.bval or args.inputs == "signal"):
        raise ValueError("--shells replaces --bval/--bvec, for invariant inputs only")
    scheme = (
        reference_scheme()
        if args.bval is None
        else read_scheme(args.bval, args.bvec, b0_threshold=args.b0_threshold)
    )
    if args.inputs == "invariant" and (args.labels_only or args.mle_labels or
                                       args.save_mle_labels):  # fmt: skip
        raise ValueError("saved MLE labels (--labels-only, --*-mle-labels) are for --inputs signal")
    if args.labels_only:
        _label_only(args, scheme)
        return
    from noddi_bids.nn.train import TrainingSettings, train_invariant_model

    settings = TrainingSettings(
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        hybrid_weight=args.hybrid_weight,
        seed=args.seed,
        device=args.device,
        n_threads=args.threads,
    )
    if args.out is None:
        raise ValueError("--out is required (the .onnx file to write)")
    words = ["noddi-bids-train", *(sys.argv[1:] if argv is None else argv)]
    limits = ParameterLimits(args.odi_limits, args.ndi_limits, args.fwf_limits)
    if args.inputs == "invariant":
        from noddi_bids.nn.features import FeatureSpec

        shells = tuple(args.shells) if args.shells else tuple(scheme.shells)
        directions = (args.directions,) * len(shells) if args.directions else ()
        spec = FeatureSpec(shells=shells, directions=directions)
        if not args.shells:
            spec.check(scheme)  # the given scheme must be one the network will apply to
        snr = args.snr if args.snr is not None else DEFAULT_SNR_RANGE
        if np.ndim(snr) == 0:
            snr = (snr, snr)
        result = train_invariant_model(
            spec,
            args.out,
            labels=args.labels,
            n_samples=args.samples,
            snr=snr,
            n_schemes=args.schemes,
            limits=limits,
            data_seed=args.seed,
            settings=settings,
            d_par=args.d_par,
            d_iso=args.d_iso,
            n_threads=args.threads,
            command=shlex.join(words),
        )
    else:
        result = _train_signal_network(args, scheme, settings, limits, shlex.join(words))
    LOGGER.info(
        "Wrote %s (%d epochs, best validation loss %.6g at epoch %d)",
        args.out,
        result.epochs_run,
        result.best_validation_loss,
        result.best_epoch,
    )


def _train_signal_network(args, scheme, settings, limits, command):
    from noddi_bids.nn.train import train_model

    return train_model(
        scheme,
        args.out,
        labels=args.labels,
        n_samples=args.samples,
        snr=args.snr if args.snr is not None else DEFAULT_SNR,
        limits=limits,
        data_seed=args.seed,
        settings=settings,
        d_par=args.d_par,
        d_iso=args.d_iso,
        n_threads=args.threads,
        command=command,
        mle_labels_file=args.mle_labels,
        save_mle_labels=args.save_mle_labels,
    )


def evaluate_parser() -> argparse.ArgumentParser:
    """Argument parser of ``noddi-bids-evaluate``."""
    parser = argparse.ArgumentParser(
        prog="noddi-bids-evaluate",
        description=(
            "The study's synthetic evaluation: ODI and NDI 0.05..0.95, FWF 0.05..0.45 (step "
            "0.1), fibre along x, repeated noise; writes per-point mean/bias/SD (TSV), the "
            "grid-averaged summary and figures."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[NAME=]MODEL",
        help="network to evaluate: nn-mle, nn-gt or an .onnx path (repeatable)",
    )
    parser.add_argument("--no-mle", action="store_true", help="leave out the MLE fitter")
    parser.add_argument(
        "--mle-sigma",
        choices=("known", "b0"),
        default="known",
        help="MLE noise sigma: the simulated one, or estimated from the b = 0 images",
    )
    parser.add_argument("--bval", type=Path, help="scheme .bval; the reference scheme when omitted")
    parser.add_argument("--bvec", type=Path, help="scheme .bvec; the reference scheme when omitted")
    parser.add_argument("--repeats", type=int, default=100, help="noise repeats per point")
    parser.add_argument("--snr", type=float, default=DEFAULT_SNR, help="SNR relative to b = 0")
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for TSVs")
    parser.add_argument("--figures", type=Path, help="folder for PNGs; --out-dir when omitted")
    parser.add_argument("--prefix", default="validation_", help="file name prefix of the PNGs")
    _common(parser)
    return parser


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``noddi-bids-evaluate``."""
    args = evaluate_parser().parse_args(argv)
    return _run(args.verbose, lambda: _evaluate(args))


def _model_name(spec: str) -> tuple[str, str]:
    """``NAME=MODEL`` -> (NAME, MODEL); shipped names -> NN_MLE/NN_GT; paths -> file stem."""
    if "=" in spec:
        name, model = spec.split("=", 1)
        return name, model
    from noddi_bids.nn.store import NAMED_LABELS

    if spec in NAMED_LABELS:
        return ESTIMATORS[NETWORK_ESTIMATORS[NAMED_LABELS[spec]]].display, spec
    return Path(spec).stem, spec


def _evaluate(args: argparse.Namespace) -> None:
    from noddi_bids.nn.evaluate import evaluate, mle_estimator, network_estimator, overall
    from noddi_bids.nn.figures import bias_quiver, scatter_versus, sd_lines
    from noddi_bids.nn.infer import OnnxEstimator
    from noddi_bids.nn.store import resolve_model

    scheme = reference_scheme() if args.bval is None else read_scheme(args.bval, args.bvec)
    estimators = {}
    for spec in args.model:
        name, model = _model_name(spec)
        path = resolve_model(model, scheme, train=False)
        estimators[name] = network_estimator(OnnxEstimator(path, args.threads), scheme)
    if not args.no_mle:
        snr = args.snr if args.mle_sigma == "known" else None
        estimators[MLE_NAME] = mle_estimator(scheme, snr, n_threads=args.threads)
    if not estimators:
        raise ValueError("nothing to evaluate: give --model and/or leave out --no-mle")
    result = evaluate(scheme, estimators, n_repeats=args.repeats, snr=args.snr, seed=args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(args.out_dir / "evaluation.tsv", sep="\t", index=False, float_format="%.6g")
    summary = overall(result.table)
    summary.to_csv(args.out_dir / "summary.tsv", sep="\t", float_format="%.6g")
    LOGGER.info("Mean |bias| and mean SD over the grid:\n%s", summary.round(4).to_string())
    figures = args.figures or args.out_dir
    bias_quiver(result.table, figures / f"{args.prefix}bias.png")
    sd_lines(result.table, figures / f"{args.prefix}sd.png")
    if MLE_NAME in result.estimates and len(result.estimates) > 1:
        scatter_versus(result.estimates, MLE_NAME, figures / f"{args.prefix}scatter.png")


def _label_only(args: argparse.Namespace, scheme: Scheme) -> None:
    from noddi_bids.nn.synth import make_training_set

    if args.save_mle_labels is None or args.labels == "gt":
        raise ValueError("--labels-only needs --save-mle-labels and mle or hybrid labels")
    make_training_set(
        scheme,
        args.samples,
        labels=args.labels,
        limits=ParameterLimits(args.odi_limits, args.ndi_limits, args.fwf_limits),
        snr=args.snr if args.snr is not None else DEFAULT_SNR,
        seed=args.seed,
        d_par=args.d_par,
        d_iso=args.d_iso,
        n_threads=args.threads,
        save_mle_labels=args.save_mle_labels,
    )


def _run(verbose: bool, job: Callable[[], None]) -> int:
    """Run `job` with logging set up; errors become one line and exit status 1."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        job()
    except (ValueError, OSError) as err:
        if verbose:
            raise
        LOGGER.error("%s", err)
        return 1
    return 0
