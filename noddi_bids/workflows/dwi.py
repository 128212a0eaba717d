"""NODDI workflow of one diffusion run: reference, estimators, tissues, derivatives."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from noddi_bids.interfaces.derivatives import WriteEstimate, WriteReference, WriteTissue
from noddi_bids.interfaces.dicom import DicomRunExport
from noddi_bids.interfaces.dwi import NormaliseDwi
from noddi_bids.interfaces.noddi import MLEEstimate, NNEstimate
from noddi_bids.interfaces.qc import FitQuality
from noddi_bids.interfaces.tissue import TissueStats
from noddi_bids.io.bids import DwiRun
from noddi_bids.model.noddi import GM_D_PAR
from noddi_bids.vocabulary import GM_NODDI, NODDI
from noddi_bids.workflows.tissue import init_tissue_wf

#: What an estimator node passes to its derivative writer.
ESTIMATE_FIELDS = ("odi_file", "ndi_file", "fwf_file", "direction_file", "odi_modulated_file",
                   "ndi_modulated_file", "estimator", "d_par", "d_iso", "details")  # fmt: skip
#: Voxel counts of the reference node recorded in sidecars.
EXCLUDED_FIELDS = ("n_nonfinite", "n_nonpositive_b0")
#: What an estimator node passes to its goodness-of-fit node.
PREDICTION_FIELDS = ("odi_file", "ndi_file", "fwf_file", "direction_file", "d_par", "d_iso")
#: What an estimator passes to its writer beyond the estimate: standard deviations (networks
#: with a spread head, the fit), and for the fit the voxels that have none.
UNCERTAINTY_FIELDS = ("odi_sd_file", "ndi_sd_file", "fwf_sd_file", "uncertainty")
SINGULAR_FIELDS = ("singular_file",)
#: What a goodness-of-fit node passes to the derivative writer.
QUALITY_FIELDS = ("rmse_file", "nrmse_file", "outofmodel_file", "quality")


def init_dwi_noddi_wf(
    run: DwiRun,
    model_file: Path,
    output_dir: Path,
    sources: list[str],
    *,
    mask_sources: list[str] | None = None,
    mle: bool = False,
    d_par: float,
    gm_model_file: Path | None = None,
    run_synthseg: bool = False,
    omp_nthreads: int = 1,
    dicom: bool = False,
    participants_tsv: Path | None = None,
    name: str | None = None,
) -> pe.Workflow:
    """Build the workflow that turns one dwi run into NODDI derivatives.

    Graph: ``reference`` (mean b = 0, brain mask, normalised signals) -> ``nn`` (ONNX network)
    [and ``mle`` (maximum-likelihood fit)] -> goodness of fit of each (``quality_nn``,
    ``quality_mle``) -> derivative writers (``ds_reference``, ``ds_nn``, ``ds_mle``);
    ``tissue_wf`` -> ``stats`` (from the written maps) -> ``ds_tissue``; [``dicom`` from the
    written maps]. The run's scheme, read and validated once when the runs were
    collected, is given to ``inputnode`` as a value; maps, masks and what their sidecars need
    travel along the edges.

    Parameters
    ----------
    run : DwiRun
        The validated run (files, entities, scheme, SynthSeg outputs, optional brain mask).
    model_file : Path
        ONNX network already resolved for the run's scheme.
    output_dir : Path
        Derivatives folder.
    sources : list of str
        BIDS URIs of the run's input files (recorded in sidecars), the dwi image first.
    mask_sources : list of str, optional
        URI of the brain mask given as input (``run.brain_mask``), recorded in its sidecar.
    mle : bool
        Also run the maximum-likelihood fit.
    d_par : float
        Intra-neurite parallel diffusivity of the fit, mm^2/s.
    gm_model_file : Path, optional
        ONNX network of grey-matter NODDI (d_par :data:`~noddi_bids.model.noddi.GM_D_PAR`):
        every estimator runs again with it (``nn_gmnoddi``, ``mle_gmnoddi``) and writes
        ``model-gmnoddi`` maps (not in the tissue table nor the DICOM series).
    run_synthseg : bool
        Run ``mri_synthseg`` when the run has no SynthSeg outputs.
    omp_nthreads : int
        Threads of the estimator nodes.
    dicom : bool
        Also write every ODI/NDI/FWF map as a DICOM series (``dicom`` node) under
        ``<output_dir>/sub-<label>/[ses-<label>/]dicom/<run>/``.
    participants_tsv : Path, optional
        The dataset's ``participants.tsv`` (patient attributes of the DICOM series).
    name : str, optional
        Workflow name (default from the run's entities).

    Outputs
    -------
    mean_b0, mask_file
        Reference image and brain mask (work folder).
    estimators
        ``desc-`` labels of the estimates (the network first, then the fit).
    map_files
        ``{parameter: path}`` of each estimator's written maps, same order.
    mask_files, stats_file
        Tissue masks (work folder) and tissue table.
    out_files
        Every derivative written.
    """
    label = "_".join(f"{k}_{v}" for k, v in run.entities.items() if k != "sub")
    workflow = pe.Workflow(name=name or ("_".join(["dwi", label]) if label else "dwi") + "_wf")
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["dwi_file", "scheme", "brain_mask"]), name="inputnode"
    )
    inputnode.inputs.dwi_file = str(run.dwi)
    inputnode.inputs.scheme = run.scheme
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["mean_b0", "mask_file", "estimators", "map_files", "mask_files", "stats_file",
                    "out_files"]
        ),
        name="outputnode",
    )  # fmt: skip
    reference = pe.Node(NormaliseDwi(), name="reference")
    sink = {"output_dir": str(output_dir), "entities": dict(run.entities), "sources": sources}
    ds_reference = pe.Node(
        WriteReference(**sink, mask_sources=list(mask_sources or [])),
        name="ds_reference",
        run_without_submitting=True,
    )
    if run.brain_mask is not None:
        inputnode.inputs.brain_mask = str(run.brain_mask)
        ds_reference.inputs.brain_mask_origin = run.brain_mask_origin
        workflow.connect(inputnode, "brain_mask", reference, "brain_mask")
    fits = _estimator_nodes(model_file, d_par if mle else None, omp_nthreads, NODDI)
    if gm_model_file is not None:
        fits += _estimator_nodes(gm_model_file, GM_D_PAR if mle else None, omp_nthreads, GM_NODDI)
    main = [fit for fit, model in fits if model == NODDI]
    tissue_wf = init_tissue_wf(run.synthseg, run_synthseg, omp_nthreads)
    stats = pe.Node(TissueStats(), name="stats", run_without_submitting=True)
    ds_tissue = pe.Node(WriteTissue(**sink), name="ds_tissue", run_without_submitting=True)
    estimators = pe.Node(niu.Merge(len(main)), name="estimators", run_without_submitting=True)
    maps = pe.Node(niu.Merge(len(main)), name="maps", run_without_submitting=True)
    written = pe.Node(
        niu.Merge(2 + len(fits), ravel_inputs=True), name="written", run_without_submitting=True
    )
    excluded = [(field, field) for field in EXCLUDED_FIELDS]
    workflow.connect([
        (inputnode, reference, [("dwi_file", "dwi_file"), ("scheme", "scheme")]),
        (inputnode, tissue_wf, [("scheme", "inputnode.scheme")]),
        (reference, tissue_wf, [("mean_b0", "inputnode.reference"),
                                ("mask_file", "inputnode.mask_file"),
                                ("signals_file", "inputnode.signals_file")]),
        (reference, ds_reference, [("mean_b0", "mean_b0"), ("mask_file", "mask_file"),
                                   ("n_mask_voxels", "n_mask_voxels"), *excluded]),
        (estimators, stats, [("out", "estimators")]),
        (maps, stats, [("out", "map_files")]),
        (tissue_wf, stats, [("outputnode.mask_files", "mask_files")]),
        (tissue_wf, ds_tissue, [("outputnode.mask_files", "mask_files"),
                                ("outputnode.details", "details")]),
        (stats, ds_tissue, [("stats_file", "stats_file")]),
        (ds_reference, written, [("out_files", "in1")]),
        (ds_tissue, written, [("out_files", "in2")]),
        (reference, outputnode, [("mean_b0", "mean_b0"), ("mask_file", "mask_file")]),
        (estimators, outputnode, [("out", "estimators")]),
        (maps, outputnode, [("out", "map_files")]),
        (tissue_wf, outputnode, [("outputnode.mask_files", "mask_files")]),
        (stats, outputnode, [("stats_file", "stats_file")]),
        (written, outputnode, [("out", "out_files")]),
    ])  # fmt: skip
    for index, (fit, model) in enumerate(fits, start=1):
        writer = pe.Node(
            WriteEstimate(**sink, model=model), name=f"ds_{fit.name}", run_without_submitting=True
        )
        if run.gradient_check is not None:
            writer.inputs.gradient_check = run.gradient_check
        quality = pe.Node(FitQuality(), name=f"quality_{fit.name}")
        signals = [("signals_file", "signals_file"), ("mask_file", "mask_file")]
        workflow.connect([
            (inputnode, fit, [("scheme", "scheme")]),
            (reference, fit, signals),
            (inputnode, quality, [("scheme", "scheme")]),
            (reference, quality, [*signals, ("mean_b0", "mean_b0")]),
            (fit, quality, [(field, field) for field in PREDICTION_FIELDS]),
            (quality, writer, [(field, field) for field in QUALITY_FIELDS]),
            (fit, writer, [(field, field) for field in (*ESTIMATE_FIELDS, *UNCERTAINTY_FIELDS)]),
            (inputnode, writer, [("scheme", "scheme")]),
            (reference, writer, excluded),
            (writer, written, [("out_files", f"in{index + 2}")]),
        ])  # fmt: skip
        if model == NODDI:
            workflow.connect([
                (fit, estimators, [("estimator", f"in{index}")]),
                (writer, maps, [("map_files", f"in{index}")]),
            ])  # fmt: skip
        if isinstance(fit.interface, MLEEstimate):  # a network's prediction uses the mean b = 0
            workflow.connect([
                (fit, quality, [("s0_file", "s0_file")]),
                (fit, writer, [(field, field) for field in SINGULAR_FIELDS]),
            ])  # fmt: skip
    if dicom:
        export = _dicom_node(run, output_dir, participants_tsv)
        workflow.connect([
            (estimators, export, [("out", "estimators")]),
            (maps, export, [("out", "map_files")]),
        ])  # fmt: skip
    return workflow


def _estimator_nodes(
    model_file: Path, fit_d_par: float | None, omp_nthreads: int, model: str
) -> list[tuple[pe.Node, str]]:
    """Make the network node and, with ``fit_d_par``, the fit's, each with its ``model-`` label.

    Named ``nn`` and ``mle`` for the model of ``--dpar``, ``nn_<model>`` and ``mle_<model>`` for
    another variant.
    """
    suffix = "" if model == NODDI else f"_{model}"
    nodes = [
        pe.Node(
            NNEstimate(model_file=str(model_file), n_threads=omp_nthreads),
            name=f"nn{suffix}",
            n_procs=omp_nthreads,
        )
    ]
    if fit_d_par is not None:
        nodes.append(
            pe.Node(
                MLEEstimate(d_par=fit_d_par, n_threads=omp_nthreads),
                name=f"mle{suffix}",
                n_procs=omp_nthreads,
            )
        )
    return [(node, model) for node in nodes]


def _dicom_node(run: DwiRun, output_dir: Path, participants_tsv: Path | None) -> pe.Node:
    """DICOM export of the run's maps, with patient data from its sidecar and participants.tsv."""
    folder = Path(output_dir) / f"sub-{run.subject}"
    if "ses" in run.entities:
        folder = folder / f"ses-{run.entities['ses']}"
    node = pe.Node(
        DicomRunExport(subject=run.subject, out_dir=str(folder / "dicom" / run.name)),
        name="dicom",
    )
    if "ses" in run.entities:
        node.inputs.session = run.entities["ses"]
    sidecar = run.dwi.with_name(run.dwi.name.split(".")[0] + ".json")
    if sidecar.is_file():
        node.inputs.bids_sidecar = str(sidecar)
    if participants_tsv is not None and Path(participants_tsv).is_file():
        node.inputs.participants_tsv = str(participants_tsv)
    return node
