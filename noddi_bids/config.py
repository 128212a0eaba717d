"""The validated settings of one noddi-bids run, built once from the command line.

Nothing else in the package reads ``sys.argv``: :func:`noddi_bids.cli.parser.build_parser`
parses, :meth:`Config.from_namespace` checks and normalises, and the workflows only see the
resulting frozen :class:`Config`.

Errors carry the exit code of the BIDS App execution specification where one applies
(:class:`AppError` and subclasses); the CLI turns them into one line and that code.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from noddi_bids.model.noddi import D_PAR, GM_D_PAR
from noddi_bids.model.scheme import B0_THRESHOLD

#: Analysis levels of the BIDS App.
ANALYSIS_LEVELS = ("participant", "group")
#: Named model choices of ``--model`` (anything else must be a path to an ``.onnx`` file): the
#: network for the data's shells (shipped or cached, trained once if none), the shipped
#: rotation-invariant networks by label type, and the study's raw-signal networks of the exact
#: reference scheme (:mod:`noddi_bids.nn.store`).
MODEL_CHOICES = ("auto", "nn-mle", "nn-gt", "nn-mle-raw", "nn-gt-raw")
#: What ``--gradient-check`` does when the b-vectors disagree with the data: warn with the
#: correction, apply it, stop; or skip the check.
GRADIENT_CHECKS = ("warn", "fix", "stop", "off")
#: Nipype plugins run by default: MultiProc for more than one process, Linear otherwise.
DEFAULT_PLUGIN = "MultiProc"


class AppError(Exception):
    """An error the command line reports as one line with a specific exit code."""

    exit_code = 1


class InvalidDatasetError(AppError):
    """The input folder is not a valid BIDS dataset (BIDS App code 16)."""

    exit_code = 16


class AnalysisLevelError(AppError):
    """Unknown analysis level (BIDS App code 17)."""

    exit_code = 17


class EmptySelectionError(AppError):
    """Participant/session labels or filters select nothing (BIDS App code 18)."""

    exit_code = 18


class UsageError(AppError):
    """Bad command-line usage (code 64, ``EX_USAGE``)."""

    exit_code = 64


class MissingInputError(AppError):
    """A required input file does not exist (code 66, ``EX_NOINPUT``)."""

    exit_code = 66


class InputError(AppError):
    """An input exists but cannot be used (unreadable, wrong shape, wrong scheme): code 1."""


@dataclass(frozen=True)
class Config:
    """Settings of one run (see ``noddi-bids --help`` for each option).

    Attributes
    ----------
    bids_dir, output_dir, work_dir : Path
        Absolute input dataset, derivatives folder and Nipype work folder.
    analysis_level : str
        ``"participant"`` or ``"group"``.
    participant_labels, session_labels : tuple of str
        Selected labels without the ``sub-``/``ses-`` prefix (empty: all).
    bids_filters : dict
        NiPreps-style query overrides, ``{"dwi": {entity: value}}``.
    nprocs, omp_nthreads : int
        Parallel Nipype processes and threads per heavy node.
    mem_gb : float or None
        Memory the MultiProc scheduler may use, GB.
    model : str
        ``auto``, ``nn-mle``, ``nn-gt`` or an absolute path to an ONNX file.
    mle : bool
        Also run the conventional maximum-likelihood fit.
    dicom : bool
        Also write the maps as DICOM series.
    synthseg_dir, mask_dir : Path or None
        Folders holding SynthSeg outputs / brain masks.
    run_synthseg : bool
        Run FreeSurfer's ``mri_synthseg`` on the mean b = 0 image.
    b0_threshold : float
        Volumes with b <= this value (s/mm^2) are b = 0.
    skip_bids_validation : bool
        Skip the BIDS validator.
    d_par : float
        Intra-neurite parallel diffusivity, mm^2/s.
    gradient_check : str
        ``warn``, ``fix``, ``stop`` or ``off`` (:data:`GRADIENT_CHECKS`).
    gm_noddi : bool
        Also estimate grey-matter NODDI (d_par :data:`~noddi_bids.model.noddi.GM_D_PAR`).
    plugin : str or None
        Nipype plugin from ``--use-plugin`` (``plugin_args`` its arguments); None: see
        :meth:`execution_plugin`.
    verbosity : int
        0 normal, > 0 more (tracebacks on errors), < 0 quieter.
    """

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    work_dir: Path
    participant_labels: tuple[str, ...] = ()
    session_labels: tuple[str, ...] = ()
    bids_filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    model: str = "auto"
    mle: bool = False
    dicom: bool = False
    synthseg_dir: Path | None = None
    mask_dir: Path | None = None
    run_synthseg: bool = False
    b0_threshold: float = B0_THRESHOLD
    skip_bids_validation: bool = False
    d_par: float = D_PAR
    gradient_check: str = "warn"
    gm_noddi: bool = False
    plugin: str | None = None
    plugin_args: dict[str, Any] = field(default_factory=dict)
    verbosity: int = 0

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> Config:
        """Validate parsed arguments and build the configuration.

        Parameters
        ----------
        args : argparse.Namespace
            Output of :func:`noddi_bids.cli.parser.build_parser`.

        Returns
        -------
        Config
            The validated settings. The output folder is checked but not created.

        Raises
        ------
        AppError
            With the exit code matching the first problem found.
        """
        level = str(args.analysis_level)
        if level not in ANALYSIS_LEVELS:
            raise AnalysisLevelError(
                f"unknown analysis level {level!r}; choose one of {', '.join(ANALYSIS_LEVELS)}."
            )
        bids_dir = Path(args.bids_dir).expanduser().absolute()
        if not bids_dir.is_dir():
            raise MissingInputError(f"{bids_dir}: BIDS folder does not exist.")
        output_dir = Path(args.output_dir).expanduser().absolute()
        if output_dir == bids_dir:
            raise UsageError("the output folder must differ from the BIDS folder.")
        check_writable_folder(output_dir)
        for option, value in (("--nprocs", args.nprocs), ("--omp-nthreads", args.omp_nthreads)):
            if value is not None and value < 1:
                raise UsageError(f"{option} {value}: must be >= 1 (leave it out for the default).")
        nprocs = args.nprocs or os.cpu_count() or 1
        omp = args.omp_nthreads or nprocs
        if args.mem_gb is not None and args.mem_gb <= 0:
            raise UsageError("--mem-gb must be > 0.")
        if not 0 < args.dpar < 0.01:
            raise UsageError(f"--dpar {args.dpar:g} is not a diffusivity in mm^2/s (e.g. 1.7e-3).")
        if args.gm_noddi and abs(args.dpar - GM_D_PAR) <= 1e-6 * GM_D_PAR:
            raise UsageError(
                f"--gm-noddi adds maps with d_par = {GM_D_PAR:g} mm^2/s, the --dpar given: "
                "leave out one of them."
            )
        if args.b0_threshold < 0:
            raise UsageError("--b0-threshold must be >= 0 (s/mm^2).")
        if args.run_synthseg and args.synthseg_dir is not None:
            raise UsageError("use either --synthseg-dir or --run-synthseg, not both.")
        plugin, plugin_args = _plugin_settings(args.use_plugin)
        work_dir = Path(args.work_dir or Path.cwd() / "work").expanduser().absolute()
        return cls(
            bids_dir=bids_dir,
            output_dir=output_dir,
            analysis_level=level,
            work_dir=work_dir,
            participant_labels=_strip_labels(args.participant_label, "sub-"),
            session_labels=_strip_labels(args.session_label, "ses-"),
            bids_filters=_read_filters(args.bids_filter_file),
            nprocs=nprocs,
            omp_nthreads=min(omp, nprocs),
            mem_gb=args.mem_gb,
            model=_model_spec(args.model),
            mle=bool(args.mle),
            dicom=bool(args.dicom),
            synthseg_dir=_existing_dir(args.synthseg_dir, "--synthseg-dir"),
            mask_dir=_existing_dir(args.mask_dir, "--mask-dir"),
            run_synthseg=bool(args.run_synthseg),
            b0_threshold=float(args.b0_threshold),
            skip_bids_validation=bool(args.skip_bids_validation),
            d_par=float(args.dpar),
            gradient_check=str(args.gradient_check),
            gm_noddi=bool(args.gm_noddi),
            plugin=plugin,
            plugin_args=plugin_args,
            verbosity=int(args.verbose) - int(args.quiet),
        )

    def execution_plugin(self, n_runs: int) -> tuple[str, dict[str, Any]]:
        """Nipype plugin and arguments for a participant run of ``n_runs`` dwi runs.

        The ``--use-plugin`` choice when given. Otherwise MultiProc with ``nprocs`` processes
        when there are several runs to process in parallel, and Linear for a single run or
        ``--nprocs 1``: the heavy nodes of one run already use ``omp_nthreads`` threads, and
        Linear saves the start of worker processes (seconds per run).
        """
        if self.plugin is not None:
            return self.plugin, dict(self.plugin_args)
        if self.nprocs == 1 or n_runs == 1:
            return "Linear", {}
        # forkserver: forking a parent whose numba/torch thread pools already ran can deadlock
        args: dict[str, Any] = {
            "n_procs": self.nprocs,
            "raise_insufficient": False,
            "mp_context": "forkserver",
        }
        if self.mem_gb is not None:
            args["memory_gb"] = self.mem_gb
        return DEFAULT_PLUGIN, args


def check_writable_folder(path: Path) -> None:
    """Check that ``path`` is, or can become, a writable folder, without creating it.

    The nearest existing ancestor is probed with a temporary file (removed at once), which also
    catches read-only file systems where ``os.access`` would say yes to root.

    Raises
    ------
    InputError
        If ``path`` (or an ancestor) is a file, or the folder cannot be written.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{path}: output path is not a folder ({probe} is a file).")
    try:
        handle, name = tempfile.mkstemp(prefix=".noddi-bids-probe-", dir=probe)
    except OSError as err:
        raise InputError(f"{path}: output folder is not writable ({err.strerror}).") from err
    os.close(handle)
    os.unlink(name)


