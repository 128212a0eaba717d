"""Argument parser of the ``noddi-bids`` BIDS App (argparse only; checks live in config)."""

from __future__ import annotations

import argparse

from noddi_bids import __version__
from noddi_bids.config import ANALYSIS_LEVELS, GRADIENT_CHECKS, MODEL_CHOICES, UsageError
from noddi_bids.model.noddi import D_PAR, GM_D_PAR
from noddi_bids.model.scheme import B0_THRESHOLD


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help formatter that states a default once, and only when there is one to state.

    ``(default: X)`` is appended to an option's help unless the option is a flag (no value:
    ``store_true``, counters), has no default (None: its help says what happens when it is
    left out) or its help already names the default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or action.default is None or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Argument parser that raises :class:`UsageError` (exit 64) instead of exiting with 2."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse hook
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``noddi-bids BIDS_DIR OUTPUT_DIR {participant,group}``.

    Returns
    -------
    argparse.ArgumentParser
        Parser whose errors raise :class:`noddi_bids.config.UsageError`.
    """
    parser = _Parser(
        prog="noddi-bids",
        description=(
            "NODDI maps (ODI, NDI, FWF) from multi-shell diffusion MRI: neural-network "
            "estimation with ONNX Runtime and an optional conventional maximum-likelihood fit."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "bids_dir",
        help="root of the input BIDS dataset: raw, or preprocessed (e.g. QSIPrep's output)",
    )
    parser.add_argument("output_dir", help="folder of the BIDS derivatives written")
    parser.add_argument(
        "analysis_level",
        metavar="{" + ",".join(ANALYSIS_LEVELS) + "}",
        help="participant: maps and tables per participant; group: tables across participants",
    )
    parser.add_argument("--version", action="version", version=f"noddi-bids {__version__}")

    select = parser.add_argument_group("selecting data")
    select.add_argument(
        "--participant-label",
        "--participant_label",
        nargs="+",
        metavar="LABEL",
        help="participants to process (with or without 'sub-'); default: all",
    )
    select.add_argument(
        "--session-label",
        "--session_label",
        nargs="+",
        metavar="LABEL",
        help="sessions to process (with or without 'ses-'); default: all",
    )
    select.add_argument(
        "--bids-filter-file",
        metavar="FILE",
        help='JSON query overrides, e.g. {"dwi": {"acquisition": "multishell", "run": 1}}; '
        "default: all dwi runs (the desc-preproc ones of a preprocessed dataset)",
    )
    select.add_argument(
        "--skip-bids-validation",
        action="store_true",
        help="do not run the BIDS validator on the input",
    )

    model = parser.add_argument_group("estimation")
    model.add_argument(
        "--model",
        default="auto",
        metavar="{" + ",".join(MODEL_CHOICES) + ",PATH.onnx}",
        help="network: auto (shipped or cached for the data's shells, trained once if none), "
        "nn-mle or nn-gt (shipped, for the data's shells), nn-mle-raw or nn-gt-raw (the study's "
        "raw-signal networks, exact reference scheme only) or an ONNX file",
    )
    model.add_argument(
        "--mle",
        action="store_true",
        help="also run the conventional maximum-likelihood fit for comparison",
    )
    model.add_argument(
        "--dicom",
        action="store_true",
        help="also write each ODI/NDI/FWF map as a DICOM series (integers x 1000) for PACS",
    )
    model.add_argument(
        "--dpar",
        type=float,
        default=D_PAR,
        metavar="MM2_PER_S",
        help="intra-neurite parallel diffusivity, mm^2/s",
    )
    model.add_argument(
        "--gm-noddi",
        action="store_true",
        help=f"also estimate grey-matter NODDI (d_par {GM_D_PAR:g} mm^2/s, QSIRecon's gmNODDI) "
        "with every estimator: a second set of maps named model-gmnoddi (a network for it is "
        "trained once per shells with --model auto)",
    )
    model.add_argument(
        "--b0-threshold",
        type=float,
        default=B0_THRESHOLD,
        metavar="S_PER_MM2",
        help="volumes with b <= this value (s/mm^2) count as b = 0",
    )

    model.add_argument(
        "--gradient-check",
        choices=GRADIENT_CHECKS,
        default="warn",
        help="check the b-vectors against the data before estimation (flipped or permuted "
        "axes, from the tensors' spatial coherence): warn with the correction, fix (apply "
        "it), stop (exit with an error) or off",
    )

    tissue = parser.add_argument_group("masks and tissues")
    tissue.add_argument(
        "--synthseg-dir",
        metavar="DIR",
        help="SynthSeg outputs (BIDS derivatives or plain files named sub-<label>...); "
        "default: built-in tissue classification",
    )
    tissue.add_argument(
        "--run-synthseg",
        action="store_true",
        help="run FreeSurfer's mri_synthseg on the mean b = 0 image (must be on PATH)",
    )
    tissue.add_argument(
        "--mask-dir",
        metavar="DIR",
        help="brain masks (sub-<label>[_ses-<label>]..._desc-brain_mask.nii.gz, on the dwi "
        "grid) to use instead of the automatic mask or a preprocessed input's own",
    )

    perf = parser.add_argument_group("execution")
    perf.add_argument("-w", "--work-dir", metavar="DIR", help="Nipype work folder; default: ./work")
    perf.add_argument(
        "--nprocs",
        "--n-cpus",
        type=int,
        metavar="N",
        help="parallel processes (>= 1); default: all cores",
    )
    perf.add_argument(
        "--omp-nthreads",
        type=int,
        metavar="N",
        help="threads per estimation node (>= 1); default: --nprocs",
    )
    perf.add_argument(
        "--mem-gb",
        type=float,
        metavar="GB",
        help="memory available to MultiProc; default: 90%% of the machine's memory",
    )
    perf.add_argument(
        "--use-plugin",
        metavar="FILE.yml",
        help="Nipype plugin YAML, e.g. 'plugin: SLURM' and 'plugin_args: {sbatch_args: ...}'; "
        "default: MultiProc (Linear for one run or --nprocs 1)",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="count", default=0, help="more output (tracebacks on errors)"
    )
    verbosity.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    return parser
