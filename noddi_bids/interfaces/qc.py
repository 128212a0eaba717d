"""Interface computing the goodness of fit of one estimate (:mod:`noddi_bids.qc.residuals`)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nipype.interfaces.base import File, SimpleInterface, TraitedSpec, isdefined, traits

from noddi_bids.interfaces.specs import SignalsInputSpec
from noddi_bids.interfaces.volumes import save_volumes
from noddi_bids.io import derivatives as io
from noddi_bids.qc import residuals
from noddi_bids.vocabulary import PARAMETERS


class _FitQualityInputSpec(SignalsInputSpec):
    mean_b0 = File(exists=True, mandatory=True, desc="mean b = 0 image (units of the dwi)")
    odi_file = File(exists=True, mandatory=True, desc="orientation dispersion index map")
    ndi_file = File(exists=True, mandatory=True, desc="neurite density index map")
    fwf_file = File(exists=True, mandatory=True, desc="free-water fraction map")
    direction_file = File(exists=True, desc="mean fibre orientation; none: nothing to predict")
    s0_file = File(exists=True, desc="fitted S0 relative to the mean b = 0; default 1")
    d_par = traits.Float(mandatory=True, desc="intra-neurite parallel diffusivity, mm^2/s")
    d_iso = traits.Float(mandatory=True, desc="free-water diffusivity, mm^2/s")


class _FitQualityOutputSpec(TraitedSpec):
    rmse_file = File(desc="RMSE of the predicted signal (units of the dwi)")
    nrmse_file = File(desc="RMSE / mean b = 0")
    outofmodel_file = File(desc="voxels the model does not fit (uint8)")
    quality = traits.Dict(traits.Str, traits.Any, desc="sidecar details of the maps")


class FitQuality(SimpleInterface):
    """RMSE and NRMSE maps of an estimate and its out-of-model voxels.

    Without a fibre direction (a network whose direction could not be estimated) there is no
    prediction and no output.

    Examples
    --------
    >>> quality = FitQuality(signals_file="signals.npy", mask_file="brain_mask.nii.gz",
    ...                      scheme=run.scheme, mean_b0="mean_b0.nii.gz", odi_file="odi.nii.gz",
    ...                      ndi_file="ndi.nii.gz", fwf_file="fwf.nii.gz",
    ...                      direction_file="direction.nii.gz", d_par=1.7e-3,
    ...                      d_iso=3e-3)  # doctest: +SKIP
    >>> quality.run().outputs.quality["FitQuality"]["OutOfModelRatio"]  # doctest: +SKIP
    1.5
    """

    input_spec = _FitQualityInputSpec
    output_spec = _FitQualityOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        if not isdefined(inputs.direction_file):
            runtime.stderr = "no fibre direction: no goodness-of-fit maps"
            return runtime
        mask = np.asarray(nib.load(inputs.mask_file).dataobj) > 0
        signals = np.load(inputs.signals_file)

        def values(path: str) -> np.ndarray:
            return np.asarray(nib.load(path).dataobj, dtype=np.float64)[mask]

        estimate = np.column_stack([values(getattr(inputs, f"{p}_file")) for p in PARAMETERS])
        s0 = values(inputs.s0_file) if isdefined(inputs.s0_file) else np.ones(signals.shape[0])
        predicted = residuals.predicted_signals(
            estimate, values(inputs.direction_file), s0, inputs.scheme, inputs.d_par, inputs.d_iso
        )
        noise = residuals.local_noise(signals, mask, inputs.scheme.b0_mask)
        ratio = residuals.out_of_model_ratio(inputs.scheme.n_b0)
        quality = residuals.fit_quality(signals, predicted, values(inputs.mean_b0), noise, ratio)
        known_noise = bool(np.isfinite(noise).any())
        maps = {"rmse": quality.rmse, "nrmse": quality.nrmse}
        if known_noise:
            maps["outofmodel"] = quality.out_of_model
        self._results.update(
            save_volumes(maps, inputs.mask_file),
            quality=io.quality_details(
                "fitted S0" if isdefined(inputs.s0_file) else "mean b = 0 signal of the voxel",
                residuals.NOISE_BLOCK,
                (ratio, int(quality.out_of_model.sum())) if known_noise else None,
            ),
        )
        return runtime