def _strip_labels(labels: list[str] | None, prefix: str) -> tuple[str, ...]:
    cleaned = [label.removeprefix(prefix) for label in labels or []]
    if any(not label.isalnum() for label in cleaned):
        raise UsageError(f"labels must be alphanumeric (got {' '.join(labels or [])}).")
    return tuple(dict.fromkeys(cleaned))


def _existing_dir(value: str | None, option: str) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise MissingInputError(f"{path}: {option} folder does not exist.")
    return path


def _model_spec(value: str) -> str:
    if value in MODEL_CHOICES:
        return value
    path = Path(value).expanduser().absolute()
    if path.suffix != ".onnx":
        raise UsageError(
            f"--model {value!r}: choose one of {', '.join(MODEL_CHOICES)} or a path "
            "to a .onnx file."
        )
    if not path.is_file():
        raise MissingInputError(f"{path}: ONNX model file does not exist.")
    return str(path)


def _read_filters(value: str | None) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    path = Path(value)
    if not path.is_file():
        raise MissingInputError(f"{path}: --bids-filter-file does not exist.")
    try:
        filters = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: --bids-filter-file is not valid JSON ({err}).") from err
    if not isinstance(filters, dict) or not all(isinstance(v, dict) for v in filters.values()):
        raise UsageError(
            f'{path}: --bids-filter-file must map a query name to entities, e.g. {{"dwi": '
            '{"acquisition": "multishell"}}.'
        )
    unknown = sorted(set(filters) - {"dwi"})
    if unknown:
        raise UsageError(f"{path}: unknown query {unknown[0]!r} in --bids-filter-file (use 'dwi').")
    return filters


def _plugin_settings(value: str | None) -> tuple[str | None, dict[str, Any]]:
    """Nipype plugin and arguments from ``--use-plugin`` YAML; ``(None, {})`` to decide later."""
    if value is None:
        return None, {}
    path = Path(value)
    if not path.is_file():
        raise MissingInputError(f"{path}: --use-plugin file does not exist.")
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"{path}: --use-plugin is not valid YAML ({err}).") from err
    if not isinstance(settings, dict) or not isinstance(settings.get("plugin"), str):
        raise UsageError(
            f"{path}: --use-plugin needs a 'plugin' name, e.g. 'plugin: MultiProc' with "
            "'plugin_args: {n_procs: 8}'."
        )
    plugin_args = settings.get("plugin_args") or {}
    if not isinstance(plugin_args, dict):
        raise UsageError(f"{path}: 'plugin_args' must be a mapping.")
    return settings["plugin"], dict(plugin_args)
