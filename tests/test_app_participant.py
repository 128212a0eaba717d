"""End-to-end participant runs through the real command line (``noddi_bids.cli.run.main``)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import check_table_precision, make_bids_dataset

from noddi_bids import __version__
from noddi_bids.cli.run import main
from noddi_bids.model.scheme import reference_scheme
from noddi_bids.nn.store import resolve_model
from noddi_bids.tissue.stats import PARAMETERS, TISSUE_PARAMETERS

PARAMS = {"odi": "od", "ndi": "icvf", "fwf": "isovf"}


def run(*args: object) -> int:
    return main([str(a) for a in args])


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.fixture
def scheme_reads(monkeypatch) -> Counter:
    """Reads of the dataset's bval/bvec files (by name) through ``noddi_bids.model.scheme``."""
    from noddi_bids.model import scheme

    reads: Counter = Counter()
    read_table = scheme._read_table

    def counting(path):
        if Path(path).name.startswith("sub-"):
            reads[Path(path).name] += 1
        return read_table(path)

    monkeypatch.setattr(scheme, "_read_table", counting)
    return reads


#: One run reads its scheme once, when the runs are collected (five times before the scheme
#: travelled along the graph: collection, reference, network, fit, built-in tissues).
READ_ONCE = {"sub-01_dwi.bval": 1, "sub-01_dwi.bvec": 1}
#: Work records nodes once passed each other instead of graph edges.
RECORDS = ("estimate.json", "tissue.json", "qc.json")


def check_table_against_maps(folder: Path, prefix: str, estimators: list[str]) -> pd.DataFrame:
    """The tissue table must equal a direct computation from the written maps and masks."""
    check_table_precision(folder / f"{prefix}_desc-tissue_stats.tsv")
    table = pd.read_csv(folder / f"{prefix}_desc-tissue_stats.tsv", sep="\t", na_values="n/a")
    assert list(table["tissue"].unique()) == ["WM", "GM", "CSF"]
    assert sorted(table["estimator"].unique()) == sorted(estimators)
    for row in table.itertuples():
        mask = load(folder / f"{prefix}_label-{row.tissue}_mask.nii.gz") > 0
        stem = f"{prefix}_model-noddi_param-{{}}_desc-{row.estimator}_dwimap.nii.gz"
        values = {p: load(folder / stem.format(PARAMS[p]))[mask] for p in PARAMETERS}
        finite = np.all([np.isfinite(v) for v in values.values()], axis=0)
        assert row.n_voxels == finite.sum()
        for parameter in PARAMETERS:
            mean, sd = getattr(row, f"{parameter}_mean"), getattr(row, f"{parameter}_sd")
            if parameter in TISSUE_PARAMETERS[row.tissue] and row.n_voxels:
                expected = values[parameter][finite].astype(np.float64)
                # written with 4 decimals (half a unit of the last one)
                np.testing.assert_allclose(mean, expected.mean(), rtol=0, atol=5e-5 + 1e-9)
                np.testing.assert_allclose(sd, expected.std(), rtol=0, atol=5e-5 + 1e-9)
            else:
                assert np.isnan(mean) and np.isnan(sd)
        nrmse = load(folder / stem.format("nrmse"))[mask][finite]
        flags = load(folder / stem.format("outofmodel").replace("dwimap", "mask"))[mask][finite]
        if row.n_voxels:
            np.testing.assert_allclose(row.nrmse_median, np.median(nrmse), atol=5e-5 + 1e-9)
            np.testing.assert_allclose(row.outofmodel_fraction, flags.mean(), atol=5e-5 + 1e-9)
    return table


