"""Approximate tissue classes from the diffusion data alone (no SynthSeg).

A diffusion tensor is fitted (DIPY, weighted least squares) to the volumes with
b <= :data:`DTI_MAX_B` and each brain voxel is classified by its mean diffusivity (MD) and
fractional anisotropy (FA):

- CSF: MD >= 2.0e-3 mm^2/s (free water has 3.0e-3 at body temperature);
- WM:  FA >= 0.4 and MD < 1.1e-3 mm^2/s;
- GM:  FA < 0.2 and MD < 1.1e-3 mm^2/s.

Voxels in between (partial volume, crossing fibres, deep nuclei) belong to no class. This is a
coarse stand-in for a segmentation: thresholds on FA and MD are scanner- and age-dependent and
the classes are not anatomical. Use SynthSeg for analysis.
"""

from __future__ import annotations

import numpy as np
from dipy.core.gradients import gradient_table
from dipy.reconst.dti import TensorModel

from noddi_bids.model.scheme import Scheme

#: Largest b-value (s/mm^2) of the volumes the tensor is fitted to (when enough remain).
DTI_MAX_B = 1500.0
#: Classification thresholds (MD in mm^2/s).
CSF_MIN_MD = 2.0e-3
TISSUE_MAX_MD = 1.1e-3
WM_MIN_FA = 0.4
GM_MAX_FA = 0.2
_MIN_DTI_DIRECTIONS = 6


def dti_fa_md(signals: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """FA and MD (mm^2/s) of normalised signals.

    Parameters
    ----------
    signals : ndarray, shape (N, M)
        Signals divided by the mean b = 0 signal.
    scheme : Scheme
        Their acquisition scheme.

    Returns
    -------
    fa, md : ndarray, shape (N,)
    """
    keep = scheme.bvals <= DTI_MAX_B
    if np.count_nonzero(keep & ~scheme.b0_mask) < _MIN_DTI_DIRECTIONS:
        keep = np.ones_like(keep)
    table = gradient_table(
        scheme.bvals[keep], bvecs=scheme.bvecs[keep], b0_threshold=scheme.b0_threshold
    )
    fit = TensorModel(table, fit_method="WLS").fit(np.maximum(signals[:, keep], 1e-6))
    return np.nan_to_num(fit.fa), np.nan_to_num(fit.md)


def classify_tissues(signals: np.ndarray, scheme: Scheme) -> dict[str, np.ndarray]:
    """Approximate WM, GM and CSF classes of voxels from FA and MD.

    Parameters
    ----------
    signals : ndarray, shape (N, M)
        Normalised signals of the brain voxels.
    scheme : Scheme
        Acquisition scheme.

    Returns
    -------
    dict
        ``{"WM": mask, "GM": mask, "CSF": mask}``, boolean arrays of shape (N,), disjoint.
    """
    fa, md = dti_fa_md(signals, scheme)
    return {
        "WM": (fa >= WM_MIN_FA) & (md < TISSUE_MAX_MD),
        "GM": (fa < GM_MAX_FA) & (md < TISSUE_MAX_MD),
        "CSF": md >= CSF_MIN_MD,
    }
