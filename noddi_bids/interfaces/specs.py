"""Input traits shared by several interfaces: the acquisition scheme and the normalised signals.

The scheme travels along the graph as the :class:`~noddi_bids.model.scheme.Scheme` object that
:func:`noddi_bids.io.bids.collect_dwi_runs` read and validated once per run: no node reads the
bval/bvec files again. Nipype hashes it by its ``repr`` (volume counts per shell and the content
hash, :attr:`Scheme.hash`), the identity noddi-bids gives a protocol.
"""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File, traits

from noddi_bids.model.scheme import Scheme


def scheme_trait() -> traits.Instance:
    """Mandatory input trait holding the run's validated scheme."""
    return traits.Instance(Scheme, mandatory=True, desc="the run's validated acquisition scheme")


class SignalsInputSpec(BaseInterfaceInputSpec):
    """Normalised signals of the brain-mask voxels and their scheme."""

    signals_file = File(exists=True, mandatory=True, desc="normalised signals (N, M), .npy")
    mask_file = File(exists=True, mandatory=True, desc="mask whose voxels the rows are")
    scheme = scheme_trait()