def test_nn_only_builtin_tissues(tmp_path, model_cache, scheme_reads):
    phantom = make_bids_dataset(tmp_path / "bids", nan_voxels=2)
    out, work = tmp_path / "out", tmp_path / "work"
    assert run(phantom.root, out, "participant", "-w", work, "--nprocs", "1") == 0
    assert scheme_reads == READ_ONCE
    folder = out / "sub-01" / "dwi"
    names = sorted(p.name for p in folder.iterdir())
    expected = sorted(
        [f"sub-01_model-noddi_param-{p}_desc-nnmle_dwimap.{e}"
         for p in [*PARAMS.values(), "direction", "odmodulated", "icvfmodulated", "rmse",
                   "nrmse"] for e in ("nii.gz", "json")]
        + [f"sub-01_model-noddi_param-{p}_stat-sd_desc-nnmle_dwimap.{e}"
           for p in PARAMS.values() for e in ("nii.gz", "json")]
        + [f"sub-01_model-noddi_param-outofmodel_desc-nnmle_mask.{e}" for e in ("nii.gz", "json")]
        + [f"sub-01_label-{t}_mask.{e}" for t in ("WM", "GM", "CSF") for e in ("nii.gz", "json")]
        + ["sub-01_desc-brain_mask.nii.gz", "sub-01_desc-brain_mask.json",
           "sub-01_desc-meanb0_dwiref.nii.gz", "sub-01_desc-meanb0_dwiref.json",
           "sub-01_desc-tissue_stats.tsv", "sub-01_desc-tissue_stats.json"]
    )  # fmt: skip
    assert names == expected
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0] == {
        "Name": "noddi-bids",
        "Version": __version__,
        "CodeURL": "https://github.com/noddi-bids/noddi-bids",
    }
    assert (out / ".bidsignore").is_file()
    sidecar = json.loads(
        (folder / "sub-01_model-noddi_param-od_desc-nnmle_dwimap.json").read_text()
    )
    assert sidecar["Estimator"] == "nnmle"
    # --model auto: the shipped network of the reference shells serves the dataset
    shipped = resolve_model("nn-mle", reference_scheme())
    assert sidecar["ModelFile"] == shipped.name
    assert sidecar["ModelSHA256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert sidecar["FitOrders"] == [4, 6] and "b = 700/2000" in sidecar["ModelInputs"]
    assert sidecar["Scheme"]["Shells"] == [700.0, 2000.0]
    assert sidecar["Dpar"] == pytest.approx(1.7e-3) and sidecar["Diso"] == pytest.approx(3e-3)
    assert sidecar["DiffusivityUnits"] == "mm^2/s"
    assert sidecar["ExcludedVoxels"] == {"NonFinite": 2, "NonPositiveB0": 0}
    assert sidecar["Sources"][0] == "bids:raw:sub-01/dwi/sub-01_dwi.nii.gz"
    mask = load(folder / "sub-01_desc-brain_mask.nii.gz") > 0
    data = load(phantom.dwi[0])
    assert not mask[~np.all(np.isfinite(data), axis=-1)].any()
    assert mask.sum() > 100
    odi = load(folder / "sub-01_model-noddi_param-od_desc-nnmle_dwimap.nii.gz")
    assert np.all((odi[mask] >= 0) & (odi[mask] <= 1)) and np.all(odi[~mask] == 0)
    tissue_sidecar = json.loads((folder / "sub-01_label-WM_mask.json").read_text())
    assert tissue_sidecar["Method"].startswith("built-in DTI classification")
    table = check_table_against_maps(folder, "sub-01", ["nnmle"])
    assert (table["n_voxels"] > 0).all()


def test_nn_mle_synthseg_on_other_grid_and_resume(tmp_path, model_cache, scheme_reads):
    phantom = make_bids_dataset(tmp_path / "bids", synthseg="labels", synthseg_grid="fine")
    out, work = tmp_path / "out", tmp_path / "work"
    args = [phantom.root, out, "participant", "-w", work, "--nprocs", "2", "--mle",
            "--synthseg-dir", phantom.synthseg_dir]  # fmt: skip
    assert run(*args) == 0
    assert scheme_reads == READ_ONCE
    assert not [path for name in RECORDS for path in work.rglob(name)]
    folder = out / "sub-01" / "dwi"
    direction = load(folder / "sub-01_model-noddi_param-direction_desc-mle_dwimap.nii.gz")
    mask = load(folder / "sub-01_desc-brain_mask.nii.gz") > 0
    assert direction.shape == (*phantom.tissue.shape, 3)
    np.testing.assert_allclose(np.linalg.norm(direction[mask], axis=-1), 1.0, atol=1e-5)
    # the network run's direction (shells' order-2 fits) agrees with the MLE's in WM (fibre x)
    network = load(folder / "sub-01_model-noddi_param-direction_desc-nnmle_dwimap.nii.gz")
    wm = mask & (phantom.tissue == 1)
    for found in (network, direction):
        angles = np.degrees(np.arccos(np.clip(np.abs(found[wm][:, 0]), 0, 1)))
        assert np.median(angles) < 5.0
    mle = json.loads((folder / "sub-01_model-noddi_param-icvf_desc-mle_dwimap.json").read_text())
    assert mle["Estimator"] == "mle" and "ModelFile" not in mle
    # the fit's standard deviations (Fisher information), beside each map; none for networks
    for param in PARAMS.values():
        stem = folder / f"sub-01_model-noddi_param-{param}_stat-sd_desc-mle_dwimap"
        sd = json.loads(stem.with_suffix(".json").read_text())
        assert sd["Description"].startswith("Standard deviation of the estimate of")
        assert "Fisher information" in sd["Uncertainty"]["Method"]
        values = load(stem.with_name(stem.name + ".nii.gz"))[wm]
        assert np.all(values[np.isfinite(values)] > 0) and np.median(values) < 0.1
    singular = load(folder / "sub-01_model-noddi_param-singular_desc-mle_mask.nii.gz")
    assert singular.dtype == np.uint8 and not singular[~mask].any()
    # the network's SDs come from its spread head (shipped networks have one)
    network_sd = json.loads((folder / "sub-01_model-noddi_param-icvf_stat-sd_desc-nnmle_dwimap"
                             ".json").read_text())  # fmt: skip
    assert "spread head" in network_sd["Uncertainty"]["Method"]
    values = load(folder / "sub-01_model-noddi_param-icvf_stat-sd_desc-nnmle_dwimap.nii.gz")
    assert np.all(values[wm] > 0) and np.median(values[wm]) < 0.2
    tissue = json.loads((folder / "sub-01_label-GM_mask.json").read_text())
    assert tissue["Method"] == "SynthSeg" and tissue["Thresholds"]["GM"] == 0.8
    table = check_table_against_maps(folder, "sub-01", ["nnmle", "mle"])
    assert {"WM", "GM"} <= set(table[table["n_voxels"] > 0]["tissue"])
    # the fit recovers the phantom's white matter (fibres along x, ODI 0.2, NDI 0.7)
    wm = table[(table["tissue"] == "WM") & (table["estimator"] == "mle")].iloc[0]
    assert wm["odi_mean"] == pytest.approx(0.2, abs=0.05)
    assert wm["ndi_mean"] == pytest.approx(0.7, abs=0.05)
    # a re-run resumes from the work folder: estimator nodes are not recomputed
    record = next(work.rglob("mle/odi.nii.gz"))
    before = record.stat().st_mtime_ns
    assert run(*args) == 0
    assert record.stat().st_mtime_ns == before
    check_table_against_maps(folder, "sub-01", ["nnmle", "mle"])


def test_supplied_brain_mask(tmp_path, model_cache):
    phantom = make_bids_dataset(tmp_path / "bids")
    masks = tmp_path / "masks" / "sub-01"
    masks.mkdir(parents=True)
    supplied = (phantom.tissue == 1).astype(np.uint8)
    nib.save(nib.Nifti1Image(supplied, phantom.affine), masks / "sub-01_desc-brain_mask.nii.gz")
    out = tmp_path / "out"
    assert run(phantom.root, out, "participant", "-w", tmp_path / "w", "--nprocs", "1",
               "--mask-dir", tmp_path / "masks") == 0  # fmt: skip
    folder = out / "sub-01" / "dwi"
    np.testing.assert_array_equal(load(folder / "sub-01_desc-brain_mask.nii.gz"), supplied)
    sidecar = json.loads((folder / "sub-01_desc-brain_mask.json").read_text())
    assert sidecar["BrainMask"] == "user-supplied"
    assert sidecar["MaskVoxels"] == supplied.sum()


def test_sessions_runs_and_posteriors(tmp_path, model_cache):
    phantom = make_bids_dataset(
        tmp_path / "bids",
        sessions=("a",),
        runs=({"acq": "x", "run": "1"}, {"acq": "x", "run": "2"}),
        synthseg="posteriors",
    )
    out = tmp_path / "out"
    assert run(phantom.root, out, "participant", "-w", tmp_path / "w", "--nprocs", "2",
               "--synthseg-dir", phantom.synthseg_dir) == 0  # fmt: skip
    folder = out / "sub-01" / "ses-a" / "dwi"
    for index in ("1", "2"):
        prefix = f"sub-01_ses-a_acq-x_run-{index}"
        check_table_against_maps(folder, prefix, ["nnmle"])


def test_run_synthseg_calls_mri_synthseg(tmp_path, model_cache, monkeypatch):
    """``--run-synthseg`` runs ``mri_synthseg`` (here a stand-in script with its interface)."""
    phantom = make_bids_dataset(tmp_path / "bids")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mri_synthseg"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, numpy as np, nibabel as nib\n"
        "from noddi_bids.tissue.synthseg import SYNTHSEG_POSTERIOR_LABELS as L\n"
        "a = sys.argv; get = lambda k: a[a.index(k) + 1]\n"
        "img = nib.load(get('--i')); b0 = np.asarray(img.dataobj)\n"
        "lab = np.where(b0 > 1400, 24, np.where(b0 > 900, 3, np.where(b0 > 300, 2, 0)))\n"
        "nib.save(nib.Nifti1Image(lab.astype(np.int16), img.affine), get('--o'))\n"
        "post = np.stack([(lab == v).astype(np.float32) for v in L], -1)\n"
        "nib.save(nib.Nifti1Image(post, img.affine), get('--post'))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    assert run(phantom.root, out, "participant", "-w", tmp_path / "w", "--nprocs", "1",
               "--run-synthseg") == 0  # fmt: skip
    folder = out / "sub-01" / "dwi"
    tissue = json.loads((folder / "sub-01_label-WM_mask.json").read_text())
    assert tissue["SegmentationFiles"][0].endswith("synthseg_posteriors.nii.gz")
    check_table_against_maps(folder, "sub-01", ["nnmle"])


def test_node_crash_is_reported(tmp_path, model_cache, monkeypatch, capsys):
    """A failing node: exit 1 with one line, crash report in logs/, no half-written file."""
    phantom = make_bids_dataset(tmp_path / "bids")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mri_synthseg"
    script.write_text("#!/bin/sh\necho 'out of memory' >&2\nexit 3\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    assert run(phantom.root, out, "participant", "-w", tmp_path / "w", "--nprocs", "1",
               "--run-synthseg") == 1  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("noddi-bids: error: the workflow failed: 1 node(s) crashed")
    assert len(list((out / "logs").glob("crash-*mri_synthseg*"))) == 1
    assert (out / "dataset_description.json").is_file()
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]
    assert not list(out.rglob("*tissue_stats*"))
