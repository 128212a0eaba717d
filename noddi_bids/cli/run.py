"""Entry point of the ``noddi-bids`` BIDS App: check inputs, build the workflow, run it.

Every input is validated before anything is written: a bad dataset fails fast with its exit
code (see ``docs/usage.md``) and the output folder is not even created.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from noddi_bids import __version__
from noddi_bids.cli.parser import build_parser
from noddi_bids.cli.worker import LEVEL_ENV
from noddi_bids.config import (
    AppError,
    Config,
    EmptySelectionError,
    InputError,
    MissingInputError,
    check_writable_folder,
)
from noddi_bids.io.bids import DwiRun, collect_dwi_runs, parse_entities, validate_dataset
from noddi_bids.io.derivatives import write_dataset_description, write_json, write_tsv
from noddi_bids.model.noddi import D_ISO, GM_D_PAR
from noddi_bids.tissue.stats import DECIMALS, SUMMARY_COLUMNS, group_columns, group_tables

LOGGER = logging.getLogger("noddi_bids")
#: Modules imported once by the forkserver of MultiProc workers instead of by every worker.
WORKER_PRELOAD = (
    "noddi_bids.cli.worker",
    "nipype.pipeline.engine",
    "noddi_bids.interfaces.derivatives",
    "noddi_bids.interfaces.dwi",
    "noddi_bids.interfaces.noddi",
    "noddi_bids.interfaces.tissue",
    "noddi_bids.nn.infer",
    "noddi_bids.fit.mle",
)
#: Relative tolerance between ``--dpar`` and the d_par a network was trained with.
_DPAR_RTOL = 1e-6


def main(argv: Sequence[str] | None = None) -> int:
    """Run the BIDS App and return its exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success; 16, 17, 18, 64, 66 or 1 on failure (see ``docs/usage.md``).
    """
    verbosity = 0
    try:
        arguments = list(sys.argv[1:] if argv is None else argv)
        config = Config.from_namespace(build_parser().parse_args(arguments))
        verbosity = config.verbosity
        _setup_logging(verbosity)
        if config.analysis_level == "participant":
            run_participant(config, command=["noddi-bids", *arguments])
        else:
            run_group(config)
    except AppError as err:
        LOGGER.debug("Traceback", exc_info=True)
        sys.stderr.write(f"noddi-bids: error: {err}\n")
        return err.exit_code
    except Exception as err:  # noqa: BLE001 - the CLI reports every failure in one line
        if verbosity > 0:
            LOGGER.exception("noddi-bids failed")
        sys.stderr.write(f"noddi-bids: error: {type(err).__name__}: {err}\n")
        return 1
    return 0


def _setup_logging(verbosity: int) -> None:
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    level = max(logging.DEBUG, logging.INFO - 10 * verbosity)
    for handler in list(LOGGER.handlers):
        LOGGER.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    logging.getLogger("bidsschematools").setLevel(logging.WARNING)
    nipype_level = "INFO" if verbosity > 0 else "WARNING"
    os.environ[LEVEL_ENV] = nipype_level
    nipype_config.set("logging", "workflow_level", nipype_level)
    nipype_config.set("logging", "interface_level", nipype_level)
    nipype_logging.update_logging(nipype_config)


def run_participant(config: Config, command: Sequence[str] = ()) -> None:
    """Validate every input, then build and run the participant workflow.

    Parameters
    ----------
    config : Config
        Validated settings.
    command : sequence of str
        The command line, recorded in the participant reports.

    Raises
    ------
    AppError
        For bad input (nothing written) or a failed workflow.
    """
    start = time.perf_counter()
    if not config.skip_bids_validation:
        validate_dataset(config.bids_dir)
    runs = collect_dwi_runs(config)
    if config.gradient_check != "off":
        runs = [check_gradient_table(run, config.gradient_check) for run in runs]
    if config.run_synthseg and shutil.which("mri_synthseg") is None:
        raise InputError(
            "--run-synthseg needs FreeSurfer's mri_synthseg (FreeSurfer >= 7.3) on PATH; "
            "install it or pass --synthseg-dir with existing SynthSeg outputs."
        )
    models = resolve_models(config, runs)
    gm_models = resolve_models(config, runs, GM_D_PAR) if config.gm_noddi else None
    check_writable_folder(config.output_dir)
    LOGGER.info("Inputs checked in %.1f s.", time.perf_counter() - start)

    from nipype import config as nipype_config

    from noddi_bids.workflows.base import init_noddi_bids_wf

    config.output_dir.mkdir(parents=True, exist_ok=True)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    plugin, plugin_args = config.execution_plugin(len(runs))
    if plugin_args.get("mp_context") == "forkserver":
        # MultiProc workers fork from a forkserver that has imported the interfaces once
        multiprocessing.set_forkserver_preload(list(WORKER_PRELOAD))
    try:
        workflow = init_noddi_bids_wf(config, runs, models, gm_models)
        workflow.config["execution"].update(
            {
                "crashdump_dir": str(config.output_dir / "logs"),
                "crashfile_format": "txt",
                # MultiProc polls its workers; the default 2 s per hop dominates short graphs
                "poll_sleep_duration": 0.05,
            }
        )
        nipype_config.set("execution", "crashfile_format", "txt")
        try:
            LOGGER.info("Running with Nipype's %s plugin %s.", plugin, plugin_args or "")
            workflow.run(plugin=plugin, plugin_args=plugin_args)
        except RuntimeError as err:
            logs = config.output_dir / "logs"
            crashed = sorted(path.name for path in logs.glob("crash-*"))
            raise AppError(
                f"the workflow failed: {len(crashed)} node(s) crashed, reports in {logs} "
                f"(first: {crashed[0] if crashed else err})."
            ) from err
    finally:
        from noddi_bids.reports import write_participant_reports

        write_dataset_description(config.output_dir, config.bids_dir)
        subjects = list(dict.fromkeys(run.subject for run in runs))
        write_participant_reports(
            config.output_dir, subjects, command=list(command), work_dir=config.work_dir
        )
    LOGGER.info(
        "Participant level done: %d run(s) in %.1f s; derivatives in %s.",
        len(runs),
        time.perf_counter() - start,
        config.output_dir,
    )


def check_gradient_table(run: DwiRun, action: str) -> DwiRun:
    """Check a run's b-vectors against its data (:mod:`noddi_bids.qc.gradients`) and act.

    Parameters
    ----------
    run : DwiRun
        A validated run.
    action : {"warn", "fix", "stop"}
        On an error: log a warning naming the correction, apply the correction, or stop.

    Returns
    -------
    DwiRun
        The run with its verdict (``gradient_check``) and, when fixed, the corrected scheme.

    Raises
    ------
    InputError
        With ``stop``, when the table is in error (nothing written yet).
    """
    import nibabel as nib
    import numpy as np

    from noddi_bids.model.reference import normalise_dwi
    from noddi_bids.qc.gradients import check_gradient_table as check

    start = time.perf_counter()
    image = nib.load(run.dwi)
    region = None
    if run.brain_mask is not None:
        region = np.asarray(nib.load(run.brain_mask).dataobj) > 0
    reference = normalise_dwi(image.get_fdata(dtype=np.float32), run.scheme.b0_mask, region)
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    found = check(reference.signals, reference.mask, run.scheme, zooms)  # type: ignore[arg-type]
    record = found.to_dict()
    LOGGER.info("%s: gradient-table check: %s (%.1f s).", run.bvec.name, found.summary(),
                time.perf_counter() - start)  # fmt: skip
    if found.verdict != "error":
        return dataclasses.replace(run, gradient_check={**record, "Applied": False})
    note = ""
    if found.correction.words == "x flipped" and np.linalg.det(image.affine[:3, :3]) > 0:
        note = (" (as FSL-format b-vectors of an image stored with a positive determinant are; "
                "noddi-bids reads b-vectors in the image axes)")  # fmt: skip
    if action == "stop":
        raise InputError(
            f"{run.bvec}: {found.summary()}{note}; correct the b-vectors or rerun with "
            "--gradient-check fix."
        )
    if action == "fix":
        LOGGER.warning("%s: %s%s; applying the correction %s.", run.bvec, found.summary(), note,
                       found.correction.name)  # fmt: skip
        return dataclasses.replace(
            run,
            scheme=found.correction.apply(run.scheme),
            gradient_check={**record, "Applied": True},
        )
    LOGGER.warning("%s: %s%s; the maps use the table as given: rerun with --gradient-check fix "
                   "to apply %s, or correct the file.", run.bvec, found.summary(), note,
                   found.correction.name)  # fmt: skip
    return dataclasses.replace(run, gradient_check={**record, "Applied": False})


def resolve_models(
    config: Config, runs: Sequence[DwiRun], d_par: float | None = None
) -> dict[str, Path]:
    """Resolve the network of every scheme once (may train one for ``--model auto``).

    Parameters
    ----------
    config : Config
        Settings (``model``, ``d_par``).
    runs : sequence of DwiRun
        Validated runs.
    d_par : float, optional
        Intra-neurite diffusivity the networks must have been trained with, mm^2/s (default
        ``config.d_par``; :data:`~noddi_bids.model.noddi.GM_D_PAR` for ``--gm-noddi``).

    Returns
    -------
    dict
        Scheme hash -> ONNX file.

    Raises
    ------
    InputError
        If the model is unreadable, was trained for another scheme or another d_par.
    """
    from noddi_bids.nn.infer import ModelError, OnnxEstimator, SchemeMismatchError
    from noddi_bids.nn.store import resolve_model

    labels = "gt" if config.model in ("nn-gt", "nn-gt-raw") else "mle"
    d_par = config.d_par if d_par is None else d_par
    option = "--dpar" if d_par == config.d_par else "--gm-noddi"
    models: dict[str, Path] = {}
    for run in runs:
        if run.scheme.hash in models:
            continue
        try:
            path = Path(
                resolve_model(config.model, run.scheme, d_par=d_par, d_iso=D_ISO, labels=labels)
            )
            estimator = OnnxEstimator(path)
            estimator.check_scheme(run.scheme)
        except (ModelError, SchemeMismatchError) as err:
            raise InputError(f"{run.dwi.name}: {err}") from err
        except FileNotFoundError as err:
            raise MissingInputError(str(err)) from err
        trained = float(estimator.metadata.d_par)
        if abs(trained - d_par) > _DPAR_RTOL * d_par:
            raise InputError(
                f"{path}: network trained with d_par = {trained:g} mm^2/s but {option} needs "
                f"{d_par:g}; use --model auto to train a matching network."
            )
        LOGGER.info("%s: model %s (%s).", run.name, path, run.scheme.summary())
        models[run.scheme.hash] = path
    return models


def run_group(config: Config) -> None:
    """Collect the participants' tissue tables into group tables.

    Writes ``group_tissue_stats.tsv`` (long format) and ``group_summary.tsv`` in the output
    folder.

    Parameters
    ----------
    config : Config
        Settings (output folder, participant/session labels).

    Raises
    ------
    MissingInputError
        If there are no participant tables.
    EmptySelectionError
        If the labels select none of them.
    """
    tables = sorted(config.output_dir.glob("sub-*/**/dwi/*_desc-tissue_stats.tsv"))
    if not tables:
        raise MissingInputError(
            f"{config.output_dir}: no participant tissue tables (*_desc-tissue_stats.tsv); run "
            "the participant level first."
        )
    found = {parse_entities(path.name)["sub"] for path in tables}
    unknown = sorted(set(config.participant_labels) - found)
    if unknown:
        raise EmptySelectionError(
            f"participant(s) {', '.join(unknown)} have no tissue table in {config.output_dir}."
        )
    selected = []
    for path in tables:
        entities = parse_entities(path.name)
        entities.pop("desc", None)
        if config.participant_labels and entities["sub"] not in config.participant_labels:
            continue
        if config.session_labels and entities.get("ses") not in config.session_labels:
            continue
        try:
            table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: unreadable tissue table ({err}).") from err
        entities["sub"] = f"sub-{entities['sub']}"
        selected.append(({"participant_id": entities.pop("sub"), **entities}, table))
    if not selected:
        raise EmptySelectionError("the session labels select no tissue table.")
    long, summary = group_tables(selected)
    for table, name, columns in (
        (long, "group_tissue_stats", group_columns(long)),
        (summary, "group_summary", SUMMARY_COLUMNS),
    ):
        write_tsv(table.round(DECIMALS), config.output_dir / f"{name}.tsv")
        write_json(columns, config.output_dir / f"{name}.json")
    from noddi_bids.reports import write_group_report

    write_group_report(config.output_dir)
    LOGGER.info(
        "Group level: %d table(s) -> %s (noddi-bids %s).",
        len(selected),
        config.output_dir / "group_summary.tsv",
        __version__,
    )


if __name__ == "__main__":
    sys.exit(main())
