"""Interfaces running the NODDI estimators (ONNX network, maximum-likelihood fit) on signals.

Each writes the maps of the brain-mask voxels as NIfTI images and passes on, as values, what
the maps' sidecars need: the ``desc-`` label of the estimator, its diffusivities and its
details (:func:`noddi_bids.io.derivatives.network_details`, :func:`~.fit_details`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from nipype.interfaces.base import File, SimpleInterface, TraitedSpec, traits

from noddi_bids.interfaces.specs import SignalsInputSpec
from noddi_bids.interfaces.volumes import save_volumes
from noddi_bids.io import derivatives as io
from noddi_bids.model.noddi import D_ISO, tissue_fraction_modulated
from noddi_bids.vocabulary import (
    ESTIMATORS,
    MAPS,
    MLE,
    MODULATED_FROM,
    NETWORK_ESTIMATORS,
    PARAMETERS,
)


class _EstimatorInputSpec(SignalsInputSpec):
    n_threads = traits.Int(1, usedefault=True, desc="threads of the estimator")


class _EstimateOutputSpec(TraitedSpec):
    odi_file = File(exists=True, desc="orientation dispersion index map")
    ndi_file = File(exists=True, desc="neurite density index map")
    fwf_file = File(exists=True, desc="free-water fraction map")
    direction_file = File(desc="mean fibre orientation (X, Y, Z, 3)")
    odi_modulated_file = File(exists=True, desc="ODI x (1 - FWF)")
    ndi_modulated_file = File(exists=True, desc="NDI x (1 - FWF)")
    estimator = traits.Enum(*ESTIMATORS, desc="desc- label of the estimator")
    d_par = traits.Float(desc="intra-neurite parallel diffusivity of the estimate, mm^2/s")
    d_iso = traits.Float(desc="free-water diffusivity of the estimate, mm^2/s")
    details = traits.Dict(traits.Str, traits.Any, desc="sidecar details of the estimator")


class _NNEstimateInputSpec(_EstimatorInputSpec):
    model_file = File(exists=True, mandatory=True, desc="ONNX network")


class _NNEstimateOutputSpec(_EstimateOutputSpec):
    odi_sd_file = File(exists=True, desc="standard deviation of ODI (the network's spread head)")
    ndi_sd_file = File(exists=True, desc="standard deviation of NDI (the network's spread head)")
    fwf_sd_file = File(exists=True, desc="standard deviation of FWF (the network's spread head)")
    uncertainty = traits.Dict(traits.Str, traits.Any, desc="how the SDs were computed")


class NNEstimate(SimpleInterface):
    """ODI, NDI and FWF maps predicted by an ONNX network (ONNX Runtime, CPU), and direction.

    The fibre direction comes from the shells' quadratic fits
    (:func:`noddi_bids.nn.features.fibre_direction`); networks with a spread head also give the
    standard deviation of each estimate
    (:meth:`~noddi_bids.nn.infer.OnnxEstimator.predict_with_spread`).

    Examples
    --------
    >>> nn = NNEstimate(signals_file="signals.npy", mask_file="brain_mask.nii.gz",
    ...                 scheme=run.scheme, model_file="nn-mle.onnx")  # doctest: +SKIP
    >>> nn.run().outputs.estimator  # doctest: +SKIP
    'nnmle'
    """

    input_spec = _NNEstimateInputSpec
    output_spec = _NNEstimateOutputSpec

    def _run_interface(self, runtime):
        from noddi_bids.nn.features import FeatureError, design, fibre_direction
        from noddi_bids.nn.infer import OnnxEstimator

        scheme = self.inputs.scheme
        estimator = OnnxEstimator(self.inputs.model_file, n_threads=self.inputs.n_threads)
        estimator.check_scheme(scheme)
        signals = np.load(self.inputs.signals_file)
        meta = estimator.metadata
        predicted, spread = estimator.predict_with_spread(signals, scheme)
        maps = {name: predicted[:, i] for i, name in enumerate(meta.parameters)}
        if spread is not None:
            maps.update({f"{name}_sd": spread[:, i] for i, name in enumerate(meta.parameters)})
            self._results["uncertainty"] = io.network_uncertainty_details()
        try:
            maps["direction"] = fibre_direction(signals, scheme)
        except FeatureError as err:
            runtime.stderr = f"no fibre direction map: {err}"
        details = io.network_details(
            model_file=os.path.basename(self.inputs.model_file),
            sha256=estimator.sha256,
            labels=meta.labels,
            inputs=meta.describe(),
            fit_orders=None if meta.features is None else design(scheme, meta.features).orders,
            version=str(meta.version),
            snr=meta.snr,
            direction="direction" in maps,
        )
        self._results.update(
            save_volumes(_with_modulated(maps), self.inputs.mask_file),
            estimator=NETWORK_ESTIMATORS[meta.labels],
            d_par=float(meta.d_par),
            d_iso=float(meta.d_iso),
            details=details,
        )
        return runtime


class _MLEEstimateInputSpec(_EstimatorInputSpec):
    d_par = traits.Float(mandatory=True, desc="intra-neurite parallel diffusivity, mm^2/s")


class _MLEEstimateOutputSpec(_EstimateOutputSpec):
    direction_file = File(exists=True, desc="mean fibre orientation (X, Y, Z, 3)")
    s0_file = File(exists=True, desc="fitted S0 relative to the mean b = 0 (work folder only)")
    odi_sd_file = File(exists=True, desc="standard deviation of ODI (Fisher information)")
    ndi_sd_file = File(exists=True, desc="standard deviation of NDI (Fisher information)")
    fwf_sd_file = File(exists=True, desc="standard deviation of FWF (Fisher information)")
    singular_file = File(exists=True, desc="fitted voxels without a standard deviation")
    uncertainty = traits.Dict(traits.Str, traits.Any, desc="how the SDs were computed")


class MLEEstimate(SimpleInterface):
    """ODI, NDI, FWF and fibre direction maps from the batched Rician maximum-likelihood fit.

    With the standard deviations of ODI, NDI and FWF from the Fisher information at the estimate
    (:meth:`noddi_bids.fit.mle.NoddiMLE.standard_deviations`) and the fitted voxels that have
    none (a singular information matrix).

    Examples
    --------
    >>> fit = MLEEstimate(signals_file="signals.npy", mask_file="brain_mask.nii.gz",
    ...                   scheme=run.scheme, d_par=1.7e-3)  # doctest: +SKIP
    >>> fit.run().outputs.direction_file  # doctest: +SKIP
    '.../direction.nii.gz'
    """

    input_spec = _MLEEstimateInputSpec
    output_spec = _MLEEstimateOutputSpec

    def _run_interface(self, runtime):
        from noddi_bids.fit.mle import NoddiMLE

        inputs = self.inputs
        signals = np.load(inputs.signals_file)
        model = NoddiMLE(inputs.scheme, d_par=inputs.d_par, n_threads=inputs.n_threads)
        fit = model.fit(signals, progress=False)
        converged = float(np.mean(fit.converged)) if fit.converged.size else 0.0
        maps = {name: getattr(fit, name) for name in (*MAPS, "s0")}
        deviations = model.standard_deviations(signals, fit)
        fitted = np.all(np.isfinite(fit.parameters), axis=1)
        singular = fitted & np.any(np.isnan(deviations), axis=1)
        for column, name in enumerate(PARAMETERS):
            maps[f"{name}_sd"] = deviations[:, column]
        maps["singular"] = singular
        self._results.update(
            save_volumes(_with_modulated(maps), self.inputs.mask_file),
            estimator=MLE,
            d_par=self.inputs.d_par,
            d_iso=D_ISO,
            details=io.fit_details(converged),
            uncertainty=io.uncertainty_details(int(singular.sum())),
        )
        return runtime


def _with_modulated(maps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the tissue-fraction-modulated ODI and NDI (QSIRecon's modulated maps) to ``maps``."""
    modulated = {
        name: tissue_fraction_modulated(np.asarray(maps[source]), np.asarray(maps["fwf"]))
        for name, source in MODULATED_FROM.items()
    }
    return {**maps, **modulated}
