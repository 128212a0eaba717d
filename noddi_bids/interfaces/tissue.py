"""Interfaces for tissue masks (SynthSeg or built-in) and the per-tissue table.

Both mask interfaces write one uint8 mask per tissue on the dwi grid and a *tissue record*
(``tissue.json``): the mask files and how they were made.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from noddi_bids.interfaces.noddi import read_record
from noddi_bids.io.derivatives import write_tsv
from noddi_bids.model.scheme import read_scheme
from noddi_bids.tissue import builtin, synthseg
from noddi_bids.tissue.stats import DECIMALS, PARAMETERS, tissue_table


class _TissueOutputSpec(TraitedSpec):
    tissue_file = File(exists=True, desc="tissue record (JSON)")
    mask_files = traits.List(File(exists=True), desc="WM, GM and CSF masks")


class _SegmentationTissueInputSpec(BaseInterfaceInputSpec):
    reference = File(exists=True, mandatory=True, desc="image on the dwi grid (mean b = 0)")
    mask_file = File(exists=True, mandatory=True, desc="brain mask on the dwi grid")
    labels_file = File(exists=True, desc="SynthSeg label volume (FreeSurfer labels)")
    posteriors_file = File(exists=True, desc="SynthSeg 4-D posteriors (--post)")
    wm_probseg = File(exists=True, desc="white-matter probability map")
    gm_probseg = File(exists=True, desc="grey-matter probability map")
    csf_probseg = File(exists=True, desc="CSF probability map")


class SegmentationTissue(SimpleInterface):
    """Tissue masks from SynthSeg outputs, resampled onto the dwi grid and thresholded.

    Probability maps are preferred (per-tissue maps, then posteriors); a label volume is used
    through its one-hot tissue indicators. Thresholds: 0.9 WM and CSF, 0.8 GM.

    Examples
    --------
    >>> seg = SegmentationTissue(reference="mean_b0.nii.gz", mask_file="brain_mask.nii.gz",
    ...                          labels_file="sub-01_dseg.nii.gz")  # doctest: +SKIP
    >>> seg.run().outputs.mask_files  # doctest: +SKIP
    ['.../label-WM_mask.nii.gz', '.../label-GM_mask.nii.gz', '.../label-CSF_mask.nii.gz']
    """

    input_spec = _SegmentationTissueInputSpec
    output_spec = _TissueOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        probseg = {
            tissue: getattr(inputs, f"{tissue.lower()}_probseg")
            for tissue in synthseg.THRESHOLDS
            if getattr(inputs, f"{tissue.lower()}_probseg")
        }
        if len(probseg) == len(synthseg.THRESHOLDS):
            images = {tissue: nib.load(path) for tissue, path in probseg.items()}
            probabilities = {t: np.asarray(i.dataobj, np.float32) for t, i in images.items()}
            affine, source = images["WM"].affine, sorted(probseg.values())
        elif inputs.posteriors_file:
            image = nib.load(inputs.posteriors_file)
            probabilities = synthseg.probabilities_from_posteriors(np.asarray(image.dataobj))
            affine, source = image.affine, [inputs.posteriors_file]
        elif inputs.labels_file:
            image = nib.load(inputs.labels_file)
            probabilities = synthseg.probabilities_from_labels(np.asarray(image.dataobj))
            affine, source = image.affine, [inputs.labels_file]
        else:
            raise ValueError("no SynthSeg label volume or probability maps given")
        reference = nib.load(inputs.reference)
        brain = np.asarray(nib.load(inputs.mask_file).dataobj) > 0
        resampled = {
            tissue: synthseg.resample_probability(p, affine, reference)
            for tissue, p in probabilities.items()
        }
        masks = synthseg.threshold_probabilities(resampled, brain)
        record = {
            "Method": "SynthSeg",
            "SegmentationFiles": [os.path.abspath(path) for path in source],
            "Thresholds": synthseg.THRESHOLDS,
            "FreeSurferLabels": {t: list(v) for t, v in synthseg.TISSUE_LABELS.items()},
        }
        self._results.update(_save_masks(masks, inputs.mask_file, record))
        return runtime


class _DwiTissueInputSpec(BaseInterfaceInputSpec):
    signals_file = File(exists=True, mandatory=True, desc="normalised signals (N, M), .npy")
    mask_file = File(exists=True, mandatory=True, desc="mask whose voxels the rows are")
    bval_file = File(exists=True, mandatory=True, desc="b-values (s/mm^2)")
    bvec_file = File(exists=True, mandatory=True, desc="b-vectors")
    b0_threshold = traits.Float(mandatory=True, desc="b <= this (s/mm^2) counts as b = 0")


class DwiTissue(SimpleInterface):
    """Approximate tissue masks from DTI FA and MD (no SynthSeg; see ``tissue.builtin``).

    Examples
    --------
    >>> tissue = DwiTissue(signals_file="signals.npy", mask_file="brain_mask.nii.gz",
    ...                    bval_file="dwi.bval", bvec_file="dwi.bvec",
    ...                    b0_threshold=50.0)  # doctest: +SKIP
    >>> tissue.run().outputs.tissue_file  # doctest: +SKIP
    '.../tissue.json'
    """

    input_spec = _DwiTissueInputSpec
    output_spec = _TissueOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        scheme = read_scheme(inputs.bval_file, inputs.bvec_file, b0_threshold=inputs.b0_threshold)
        brain = np.asarray(nib.load(inputs.mask_file).dataobj) > 0
        classes = builtin.classify_tissues(np.load(inputs.signals_file), scheme)
        masks = {}
        for tissue, selected in classes.items():
            masks[tissue] = np.zeros(brain.shape, dtype=bool)
            masks[tissue][brain] = selected
        record = {
            "Method": "built-in DTI classification (approximate)",
            "Rules": {
                "CSF": f"MD >= {builtin.CSF_MIN_MD:g} mm^2/s",
                "WM": f"FA >= {builtin.WM_MIN_FA:g} and MD < {builtin.TISSUE_MAX_MD:g} mm^2/s",
                "GM": f"FA < {builtin.GM_MAX_FA:g} and MD < {builtin.TISSUE_MAX_MD:g} mm^2/s",
            },
            "DTIMaxBValue": builtin.DTI_MAX_B,
        }
        self._results.update(_save_masks(masks, inputs.mask_file, record))
        return runtime


def _save_masks(
    masks: Mapping[str, np.ndarray], mask_file: str, record: Mapping[str, Any]
) -> dict[str, Any]:
    reference = nib.load(mask_file)
    files = {}
    for tissue, mask in masks.items():
        files[tissue] = os.path.abspath(f"label-{tissue}_mask.nii.gz")
        image = nib.Nifti1Image(mask.astype(np.uint8), reference.affine, reference.header)
        image.to_filename(files[tissue])
    tissue_file = os.path.abspath("tissue.json")
    with open(tissue_file, "w", encoding="utf-8") as handle:
        json.dump({**record, "masks": files}, handle, indent=2)
    return {"tissue_file": tissue_file, "mask_files": list(files.values())}


class _TissueStatsInputSpec(BaseInterfaceInputSpec):
    estimate_files = InputMultiObject(File(exists=True), mandatory=True, desc="estimate records")
    tissue_file = File(exists=True, mandatory=True, desc="tissue record")


class _TissueStatsOutputSpec(TraitedSpec):
    stats_file = File(exists=True, desc="tissue table (TSV)")


class TissueStats(SimpleInterface):
    """Mean and SD of ODI, NDI and FWF per tissue and estimator (``tissue.stats``).

    Examples
    --------
    >>> stats = TissueStats(estimate_files=["nn/estimate.json", "mle/estimate.json"],
    ...                     tissue_file="tissue.json")  # doctest: +SKIP
    >>> stats.run().outputs.stats_file  # doctest: +SKIP
    '.../tissue_stats.tsv'
    """

    input_spec = _TissueStatsInputSpec
    output_spec = _TissueStatsOutputSpec

    def _run_interface(self, runtime):
        tissue = read_record(self.inputs.tissue_file)
        masks = {t: np.asarray(nib.load(p).dataobj) > 0 for t, p in tissue["masks"].items()}
        maps = {}
        for path in self.inputs.estimate_files:
            record = read_record(path)
            maps[record["desc"]] = {
                p: np.asarray(nib.load(record["maps"][p]).dataobj) for p in PARAMETERS
            }
        table = tissue_table(maps, masks).round(DECIMALS)
        self._results["stats_file"] = str(write_tsv(table, os.path.abspath("tissue_stats.tsv")))
        return runtime
