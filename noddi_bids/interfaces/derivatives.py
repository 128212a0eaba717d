"""Interfaces writing BIDS derivatives (names and sidecars from :mod:`noddi_bids.io.derivatives`).

Every file goes to a temporary name in its destination folder first and is moved into place
with :func:`os.replace`. Each writer returns the paths it wrote, so report and DICOM nodes can
be connected after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from noddi_bids.interfaces.specs import scheme_trait
from noddi_bids.io import derivatives as io
from noddi_bids.vocabulary import (
    ESTIMATORS,
    FLAGS,
    MAPS,
    MODELS,
    MODULATED_MAPS,
    PARAMETERS,
    QUALITY_MAPS,
    TISSUES,
)


class _DerivativesInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(mandatory=True, desc="derivatives folder")
    entities = traits.Dict(traits.Str, traits.Str, mandatory=True, desc="entities of the run")
    sources = traits.List(
        traits.Str, mandatory=True, desc="BIDS URIs of the source files, the dwi image first"
    )


class _ExcludedInputSpec(_DerivativesInputSpec):
    n_nonfinite = traits.Int(mandatory=True, desc="brain voxels left out: NaN or inf data")
    n_nonpositive_b0 = traits.Int(mandatory=True, desc="brain voxels left out: mean b = 0 <= 0")


class _WrittenOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="files written (images and sidecars)")


class _WriteReferenceInputSpec(_ExcludedInputSpec):
    mean_b0 = File(exists=True, mandatory=True, desc="mean b = 0 image")
    mask_file = File(exists=True, mandatory=True, desc="brain mask")
    n_mask_voxels = traits.Int(mandatory=True, desc="voxels of the brain mask")
    brain_mask_origin = traits.Str(desc="where a given brain mask comes from; unset: computed")
    mask_sources = traits.List(
        traits.Str, desc="URIs of the brain mask given as input (--mask-dir, input dataset's own)"
    )


class WriteReference(SimpleInterface):
    """Write the mean b = 0 image (``desc-meanb0_dwiref``) and brain mask (``desc-brain_mask``)."""

    input_spec = _WriteReferenceInputSpec
    always_run = True  # rewrite outputs even when the node is cached
    output_spec = _WrittenOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        origin = inputs.brain_mask_origin if isdefined(inputs.brain_mask_origin) else None
        mask = io.brain_mask_sidecar(origin, inputs.n_mask_voxels, _excluded(inputs))
        reference = _path(inputs, "dwiref", desc="meanb0")
        brain = _path(inputs, "mask", desc="brain")
        files = [
            *_write(inputs, inputs.mean_b0, reference, io.reference_sidecar()),
            *_write(inputs, inputs.mask_file, brain, mask, [*inputs.sources, *inputs.mask_sources]),
        ]
        self._results["out_files"] = files
        return runtime


class _WriteEstimateInputSpec(_ExcludedInputSpec):
    odi_file = File(exists=True, mandatory=True, desc="orientation dispersion index map")
    ndi_file = File(exists=True, mandatory=True, desc="neurite density index map")
    fwf_file = File(exists=True, mandatory=True, desc="free-water fraction map")
    direction_file = File(exists=True, desc="mean fibre orientation (X, Y, Z, 3)")
    estimator = traits.Enum(*ESTIMATORS, mandatory=True, desc="desc- label of the estimator")
    d_par = traits.Float(mandatory=True, desc="intra-neurite parallel diffusivity, mm^2/s")
    d_iso = traits.Float(mandatory=True, desc="free-water diffusivity, mm^2/s")
    details = traits.Dict(traits.Str, traits.Any, mandatory=True, desc="estimator's details")
    scheme = scheme_trait()
    odi_modulated_file = File(exists=True, desc="ODI x (1 - FWF)")
    ndi_modulated_file = File(exists=True, desc="NDI x (1 - FWF)")
    model = traits.Enum(*MODELS, usedefault=True, desc="model- label of the NODDI variant")
    rmse_file = File(exists=True, desc="RMSE of the predicted signal")
    nrmse_file = File(exists=True, desc="RMSE / mean b = 0")
    outofmodel_file = File(exists=True, desc="out-of-model voxels")
    quality = traits.Dict(traits.Str, traits.Any, desc="how the goodness of fit was computed")
    odi_sd_file = File(exists=True, desc="standard deviation of ODI")
    ndi_sd_file = File(exists=True, desc="standard deviation of NDI")
    fwf_sd_file = File(exists=True, desc="standard deviation of FWF")
    singular_file = File(exists=True, desc="fitted voxels without a standard deviation")
    uncertainty = traits.Dict(traits.Str, traits.Any, desc="how the SDs were computed")
    gradient_check = traits.Dict(traits.Str, traits.Any, desc="gradient-table check of the run")


#: Standard-deviation maps an estimate may have (``<name>_sd_file``) -> their parameter.
SD_MAPS = {f"{name}_sd": name for name in PARAMETERS}


class _WriteEstimateOutputSpec(_WrittenOutputSpec):
    map_files = traits.Dict(traits.Str, File(exists=True), desc="map or flag name -> file written")


class WriteEstimate(SimpleInterface):
    """Write one estimator's maps (``model-<noddi|gmnoddi>_param-<p>_desc-<estimator>_dwimap``).

    The parameters, their tissue-fraction-modulated maps (``param-odmodulated``,
    ``param-icvfmodulated``) and, when given, the goodness-of-fit maps (``param-rmse``,
    ``param-nrmse``), out-of-model voxels (``model-noddi_param-outofmodel_desc-<est>_mask``),
    standard deviations (``param-<p>_stat-sd``) and voxels without one (``param-singular``).
    """

    input_spec = _WriteEstimateInputSpec
    always_run = True  # rewrite outputs even when the node is cached
    output_spec = _WriteEstimateOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        estimate = io.estimate_sidecar(
            inputs.estimator,
            inputs.d_par,
            inputs.d_iso,
            inputs.scheme,
            inputs.details,
            inputs.gradient_check if isdefined(inputs.gradient_check) else None,
            inputs.model,
        )
        excluded = _excluded(inputs)
        quality = inputs.quality if isdefined(inputs.quality) else {}
        uncertainty = inputs.uncertainty if isdefined(inputs.uncertainty) else {}
        details = {"rmse": quality, "nrmse": quality, "outofmodel": quality,
                   "singular": uncertainty}  # fmt: skip
        files, maps = [], {}
        names = (inputs.output_dir, inputs.entities)
        for name in (*MAPS, *MODULATED_MAPS, *QUALITY_MAPS, *FLAGS, *SD_MAPS):
            path = getattr(inputs, f"{name}_file")
            if not isdefined(path):
                continue
            if name in FLAGS:
                target = io.flag_path(*names, name, inputs.estimator, inputs.model)
                sidecar = io.flag_sidecar(name, estimate, details[name])
            elif name in SD_MAPS:
                parameter = SD_MAPS[name]
                target = io.map_path(*names, parameter, inputs.estimator, inputs.model, "sd")
                sidecar = io.map_sidecar(parameter, estimate, excluded, uncertainty, "sd")
            else:
                target = io.map_path(*names, name, inputs.estimator, inputs.model)
                sidecar = io.map_sidecar(name, estimate, excluded, details.get(name))
            written = _write(inputs, path, target, sidecar)
            maps[name] = written[0]
            files.extend(written)
        self._results.update(out_files=files, map_files=maps)
        return runtime


class _WriteTissueInputSpec(_DerivativesInputSpec):
    mask_files = traits.Dict(
        traits.Enum(*TISSUES), File(exists=True), mandatory=True, desc="tissue -> mask"
    )
    details = traits.Dict(traits.Str, traits.Any, mandatory=True, desc="how they were made")
    stats_file = File(exists=True, mandatory=True, desc="tissue table")


class WriteTissue(SimpleInterface):
    """Write the tissue masks (``label-<tissue>_mask``) and table (``desc-tissue_stats.tsv``)."""

    input_spec = _WriteTissueInputSpec
    always_run = True  # rewrite outputs even when the node is cached
    output_spec = _WrittenOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        files = []
        for tissue in (t for t in TISSUES if t in inputs.mask_files):
            sidecar = io.tissue_mask_sidecar(tissue, inputs.details)
            target = _path(inputs, "mask", label=tissue)
            files.extend(_write(inputs, inputs.mask_files[tissue], target, sidecar))
        table = _path(inputs, "stats", ".tsv", desc="tissue")
        files.append(str(io.copy_file(Path(inputs.stats_file), table)))
        sidecar = io.tissue_table_sidecar(inputs.details)
        files.append(str(io.write_json(sidecar, table.with_suffix(".json"))))
        self._results["out_files"] = files
        return runtime


def _excluded(inputs: Any) -> dict[str, int]:
    return io.excluded_voxels(inputs.n_nonfinite, inputs.n_nonpositive_b0)


def _path(inputs: Any, suffix: str, extension: str = ".nii.gz", **entities: str) -> Path:
    return io.derivative_path(inputs.output_dir, inputs.entities, suffix, extension, **entities)


def _write(
    inputs: Any,
    path: str,
    target: Path,
    sidecar: dict[str, Any],
    sources: list[str] | None = None,
) -> list[str]:
    """Write an image of the run and its sidecar (sources: default, the run's files)."""
    sidecar = io.image_sidecar(sidecar, inputs.sources if sources is None else sources)
    return [str(p) for p in io.write_image(Path(path), target, sidecar)]
