"""Top-level participant workflow: one sub-workflow per diffusion run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from nipype.pipeline import engine as pe

from noddi_bids.config import Config
from noddi_bids.io.bids import DwiRun
from noddi_bids.io.derivatives import source_uri
from noddi_bids.workflows.dwi import init_dwi_noddi_wf


def init_noddi_bids_wf(
    config: Config,
    runs: Sequence[DwiRun],
    models: Mapping[str, Path],
    gm_models: Mapping[str, Path] | None = None,
) -> pe.Workflow:
    """Build the participant-level workflow of a run of the app.

    Parameters
    ----------
    config : Config
        Validated settings (output folder, work folder, estimators, threads).
    runs : sequence of DwiRun
        Validated diffusion runs (from :func:`noddi_bids.io.bids.collect_dwi_runs`).
    models : mapping
        Scheme hash -> ONNX network resolved for that scheme.
    gm_models : mapping, optional
        Scheme hash -> ONNX network of grey-matter NODDI (``--gm-noddi``).

    Returns
    -------
    nipype.pipeline.engine.Workflow
        ``noddi_bids_wf`` with one ``sub_<label>_wf`` per participant, each holding one
        :func:`~noddi_bids.workflows.dwi.init_dwi_noddi_wf` per run; base folder the work folder.
    """
    workflow = pe.Workflow(name="noddi_bids_wf", base_dir=str(config.work_dir))
    for subject in dict.fromkeys(run.subject for run in runs):
        workflow.add_nodes(
            [
                init_participant_wf(
                    config, [r for r in runs if r.subject == subject], models, gm_models
                )
            ]
        )
    return workflow


def init_participant_wf(
    config: Config,
    runs: Sequence[DwiRun],
    models: Mapping[str, Path],
    gm_models: Mapping[str, Path] | None = None,
) -> pe.Workflow:
    """Build the workflow of one participant (all its sessions and dwi runs).

    Parameters
    ----------
    config : Config
        Validated settings.
    runs : sequence of DwiRun
        The participant's runs.
    models : mapping
        Scheme hash -> ONNX network.
    gm_models : mapping, optional
        Scheme hash -> ONNX network of grey-matter NODDI (``--gm-noddi``).

    Returns
    -------
    nipype.pipeline.engine.Workflow
        ``sub_<label>_wf``.
    """
    workflow = pe.Workflow(name=f"sub_{runs[0].subject}_wf")
    for run in runs:
        sources = [source_uri(config.bids_dir, path) for path in (run.dwi, run.bval, run.bvec)]
        mask_sources = [source_uri(config.bids_dir, run.brain_mask)] if run.brain_mask else []
        workflow.add_nodes(
            [
                init_dwi_noddi_wf(
                    run,
                    models[run.scheme.hash],
                    config.output_dir,
                    sources,
                    mask_sources=mask_sources,
                    mle=config.mle,
                    d_par=config.d_par,
                    gm_model_file=gm_models[run.scheme.hash] if gm_models else None,
                    run_synthseg=config.run_synthseg,
                    omp_nthreads=config.omp_nthreads,
                    dicom=config.dicom,
                    participants_tsv=config.bids_dir / "participants.tsv",
                )
            ]
        )
    return workflow
