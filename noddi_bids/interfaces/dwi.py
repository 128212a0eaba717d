"""Interface computing the mean b = 0 image, the brain mask and the normalised signals."""

from __future__ import annotations

import json
import logging
import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from noddi_bids.model.reference import normalise_dwi
from noddi_bids.model.scheme import read_scheme

LOGGER = logging.getLogger("nipype.interface")


class _NormaliseDwiInputSpec(BaseInterfaceInputSpec):
    dwi_file = File(exists=True, mandatory=True, desc="4-D diffusion image")
    bval_file = File(exists=True, mandatory=True, desc="b-values (s/mm^2)")
    bvec_file = File(exists=True, mandatory=True, desc="b-vectors")
    b0_threshold = traits.Float(mandatory=True, desc="b <= this (s/mm^2) counts as b = 0")
    brain_mask = File(exists=True, desc="brain mask to use instead of median_otsu")
    brain_mask_origin = traits.Str(
        "user-supplied", usedefault=True, desc="where brain_mask comes from (for the sidecar)"
    )


class _NormaliseDwiOutputSpec(TraitedSpec):
    mean_b0 = File(exists=True, desc="mean b = 0 image (float32)")
    mask_file = File(exists=True, desc="brain mask of the voxels that can be normalised")
    signals_file = File(exists=True, desc="normalised signals of the mask voxels, (N, M) .npy")
    qc_file = File(exists=True, desc="JSON: voxel counts, excluded voxels")


class NormaliseDwi(SimpleInterface):
    """Mean b = 0, brain mask and signals normalised by the mean b = 0.

    Voxels with non-finite data or a non-positive mean b = 0 are left out of the mask (never
    divided by) and counted in ``qc_file``.

    Examples
    --------
    >>> ref = NormaliseDwi(dwi_file="sub-01_dwi.nii.gz", bval_file="sub-01_dwi.bval",
    ...                    bvec_file="sub-01_dwi.bvec", b0_threshold=50.0)  # doctest: +SKIP
    >>> ref.run().outputs.mask_file  # doctest: +SKIP
    '.../brain_mask.nii.gz'
    """

    input_spec = _NormaliseDwiInputSpec
    output_spec = _NormaliseDwiOutputSpec

    def _run_interface(self, runtime):
        image = nib.load(self.inputs.dwi_file)
        scheme = read_scheme(
            self.inputs.bval_file,
            self.inputs.bvec_file,
            b0_threshold=self.inputs.b0_threshold,
            n_volumes=image.shape[3],
        )
        region = None
        if self.inputs.brain_mask:
            region = np.asarray(nib.load(self.inputs.brain_mask).dataobj) > 0
        reference = normalise_dwi(image.get_fdata(dtype=np.float32), scheme.b0_mask, region)
        excluded = reference.n_nonfinite + reference.n_nonpositive_b0
        if excluded:
            LOGGER.warning(
                "%s: %d brain voxel(s) excluded from the mask (%d with NaN/inf data, %d with "
                "mean b = 0 <= 0).",
                self.inputs.dwi_file,
                excluded,
                reference.n_nonfinite,
                reference.n_nonpositive_b0,
            )
        header = image.header.copy()
        header.set_data_dtype(np.float32)
        header.set_data_shape(image.shape[:3])
        out = {
            "mean_b0": os.path.abspath("mean_b0.nii.gz"),
            "mask_file": os.path.abspath("brain_mask.nii.gz"),
            "signals_file": os.path.abspath("signals.npy"),
            "qc_file": os.path.abspath("qc.json"),
        }
        nib.Nifti1Image(reference.mean_b0, image.affine, header).to_filename(out["mean_b0"])
        mask_header = header.copy()
        mask_header.set_data_dtype(np.uint8)
        nib.Nifti1Image(reference.mask.astype(np.uint8), image.affine, mask_header).to_filename(
            out["mask_file"]
        )
        np.save(out["signals_file"], reference.signals)
        origin = self.inputs.brain_mask_origin if region is not None else "dipy median_otsu"
        qc = {
            "BrainMask": origin,
            "MaskVoxels": int(reference.mask.sum()),
            "ExcludedVoxels": {
                "NonFinite": reference.n_nonfinite,
                "NonPositiveB0": reference.n_nonpositive_b0,
            },
        }
        with open(out["qc_file"], "w", encoding="utf-8") as handle:
            json.dump(qc, handle, indent=2)
        self._results.update(out)
        return runtime
