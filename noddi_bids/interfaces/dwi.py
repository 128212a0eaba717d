"""Interface computing the mean b = 0 image, the brain mask and the normalised signals."""

from __future__ import annotations

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

from noddi_bids.interfaces.specs import scheme_trait
from noddi_bids.model.reference import normalise_dwi

LOGGER = logging.getLogger("nipype.interface")


class _NormaliseDwiInputSpec(BaseInterfaceInputSpec):
    dwi_file = File(exists=True, mandatory=True, desc="4-D diffusion image")
    scheme = scheme_trait()
    brain_mask = File(exists=True, desc="brain mask to use instead of median_otsu")


class _NormaliseDwiOutputSpec(TraitedSpec):
    mean_b0 = File(exists=True, desc="mean b = 0 image (float32)")
    mask_file = File(exists=True, desc="brain mask of the voxels that can be normalised")
    signals_file = File(exists=True, desc="normalised signals of the mask voxels, (N, M) .npy")
    n_mask_voxels = traits.Int(desc="voxels of the mask")
    n_nonfinite = traits.Int(desc="brain voxels left out: NaN or inf data")
    n_nonpositive_b0 = traits.Int(desc="brain voxels left out: mean b = 0 <= 0")


class NormaliseDwi(SimpleInterface):
    """Mean b = 0, brain mask and signals normalised by the mean b = 0.

    Voxels with non-finite data or a non-positive mean b = 0 are left out of the mask (never
    divided by) and counted (``n_nonfinite``, ``n_nonpositive_b0``).

    Examples
    --------
    >>> ref = NormaliseDwi(dwi_file="sub-01_dwi.nii.gz", scheme=run.scheme)  # doctest: +SKIP
    >>> ref.run().outputs.mask_file  # doctest: +SKIP
    '.../brain_mask.nii.gz'
    """

    input_spec = _NormaliseDwiInputSpec
    output_spec = _NormaliseDwiOutputSpec

    def _run_interface(self, runtime):
        image = nib.load(self.inputs.dwi_file)
        region = None
        if self.inputs.brain_mask:
            region = np.asarray(nib.load(self.inputs.brain_mask).dataobj) > 0
        data = image.get_fdata(dtype=np.float32)
        reference = normalise_dwi(data, self.inputs.scheme.b0_mask, region)
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
        }
        nib.Nifti1Image(reference.mean_b0, image.affine, header).to_filename(out["mean_b0"])
        mask_header = header.copy()
        mask_header.set_data_dtype(np.uint8)
        nib.Nifti1Image(reference.mask.astype(np.uint8), image.affine, mask_header).to_filename(
            out["mask_file"]
        )
        np.save(out["signals_file"], reference.signals)
        self._results.update(
            out,
            n_mask_voxels=int(reference.mask.sum()),
            n_nonfinite=int(reference.n_nonfinite),
            n_nonpositive_b0=int(reference.n_nonpositive_b0),
        )
        return runtime
