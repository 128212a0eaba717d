"""QSIRecon's NODDI outputs: tissue-fraction-modulated maps and grey-matter NODDI (--gm-noddi)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import make_bids_dataset

from noddi_bids.cli.run import main
from noddi_bids.model.noddi import GM_D_PAR, tissue_fraction_modulated

LABELS = ("od", "icvf", "isovf", "direction", "odmodulated", "icvfmodulated", "rmse", "nrmse")


def run(*args: object) -> int:
    return main([str(a) for a in args])


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)


def test_modulated_is_the_tissue_fraction_times_the_parameter():
    np.testing.assert_allclose(
        tissue_fraction_modulated(np.array([0.2, 0.7, 0.5]), np.array([0.0, 0.5, 1.0])),
        [0.2, 0.35, 0.0],
    )


def test_gm_noddi_writes_a_second_set_of_maps(tmp_path, model_cache, tiny_gm_model):
    phantom = make_bids_dataset(tmp_path / "bids")
    out = tmp_path / "out"
    assert run(phantom.root, out, "participant", "-w", tmp_path / "work", "--nprocs", "1",
               "--mle", "--gm-noddi") == 0  # fmt: skip
    folder = out / "sub-01" / "dwi"
    mask = load(folder / "sub-01_desc-brain_mask.nii.gz") > 0
    for model, d_par in (("noddi", 1.7e-3), ("gmnoddi", GM_D_PAR)):
        for estimator in ("nnmle", "mle"):
            stem = f"sub-01_model-{model}_param-{{}}_desc-{estimator}"
            for label in LABELS:
                assert (folder / f"{stem.format(label)}_dwimap.nii.gz").is_file(), (model, label)
            assert (folder / f"{stem.format('outofmodel')}_mask.nii.gz").is_file()
            sidecar = json.loads((folder / f"{stem.format('icvf')}_dwimap.json").read_text())
            assert sidecar["Dpar"] == pytest.approx(d_par)
            assert sidecar["Model"] == {"noddi": "NODDI", "gmnoddi": "gmNODDI"}[model]
            maps = {label: load(folder / f"{stem.format(label)}_dwimap.nii.gz")[mask]
                    for label in LABELS[:3] + LABELS[4:6]}  # fmt: skip
            for modulated, parameter in (("odmodulated", "od"), ("icvfmodulated", "icvf")):
                expected = tissue_fraction_modulated(maps[parameter], maps["isovf"])
                np.testing.assert_allclose(maps[modulated], expected, rtol=1e-6, atol=1e-7)
    # another d_par, another estimate: the fit of the phantom's grey matter differs
    gm = mask & (phantom.tissue == 2)
    ndi = {m: load(folder / f"sub-01_model-{m}_param-icvf_desc-mle_dwimap.nii.gz")[gm]
           for m in ("noddi", "gmnoddi")}  # fmt: skip
    assert np.mean(np.abs(ndi["noddi"] - ndi["gmnoddi"])) > 0.02
    # the tissue table and the DICOM series stay with the model of --dpar
    table = pd.read_csv(folder / "sub-01_desc-tissue_stats.tsv", sep="\t")
    assert sorted(table["estimator"].unique()) == ["mle", "nnmle"]


def test_gm_noddi_needs_its_own_network(tmp_path, capsys):
    phantom = make_bids_dataset(tmp_path / "bids")
    code = run(phantom.root, tmp_path / "out", "participant", "-w", tmp_path / "work",
               "--gm-noddi", "--model", "nn-mle")  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and not (tmp_path / "out").exists()
    assert "No shipped nn-mle network" in error and "--model auto" in error


def test_gm_noddi_with_the_same_dpar_is_refused(tmp_path, capsys):
    code = run(tmp_path, tmp_path / "out", "participant", "--gm-noddi", "--dpar", "0.0011")
    assert code == 64 and "--gm-noddi" in capsys.readouterr().err
