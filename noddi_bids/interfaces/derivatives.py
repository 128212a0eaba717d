"""Interfaces writing BIDS derivatives (names from :mod:`noddi_bids.io.derivatives`).

Every file goes to a temporary name in its destination folder first and is moved into place
with :func:`os.replace`. Each writer returns the paths it wrote, so report and DICOM nodes can
be connected after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from noddi_bids import __version__
from noddi_bids.interfaces.noddi import read_record
from noddi_bids.io import derivatives as io
from noddi_bids.tissue.stats import PARAMETER_UNITS, TABLE_COLUMNS, TISSUE_NAMES

#: Sidecar text of each map (``param-`` label -> description, units).
PARAM_SIDECARS = {
    "od": (
        "Orientation dispersion index (ODI), (2/pi) arctan(1/kappa)",
        PARAMETER_UNITS["odi"],
    ),
    "icvf": (
        "Neurite density index (NDI, intra-neurite volume fraction of tissue)",
        PARAMETER_UNITS["ndi"],
    ),
    "isovf": ("Free-water fraction (FWF, isotropic volume fraction)", PARAMETER_UNITS["fwf"]),
    "direction": (
        "Mean fibre orientation, unit vector in the b-vector frame (image axes)",
        "arbitrary",
    ),
}


class _DerivativesInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(mandatory=True, desc="derivatives folder")
    entities = traits.Dict(traits.Str, traits.Str, mandatory=True, desc="entities of the run")
    sources = traits.List(
        traits.Str, mandatory=True, desc="BIDS URIs of the source files, the dwi image first"
    )


class _WrittenOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="files written (images and sidecars)")


class _WriteReferenceInputSpec(_DerivativesInputSpec):
    mean_b0 = File(exists=True, mandatory=True, desc="mean b = 0 image")
    mask_file = File(exists=True, mandatory=True, desc="brain mask")
    qc_file = File(exists=True, mandatory=True, desc="JSON with excluded-voxel counts")
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
        qc = read_record(inputs.qc_file)
        mask = {"Type": "Brain", "Description": "Brain mask of the voxels estimated", **qc}
        reference = {"Description": "Mean of the b = 0 volumes"}
        files = [
            *_write_image(inputs.mean_b0, inputs, reference, "dwiref", desc="meanb0"),
            *_write_image(
                inputs.mask_file,
                inputs,
                mask,
                "mask",
                sources=[*inputs.sources, *inputs.mask_sources],
                desc="brain",
            ),
        ]
        self._results["out_files"] = files
        return runtime


class _WriteEstimateInputSpec(_DerivativesInputSpec):
    estimate_file = File(exists=True, mandatory=True, desc="estimate record")
    qc_file = File(exists=True, mandatory=True, desc="JSON with excluded-voxel counts")


class _WriteEstimateOutputSpec(_WrittenOutputSpec):
    map_files = traits.Dict(traits.Str, File(exists=True), desc="param label -> map written")


class WriteEstimate(SimpleInterface):
    """Write one estimator's maps (``model-noddi_param-<p>_desc-<estimator>_dwimap``)."""

    input_spec = _WriteEstimateInputSpec
    always_run = True  # rewrite outputs even when the node is cached
    output_spec = _WriteEstimateOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        record = read_record(inputs.estimate_file)
        qc = read_record(inputs.qc_file)
        files, maps = [], {}
        for name, path in record["maps"].items():
            param = io.PARAM_LABELS[name]
            description, units = PARAM_SIDECARS[param]
            sidecar = {
                "Description": description,
                "Units": units,
                **record["sidecar"],
                "ExcludedVoxels": qc["ExcludedVoxels"],
            }
            written = _write_image(
                path, inputs, sidecar, "dwimap", model="noddi", param=param, desc=record["desc"]
            )
            maps[param] = written[0]
            files.extend(written)
        self._results.update(out_files=files, map_files=maps)
        return runtime


class _WriteTissueInputSpec(_DerivativesInputSpec):
    tissue_file = File(exists=True, mandatory=True, desc="tissue record")
    stats_file = File(exists=True, mandatory=True, desc="tissue table")


class WriteTissue(SimpleInterface):
    """Write the tissue masks (``label-<tissue>_mask``) and table (``desc-tissue_stats.tsv``)."""

    input_spec = _WriteTissueInputSpec
    always_run = True  # rewrite outputs even when the node is cached
    output_spec = _WrittenOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        record = read_record(inputs.tissue_file)
        details = {key: value for key, value in record.items() if key != "masks"}
        files = []
        for tissue, path in record["masks"].items():
            sidecar = {
                "Type": "ROI",
                "Description": f"Mask of the {TISSUE_NAMES[tissue]} ({tissue}) on the dwi grid",
                **details,
            }
            files.extend(_write_image(path, inputs, sidecar, "mask", label=tissue))
        table = io.derivative_path(
            inputs.output_dir, inputs.entities, "stats", ".tsv", desc="tissue"
        )
        files.append(str(io.copy_file(Path(inputs.stats_file), table)))
        sidecar = {**TABLE_COLUMNS, "TissueMasks": details, "SoftwareVersion": __version__}
        files.append(str(io.write_json(sidecar, table.with_suffix(".json"))))
        self._results["out_files"] = files
        return runtime


def _write_image(
    path: str,
    inputs: Any,
    sidecar: dict[str, Any],
    suffix: str,
    sources: Sequence[str] | None = None,
    **entities: str,
) -> list[str]:
    """Copy an image to its derivative name and write its sidecar; return both paths.

    Every image sidecar ends with ``SpatialReference`` (the dwi run, first source, whose grid
    every image is on), ``Sources`` (default: the run's) and ``SoftwareVersion``.
    """
    target = io.derivative_path(inputs.output_dir, inputs.entities, suffix, ".nii.gz", **entities)
    io.copy_file(Path(path), target)
    json_path = target.with_name(target.name.removesuffix(".nii.gz") + ".json")
    sidecar = {
        **sidecar,
        "SpatialReference": inputs.sources[0],
        "Sources": list(inputs.sources if sources is None else sources),
        "SoftwareVersion": __version__,
    }
    io.write_json(sidecar, json_path)
    return [str(target), str(json_path)]
