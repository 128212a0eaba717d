"""Tissue masks workflow: SynthSeg outputs, ``mri_synthseg`` on the mean b = 0, or built-in."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from noddi_bids.interfaces.synthseg import MRISynthSeg
from noddi_bids.interfaces.tissue import DwiTissue, SegmentationTissue
from noddi_bids.io.bids import SegmentationFiles


def init_tissue_wf(
    segmentation: SegmentationFiles | None = None,
    run_synthseg: bool = False,
    omp_nthreads: int = 1,
    name: str = "tissue_wf",
) -> pe.Workflow:
    """Build the workflow making WM, GM and CSF masks on the dwi grid.

    Parameters
    ----------
    segmentation : SegmentationFiles, optional
        SynthSeg outputs found for the run (resampled and thresholded).
    run_synthseg : bool
        Run ``mri_synthseg`` on the mean b = 0 image (ignored when ``segmentation`` is given).
    omp_nthreads : int
        Threads of ``mri_synthseg``.
    name : str
        Workflow name.

    Inputs
    ------
    reference
        Mean b = 0 image (dwi grid).
    mask_file
        Brain mask.
    signals_file, scheme
        Normalised signals and the run's scheme (built-in classification).

    Outputs
    -------
    mask_files
        ``{tissue: mask}`` of WM, GM and CSF.
    details
        How the masks were made (their sidecars).
    """
    workflow = pe.Workflow(name=name)
    inputnode = pe.Node(
        niu.IdentityInterface(fields=["reference", "mask_file", "signals_file", "scheme"]),
        name="inputnode",
    )
    outputnode = pe.Node(niu.IdentityInterface(fields=["mask_files", "details"]), name="outputnode")
    outputs = [("mask_files", "mask_files"), ("details", "details")]
    if segmentation is None and not run_synthseg:
        classify = pe.Node(DwiTissue(), name="dwi_tissue")
        workflow.connect([
            (inputnode, classify, [("signals_file", "signals_file"), ("mask_file", "mask_file"),
                                   ("scheme", "scheme")]),
            (classify, outputnode, outputs),
        ])  # fmt: skip
        return workflow
    masks = pe.Node(SegmentationTissue(), name="synthseg_tissue")
    if segmentation is not None:
        if segmentation.labels is not None:
            masks.inputs.labels_file = str(segmentation.labels)
        if segmentation.posteriors is not None:
            masks.inputs.posteriors_file = str(segmentation.posteriors)
        for tissue, path in segmentation.probseg.items():
            setattr(masks.inputs, f"{tissue.lower()}_probseg", str(path))
    else:
        synthseg = pe.Node(MRISynthSeg(num_threads=omp_nthreads), name="mri_synthseg")
        synthseg.n_procs = omp_nthreads
        workflow.connect([
            (inputnode, synthseg, [("reference", "in_file")]),
            (synthseg, masks, [("out_file", "labels_file"),
                               ("posteriors_file", "posteriors_file")]),
        ])  # fmt: skip
    workflow.connect([
        (inputnode, masks, [("reference", "reference"), ("mask_file", "mask_file")]),
        (masks, outputnode, outputs),
    ])  # fmt: skip
    return workflow
