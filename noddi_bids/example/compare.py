"""Error of the app's maps against the ground truth of the phantom example."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from noddi_bids.vocabulary import MAPS, TISSUES


def compare_with_truth(example_dir: Path, derivatives_dir: Path) -> pd.DataFrame:
    """Error of every estimator's maps against the ground truth, per tissue.

    Parameters
    ----------
    example_dir : Path
        Root written by :func:`make_example`.
    derivatives_dir : Path
        Output folder of ``noddi-bids`` run on it.

    Returns
    -------
    pandas.DataFrame
        Columns tissue, estimator, parameter, n_voxels, truth (mean), estimate (mean), bias
        (mean of estimate - truth) and mae (mean absolute error), in the app's tissue masks
        (CSF: FWF only).
    """
    from noddi_bids.tissue.stats import TISSUE_PARAMETERS

    truth_dir = Path(example_dir) / "derivatives" / "truth" / "sub-01" / "dwi"
    out = Path(derivatives_dir) / "sub-01" / "dwi"

    def load(path: Path) -> np.ndarray:
        return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)

    estimators = sorted(
        {p.name.split("desc-")[1].split("_")[0] for p in out.glob("*model-noddi*_dwimap.nii.gz")}
    )
    rows = []
    for tissue in TISSUES:
        mask_file = out / f"sub-01_label-{tissue}_mask.nii.gz"
        if not mask_file.exists():
            continue
        mask = load(mask_file) > 0
        for estimator in estimators:
            for name in TISSUE_PARAMETERS[tissue]:
                param = MAPS[name].label
                truth = load(
                    truth_dir / f"sub-01_model-noddi_param-{param}_desc-truth_dwimap.nii.gz"
                )
                estimate = load(
                    out / f"sub-01_model-noddi_param-{param}_desc-{estimator}_dwimap.nii.gz"
                )
                keep = mask & np.isfinite(estimate)
                error = estimate[keep] - truth[keep]
                rows.append(
                    {
                        "tissue": tissue,
                        "estimator": estimator,
                        "parameter": name,
                        "n_voxels": int(keep.sum()),
                        "truth": float(truth[keep].mean()),
                        "estimate": float(estimate[keep].mean()),
                        "bias": float(error.mean()),
                        "mae": float(np.abs(error).mean()),
                    }
                )
    return pd.DataFrame(rows)
