"""Interfaces running the NODDI estimators (ONNX network, maximum-likelihood fit) on signals.

Each writes the maps of the brain-mask voxels as NIfTI images and an *estimate record*
(``estimate.json``): the ``desc-`` label of the estimator, the map files and the sidecar
metadata shared by its maps. The derivatives writer and the tissue table read that record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from noddi_bids.io.derivatives import ESTIMATOR_DESCRIPTIONS, NN_DESC
from noddi_bids.model.noddi import D_ISO
from noddi_bids.model.scheme import Scheme, read_scheme


class _SignalsInputSpec(BaseInterfaceInputSpec):
    signals_file = File(exists=True, mandatory=True, desc="normalised signals (N, M), .npy")
    mask_file = File(exists=True, mandatory=True, desc="mask whose voxels the rows are")
    bval_file = File(exists=True, mandatory=True, desc="b-values (s/mm^2)")
    bvec_file = File(exists=True, mandatory=True, desc="b-vectors")
    b0_threshold = traits.Float(mandatory=True, desc="b <= this (s/mm^2) counts as b = 0")
    n_threads = traits.Int(1, usedefault=True, desc="threads of the estimator")


class _EstimateOutputSpec(TraitedSpec):
    estimate_file = File(exists=True, desc="estimate record (JSON)")
    odi_file = File(exists=True, desc="orientation dispersion index map")
    ndi_file = File(exists=True, desc="neurite density index map")
    fwf_file = File(exists=True, desc="free-water fraction map")
    direction_file = File(desc="mean fibre orientation (X, Y, Z, 3)")


class _NNEstimateInputSpec(_SignalsInputSpec):
    model_file = File(exists=True, mandatory=True, desc="ONNX network")


class NNEstimate(SimpleInterface):
    """ODI, NDI and FWF maps predicted by an ONNX network (ONNX Runtime, CPU), and direction.

    The fibre direction comes from the shells' quadratic fits
    (:func:`noddi_bids.nn.features.fibre_direction`).

    Examples
    --------
    >>> nn = NNEstimate(signals_file="signals.npy", mask_file="brain_mask.nii.gz",
    ...                 bval_file="dwi.bval", bvec_file="dwi.bvec", b0_threshold=50.0,
    ...                 model_file="nn-mle.onnx")  # doctest: +SKIP
    >>> nn.run().outputs.estimate_file  # doctest: +SKIP
    '.../estimate.json'
    """

    input_spec = _NNEstimateInputSpec
    output_spec = _EstimateOutputSpec

    def _run_interface(self, runtime):
        from noddi_bids.nn.features import FeatureError, design, fibre_direction
        from noddi_bids.nn.infer import OnnxEstimator

        scheme = _scheme(self.inputs)
        estimator = OnnxEstimator(self.inputs.model_file, n_threads=self.inputs.n_threads)
        estimator.check_scheme(scheme)
        signals = np.load(self.inputs.signals_file)
        predicted = estimator.predict(signals, scheme) if signals.shape[0] else np.empty((0, 3))
        meta = estimator.metadata
        desc = NN_DESC[meta.labels]
        sidecar = {
            **_common_sidecar(desc, scheme, float(meta.d_par), float(meta.d_iso)),
            "ModelFile": Path(self.inputs.model_file).name,
            "ModelSHA256": estimator.sha256,
            "ModelLabels": meta.labels,
            "ModelInputs": meta.describe(),
            **(
                {}
                if meta.features is None
                else {"FitOrders": list(design(scheme, meta.features).orders)}
            ),
            "ModelVersion": str(meta.version),
            "ModelTrainingSNR": meta.snr,
            "Software": "ONNX Runtime",
        }
        maps = {name: predicted[:, i] for i, name in enumerate(("odi", "ndi", "fwf"))}
        try:
            maps["direction"] = fibre_direction(signals, scheme)
            sidecar["DirectionMethod"] = (
                "eigenvector of least signal of the shells' order-2 spherical-harmonic fits"
            )
        except FeatureError as err:
            runtime.stderr = f"no fibre direction map: {err}"
        self._results.update(_save_estimate(desc, maps, self.inputs.mask_file, sidecar))
        return runtime


class _MLEEstimateInputSpec(_SignalsInputSpec):
    d_par = traits.Float(mandatory=True, desc="intra-neurite parallel diffusivity, mm^2/s")


class _MLEEstimateOutputSpec(_EstimateOutputSpec):
    direction_file = File(exists=True, desc="mean fibre orientation (X, Y, Z, 3)")


class MLEEstimate(SimpleInterface):
    """ODI, NDI, FWF and fibre direction maps from the batched Rician maximum-likelihood fit.

    Examples
    --------
    >>> fit = MLEEstimate(signals_file="signals.npy", mask_file="brain_mask.nii.gz",
    ...                   bval_file="dwi.bval", bvec_file="dwi.bvec", b0_threshold=50.0,
    ...                   d_par=1.7e-3)  # doctest: +SKIP
    >>> fit.run().outputs.direction_file  # doctest: +SKIP
    '.../direction.nii.gz'
    """

    input_spec = _MLEEstimateInputSpec
    output_spec = _MLEEstimateOutputSpec

    def _run_interface(self, runtime):
        from noddi_bids.fit.mle import NoddiMLE

        scheme = _scheme(self.inputs)
        signals = np.load(self.inputs.signals_file)
        model = NoddiMLE(scheme, d_par=self.inputs.d_par, n_threads=self.inputs.n_threads)
        fit = model.fit(signals, progress=False)
        sidecar = {
            **_common_sidecar("mle", scheme, self.inputs.d_par, D_ISO),
            "NoiseModel": "Rician; sigma per voxel from the b = 0 volumes",
            "ConvergedFraction": float(np.mean(fit.converged)) if fit.converged.size else 0.0,
        }
        maps = {"odi": fit.odi, "ndi": fit.ndi, "fwf": fit.fwf, "direction": fit.direction}
        self._results.update(_save_estimate("mle", maps, self.inputs.mask_file, sidecar))
        return runtime


def _scheme(inputs: Any) -> Scheme:
    return read_scheme(inputs.bval_file, inputs.bvec_file, b0_threshold=inputs.b0_threshold)


def _common_sidecar(desc: str, scheme: Scheme, d_par: float, d_iso: float) -> dict[str, Any]:
    return {
        "Model": "NODDI",
        "Estimator": desc,
        "EstimatorDescription": ESTIMATOR_DESCRIPTIONS[desc],
        "Dpar": d_par,
        "Diso": d_iso,
        "DiffusivityUnits": "mm^2/s",
        "Scheme": {
            "Summary": scheme.summary(),
            "Hash": scheme.hash,
            "Shells": [float(b) for b in scheme.shells],
            "ShellCounts": [int(n) for n in scheme.shell_counts],
            "B0Volumes": scheme.n_b0,
            "B0Threshold": scheme.b0_threshold,
            "BValueUnits": "s/mm^2",
        },
    }


def _save_estimate(
    desc: str, maps: Mapping[str, np.ndarray], mask_file: str, sidecar: Mapping[str, Any]
) -> dict[str, str]:
    """Write each map as a volume (0 outside the mask) and the estimate record."""
    mask_image = nib.load(mask_file)
    mask = np.asarray(mask_image.dataobj) > 0
    header = mask_image.header.copy()
    header.set_data_dtype(np.float32)
    files = {}
    for name, values in maps.items():
        values = np.asarray(values, dtype=np.float32)
        volume = np.zeros(mask.shape + values.shape[1:], dtype=np.float32)
        volume[mask] = values
        files[name] = os.path.abspath(f"{name}.nii.gz")
        nib.Nifti1Image(volume, mask_image.affine, header).to_filename(files[name])
    record = {"desc": desc, "maps": files, "sidecar": dict(sidecar)}
    estimate_file = os.path.abspath("estimate.json")
    with open(estimate_file, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    outputs = {f"{name}_file": path for name, path in files.items()}
    return {"estimate_file": estimate_file, **outputs}


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON work record written by a node (estimate, QC or tissue record)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
