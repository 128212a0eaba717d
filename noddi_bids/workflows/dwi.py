"""NODDI workflow of one diffusion run: reference, estimators, tissues, derivatives."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from noddi_bids.interfaces.derivatives import WriteEstimate, WriteReference, WriteTissue
from noddi_bids.interfaces.dicom import DicomRunExport
from noddi_bids.interfaces.dwi import NormaliseDwi
from noddi_bids.interfaces.noddi import MLEEstimate, NNEstimate
from noddi_bids.interfaces.tissue import TissueStats
from noddi_bids.io.bids import DwiRun
from noddi_bids.workflows.tissue import init_tissue_wf


def init_dwi_noddi_wf(
    run: DwiRun,
    model_file: Path,
    output_dir: Path,
    sources: list[str],
    *,
    mask_sources: list[str] | None = None,
    mle: bool = False,
    d_par: float,
    b0_threshold: float,
    run_synthseg: bool = False,
    omp_nthreads: int = 1,
    dicom: bool = False,
    participants_tsv: Path | None = None,
    name: str | None = None,
) -> pe.Workflow:
    """Build the workflow that turns one dwi run into NODDI derivatives.

    Graph: ``reference`` (mean b = 0, brain mask, normalised signals) -> ``nn`` (ONNX network)
    [and ``mle`` (maximum-likelihood fit)] -> ``tissue_wf`` -> ``stats`` -> derivative writers
    (``ds_reference``, ``ds_nn``, ``ds_mle``, ``ds_tissue``). Report and DICOM nodes connect to
    ``outputnode``.

    Parameters
    ----------
    run : DwiRun
        The validated run (files, entities, SynthSeg outputs, optional brain mask).
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
    b0_threshold : float
        b <= this (s/mm^2) counts as b = 0.
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
    estimate_files
        Estimate records (NN first, then MLE).
    map_files
        ``{param: path}`` of each estimator's written maps, same order.
    tissue_file, stats_file
        Tissue record and tissue table.
    out_files
        Every derivative written.
    """
    label = "_".join(f"{k}_{v}" for k, v in run.entities.items() if k != "sub")
    workflow = pe.Workflow(name=name or ("_".join(["dwi", label]) if label else "dwi") + "_wf")
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["dwi_file", "bval_file", "bvec_file", "brain_mask"]),
        name="inputnode",
    )
    inputnode.inputs.dwi_file = str(run.dwi)
    inputnode.inputs.bval_file = str(run.bval)
    inputnode.inputs.bvec_file = str(run.bvec)
    outputnode = pe.Node(
        niu.IdentityInterface(
            fields=["mean_b0", "mask_file", "estimate_files", "map_files", "tissue_file",
                    "stats_file", "out_files"]
        ),
        name="outputnode",
    )  # fmt: skip
    reference = pe.Node(NormaliseDwi(b0_threshold=b0_threshold), name="reference")
    if run.brain_mask is not None:
        inputnode.inputs.brain_mask = str(run.brain_mask)
        reference.inputs.brain_mask_origin = run.brain_mask_origin
        workflow.connect(inputnode, "brain_mask", reference, "brain_mask")
    signals = [("signals_file", "signals_file"), ("mask_file", "mask_file")]
    scheme = [("bval_file", "bval_file"), ("bvec_file", "bvec_file")]
    nn = pe.Node(
        NNEstimate(model_file=str(model_file), b0_threshold=b0_threshold, n_threads=omp_nthreads),
        name="nn",
        n_procs=omp_nthreads,
    )
    tissue_wf = init_tissue_wf(run.synthseg, run_synthseg, omp_nthreads)
    tissue_wf.inputs.inputnode.b0_threshold = b0_threshold
    stats = pe.Node(TissueStats(), name="stats", run_without_submitting=True)
    estimates = pe.Node(niu.Merge(2), name="estimates", run_without_submitting=True)
    maps = pe.Node(niu.Merge(2), name="maps", run_without_submitting=True)
    sink = {"output_dir": str(output_dir), "entities": dict(run.entities), "sources": sources}
    ds_reference = pe.Node(
        WriteReference(**sink, mask_sources=list(mask_sources or [])),
        name="ds_reference",
        run_without_submitting=True,
    )
    ds_nn = pe.Node(WriteEstimate(**sink), name="ds_nn", run_without_submitting=True)
    ds_tissue = pe.Node(WriteTissue(**sink), name="ds_tissue", run_without_submitting=True)
    written = pe.Node(niu.Merge(4, ravel_inputs=True), name="written", run_without_submitting=True)
    workflow.connect([
        (inputnode, reference, [("dwi_file", "dwi_file"), *scheme]),
        (inputnode, nn, scheme),
        (reference, nn, signals),
        (inputnode, tissue_wf, [(src, f"inputnode.{dst}") for src, dst in scheme]),
        (reference, tissue_wf, [("mean_b0", "inputnode.reference"),
                                ("mask_file", "inputnode.mask_file"),
                                ("signals_file", "inputnode.signals_file")]),
        (nn, estimates, [("estimate_file", "in1")]),
        (estimates, stats, [("out", "estimate_files")]),
        (tissue_wf, stats, [("outputnode.tissue_file", "tissue_file")]),
        (reference, ds_reference, [("mean_b0", "mean_b0"), ("mask_file", "mask_file"),
                                   ("qc_file", "qc_file")]),
        (nn, ds_nn, [("estimate_file", "estimate_file")]),
        (reference, ds_nn, [("qc_file", "qc_file")]),
        (ds_nn, maps, [("map_files", "in1")]),
        (tissue_wf, ds_tissue, [("outputnode.tissue_file", "tissue_file")]),
        (stats, ds_tissue, [("stats_file", "stats_file")]),
        (ds_reference, written, [("out_files", "in1")]),
        (ds_nn, written, [("out_files", "in2")]),
        (ds_tissue, written, [("out_files", "in4")]),
        (reference, outputnode, [("mean_b0", "mean_b0"), ("mask_file", "mask_file")]),
        (estimates, outputnode, [("out", "estimate_files")]),
        (maps, outputnode, [("out", "map_files")]),
        (tissue_wf, outputnode, [("outputnode.tissue_file", "tissue_file")]),
        (stats, outputnode, [("stats_file", "stats_file")]),
        (written, outputnode, [("out", "out_files")]),
    ])  # fmt: skip
    if mle:
        fit = pe.Node(
            MLEEstimate(d_par=d_par, b0_threshold=b0_threshold, n_threads=omp_nthreads),
            name="mle",
            n_procs=omp_nthreads,
        )
        ds_mle = pe.Node(WriteEstimate(**sink), name="ds_mle", run_without_submitting=True)
        workflow.connect([
            (inputnode, fit, scheme),
            (reference, fit, signals),
            (fit, estimates, [("estimate_file", "in2")]),
            (fit, ds_mle, [("estimate_file", "estimate_file")]),
            (reference, ds_mle, [("qc_file", "qc_file")]),
            (ds_mle, maps, [("map_files", "in2")]),
            (ds_mle, written, [("out_files", "in3")]),
        ])  # fmt: skip
    if dicom:
        workflow.connect(maps, "out", _dicom_node(run, output_dir, participants_tsv), "map_files")
    return workflow


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
