"""Writing the values of the brain-mask voxels as volumes in a node's work folder."""

from __future__ import annotations

import os
from collections.abc import Mapping

import nibabel as nib
import numpy as np


def save_volumes(values: Mapping[str, np.ndarray], mask_file: str) -> dict[str, str]:
    """Write each array of mask-voxel values as a volume (0 outside the mask).

    Parameters
    ----------
    values : mapping
        Name -> values of the mask voxels (C order), shape (N,) or (N, K); boolean arrays are
        written as uint8, others as float32.
    mask_file : str
        The mask (its grid, affine and header are used).

    Returns
    -------
    dict
        ``{"<name>_file": path}`` of the volumes written (``<name>.nii.gz`` in the current
        folder).
    """
    mask_image = nib.load(mask_file)
    mask = np.asarray(mask_image.dataobj) > 0
    files = {}
    for name, array in values.items():
        array = np.asarray(array)
        dtype = np.uint8 if array.dtype == bool else np.float32
        volume = np.zeros(mask.shape + array.shape[1:], dtype=dtype)
        volume[mask] = array
        header = mask_image.header.copy()
        header.set_data_dtype(dtype)
        files[f"{name}_file"] = os.path.abspath(f"{name}.nii.gz")
        nib.Nifti1Image(volume, mask_image.affine, header).to_filename(files[f"{name}_file"])
    return files
