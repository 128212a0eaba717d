"""Preprocessed derivative datasets (QSIPrep-shaped) as input, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from conftest import make_qsiprep_dataset

from noddi_bids.cli.run import main

PREFIX = "sub-01_space-T1w"


def run(*args: object) -> int:
    return main([str(a) for a in args])


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def test_qsiprep_dataset_end_to_end(tmp_path, model_cache):
    """Accepted without --skip-bids-validation; space- kept; the pipeline's brain mask used."""
    phantom = make_qsiprep_dataset(tmp_path / "qsiprep", brain_mask=True)
    out = tmp_path / "out"
    assert run(phantom.root, out, "participant", "-w", tmp_path / "work", "--nprocs", "1") == 0
    folder = out / "sub-01" / "dwi"
    names = sorted(p.name for p in folder.iterdir())
    assert names and all(name.startswith(f"{PREFIX}_") for name in names)
    assert f"{PREFIX}_model-noddi_param-icvf_desc-nnmle_dwimap.nii.gz" in names
    assert f"{PREFIX}_label-WM_mask.nii.gz" in names
    supplied = load(phantom.root / "sub-01" / "dwi" / f"{PREFIX}_desc-brain_mask.nii.gz")
    np.testing.assert_array_equal(load(folder / f"{PREFIX}_desc-brain_mask.nii.gz"), supplied)
    mask = json.loads((folder / f"{PREFIX}_desc-brain_mask.json").read_text())
    assert mask["BrainMask"] == "input dataset (qsiprep desc-brain_mask)"
    assert mask["Sources"][-1] == f"bids:preprocessed:sub-01/dwi/{PREFIX}_desc-brain_mask.nii.gz"
    od = folder / f"{PREFIX}_model-noddi_param-od_desc-nnmle_dwimap.json"
    sidecar = json.loads(od.read_text())
    dwi_uri = f"bids:preprocessed:sub-01/dwi/{PREFIX}_desc-preproc_dwi.nii.gz"
    assert sidecar["Sources"][0] == dwi_uri and sidecar["SpatialReference"] == dwi_uri
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"] == {"preprocessed": phantom.root.as_uri()}
    assert (out / "sub-01.html").is_file()
    assert f"{PREFIX}_model-noddi_param-od_desc-nnmle_dwimap" in (out / "sub-01.html").read_text()
    assert run(phantom.root, out, "group") == 0
    group = pd.read_csv(out / "group_tissue_stats.tsv", sep="\t")
    assert list(group.columns[:2]) == ["participant_id", "space"]
    assert set(group["space"]) == {"T1w"}


def test_skip_validation_keeps_space(tmp_path, model_cache):
    """--skip-bids-validation used to drop space- from the names."""
    phantom = make_qsiprep_dataset(tmp_path / "qsiprep")
    out = tmp_path / "out"
    assert run(phantom.root, out, "participant", "-w", tmp_path / "work", "--nprocs", "1",
               "--skip-bids-validation") == 0  # fmt: skip
    assert (out / "sub-01" / "dwi" / f"{PREFIX}_desc-brain_mask.nii.gz").is_file()
    mask = json.loads((out / "sub-01" / "dwi" / f"{PREFIX}_desc-brain_mask.json").read_text())
    assert mask["BrainMask"] == "dipy median_otsu"
