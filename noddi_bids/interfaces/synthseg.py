"""Interface to FreeSurfer's ``mri_synthseg`` (``--run-synthseg``)."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    CommandLine,
    CommandLineInputSpec,
    File,
    TraitedSpec,
    traits,
)


class _SynthSegInputSpec(CommandLineInputSpec):
    in_file = File(exists=True, mandatory=True, argstr="--i %s", desc="image to segment")
    out_file = File(
        "synthseg.nii.gz", usedefault=True, argstr="--o %s", desc="label volume written"
    )
    posteriors_file = File(
        "synthseg_posteriors.nii.gz", usedefault=True, argstr="--post %s", desc="posteriors"
    )
    robust = traits.Bool(True, usedefault=True, argstr="--robust", desc="SynthSeg-robust")
    num_threads = traits.Int(1, usedefault=True, argstr="--threads %d", desc="CPU threads")
    cpu = traits.Bool(True, usedefault=True, argstr="--cpu", desc="run on the CPU")


class _SynthSegOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="label volume (FreeSurfer labels)")
    posteriors_file = File(exists=True, desc="4-D posteriors, one frame per label")


class MRISynthSeg(CommandLine):
    """Run ``mri_synthseg`` (FreeSurfer >= 7.3) with posteriors.

    Examples
    --------
    >>> seg = MRISynthSeg(in_file="mean_b0.nii.gz")  # doctest: +SKIP
    >>> seg.cmdline  # doctest: +SKIP
    'mri_synthseg --cpu --i mean_b0.nii.gz --o synthseg.nii.gz ...'
    """

    _cmd = "mri_synthseg"
    input_spec = _SynthSegInputSpec
    output_spec = _SynthSegOutputSpec

    def _list_outputs(self):
        return {
            "out_file": os.path.abspath(self.inputs.out_file),
            "posteriors_file": os.path.abspath(self.inputs.posteriors_file),
        }
