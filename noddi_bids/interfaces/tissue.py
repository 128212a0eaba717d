"""Interfaces for tissue masks (SynthSeg or built-in) and the per-tissue table.

Both mask interfaces write one uint8 mask per tissue on the dwi grid and pass on how they were
made (:func:`noddi_bids.io.derivatives.synthseg_details`, :func:`~.builtin_details`), for the
masks' sidecars.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from noddi_bids.interfaces.specs import SignalsInputSpec
from noddi_bids.io import derivatives as io
from noddi_bids.tissue import builtin, synthseg
from noddi_bids.tissue.stats import DECIMALS, TABLE_MAPS, tissue_table
from noddi_bids.vocabulary import ESTIMATORS, PARAMETERS, TISSUES


def _mask_files_trait(**metadata) -> traits.Dict:
    return traits.Dict(traits.Enum(*TISSUES), File(exists=True), **metadata)


class _TissueOutputSpec(TraitedSpec):
    mask_files = _mask_files_trait(desc="tissue (WM, GM, CSF) -> mask on the dwi grid")
    details = traits.Dict(traits.Str, traits.Any, desc="how the masks were made (sidecars)")


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
    through its one-hot tissue indicators (:func:`noddi_bids.tissue.synthseg.masks_on_grid`).

    Examples
    --------
    >>> seg = SegmentationTissue(reference="mean_b0.nii.gz", mask_file="brain_mask.nii.gz",
    ...                          labels_file="sub-01_dseg.nii.gz")  # doctest: +SKIP
    >>> seg.run().outputs.mask_files["WM"]  # doctest: +SKIP
    '.../label-WM_mask.nii.gz'
    """

    input_spec = _SegmentationTissueInputSpec
    output_spec = _TissueOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        probseg = {
            tissue: getattr(inputs, f"{tissue.lower()}_probseg")
            for tissue in TISSUES
            if isdefined(getattr(inputs, f"{tissue.lower()}_probseg"))
        }
        probabilities, affine, files = synthseg.segmentation_probabilities(
            probseg,
            inputs.posteriors_file if isdefined(inputs.posteriors_file) else None,
            inputs.labels_file if isdefined(inputs.labels_file) else None,
        )
        brain = np.asarray(nib.load(inputs.mask_file).dataobj) > 0
        masks = synthseg.masks_on_grid(probabilities, affine, nib.load(inputs.reference), brain)
        self._results.update(
            mask_files=_save_masks(masks, inputs.mask_file),
            details=io.synthseg_details([os.path.abspath(path) for path in files]),
        )
        return runtime


class DwiTissue(SimpleInterface):
    """Approximate tissue masks from DTI FA and MD (no SynthSeg; see ``tissue.builtin``).

    Examples
    --------
    >>> tissue = DwiTissue(signals_file="signals.npy", mask_file="brain_mask.nii.gz",
    ...                    scheme=run.scheme)  # doctest: +SKIP
    >>> tissue.run().outputs.details["Method"]  # doctest: +SKIP
    'built-in DTI classification (approximate)'
    """

    input_spec = SignalsInputSpec
    output_spec = _TissueOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        brain = np.asarray(nib.load(inputs.mask_file).dataobj) > 0
        classes = builtin.classify_tissues(np.load(inputs.signals_file), inputs.scheme)
        masks = {}
        for tissue, selected in classes.items():
            masks[tissue] = np.zeros(brain.shape, dtype=bool)
            masks[tissue][brain] = selected
        self._results.update(
            mask_files=_save_masks(masks, inputs.mask_file), details=io.builtin_details()
        )
        return runtime


def _save_masks(masks: Mapping[str, np.ndarray], mask_file: str) -> dict[str, str]:
    """Write each tissue mask (uint8) on the grid of ``mask_file``; return their paths."""
    reference = nib.load(mask_file)
    files = {}
    for tissue, mask in masks.items():
        files[tissue] = os.path.abspath(f"label-{tissue}_mask.nii.gz")
        image = nib.Nifti1Image(mask.astype(np.uint8), reference.affine, reference.header)
        image.to_filename(files[tissue])
    return files


class _TissueStatsInputSpec(BaseInterfaceInputSpec):
    estimators = InputMultiObject(
        traits.Enum(*ESTIMATORS), mandatory=True, desc="desc- label of each estimate"
    )
    map_files = InputMultiObject(
        traits.Dict(traits.Str, File(exists=True)),
        mandatory=True,
        desc="per estimate (same order), parameter name -> map",
    )
    mask_files = _mask_files_trait(mandatory=True, desc="tissue -> mask")


class _TissueStatsOutputSpec(TraitedSpec):
    stats_file = File(exists=True, desc="tissue table (TSV)")


class TissueStats(SimpleInterface):
    """Mean and SD of ODI, NDI and FWF per tissue and estimator, and goodness of fit.

    See :func:`noddi_bids.tissue.stats.tissue_table`.

    Examples
    --------
    >>> stats = TissueStats(estimators=["nnmle"], map_files=[{"odi": "odi.nii.gz", ...}],
    ...                     mask_files={"WM": "label-WM_mask.nii.gz", ...})  # doctest: +SKIP
    >>> stats.run().outputs.stats_file  # doctest: +SKIP
    '.../tissue_stats.tsv'
    """

    input_spec = _TissueStatsInputSpec
    output_spec = _TissueStatsOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        masks = {t: np.asarray(nib.load(p).dataobj) > 0 for t, p in inputs.mask_files.items()}
        maps = {
            estimator: {
                p: np.asarray(nib.load(files[p]).dataobj)
                for p in (*PARAMETERS, *TABLE_MAPS)
                if p in files
            }
            for estimator, files in zip(inputs.estimators, inputs.map_files, strict=True)
        }
        table = tissue_table(maps, masks).round(DECIMALS)
        self._results["stats_file"] = str(io.write_tsv(table, os.path.abspath("tissue_stats.tsv")))
        return runtime
