"""Tissue masks, brain mask and tables (the functions the workflow nodes wrap) and the graph."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import PHANTOM_LABELS, make_bids_dataset, phantom_dwi, phantom_tissue

from noddi_bids.config import Config
from noddi_bids.io.bids import collect_dwi_runs
from noddi_bids.model.reference import normalise_dwi
from noddi_bids.model.scheme import reference_scheme
from noddi_bids.tissue import builtin, synthseg
from noddi_bids.tissue.stats import group_tables, tissue_table
from noddi_bids.workflows.dwi import init_dwi_noddi_wf


def test_label_mapping_is_disjoint_and_documented_labels():
    seen = [label for labels in synthseg.TISSUE_LABELS.values() for label in labels]
    assert len(seen) == len(set(seen))
    assert set(seen) <= set(synthseg.SYNTHSEG_POSTERIOR_LABELS)
    assert {16, 28, 60}.isdisjoint(seen)  # brainstem and ventral DC are mixed tissue
    labels = np.array([[[2, 41, 3, 42, 4, 24, 16, 0]]])
    probabilities = synthseg.probabilities_from_labels(labels)
    assert probabilities["WM"].ravel().tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert probabilities["GM"].ravel().tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    assert probabilities["CSF"].ravel().tolist() == [0, 0, 0, 0, 1, 1, 0, 0]


def test_posteriors_sum_per_tissue_and_thresholds():
    n = len(synthseg.SYNTHSEG_POSTERIOR_LABELS)
    posteriors = np.zeros((3, 1, 1, n))
    index = {label: i for i, label in enumerate(synthseg.SYNTHSEG_POSTERIOR_LABELS)}
    posteriors[0, 0, 0, [index[2], index[41]]] = [0.5, 0.45]  # WM 0.95
    posteriors[1, 0, 0, [index[3], index[10]]] = [0.4, 0.39]  # GM 0.79 (< 0.8)
    posteriors[2, 0, 0, [index[4], index[24]]] = [0.45, 0.45]  # CSF 0.90
    probabilities = synthseg.probabilities_from_posteriors(posteriors)
    np.testing.assert_allclose(probabilities["WM"].ravel(), [0.95, 0, 0])
    masks = synthseg.threshold_probabilities(probabilities, np.ones((3, 1, 1), bool))
    assert masks["WM"].ravel().tolist() == [True, False, False]
    assert not masks["GM"].any()
    assert masks["CSF"].ravel().tolist() == [False, False, True]
    with pytest.raises(synthseg.SegmentationError, match="33 frames"):
        synthseg.probabilities_from_posteriors(posteriors[..., :5])


def test_resampling_from_a_finer_shifted_grid():
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    reference = nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), coarse)
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = -0.5
    probability = np.zeros((20, 20, 20), np.float32)
    probability[:10] = 1.0  # x < 9.5 mm is tissue
    resampled = synthseg.resample_probability(probability, fine, reference)
    assert resampled.shape == (10, 10, 10)
    assert resampled[:3].min() > 0.9 and resampled[6:].max() < 0.1
    assert 0.2 < resampled[4, 5, 5] < 0.9 or 0.2 < resampled[5, 5, 5] < 0.9  # boundary mixes


def test_segmentation_probabilities_prefer_probability_maps(tmp_path: Path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    labels = np.array([[[2, 3, 4, 0]]], dtype=np.int16)
    files = {"labels": tmp_path / "sub-01_dseg.nii.gz", "posteriors": tmp_path / "post.nii.gz"}
    nib.save(nib.Nifti1Image(labels, affine), files["labels"])
    n = len(synthseg.SYNTHSEG_POSTERIOR_LABELS)
    posteriors = np.zeros((1, 1, 4, n), np.float32)
    posteriors[..., synthseg.SYNTHSEG_POSTERIOR_LABELS.index(41)] = 0.5  # WM 0.5 everywhere
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(posteriors, coarse), files["posteriors"])
    probseg = {}
    for value, tissue in enumerate(("WM", "GM", "CSF")):
        probseg[tissue] = tmp_path / f"sub-01_label-{tissue}_probseg.nii.gz"
        volume = np.full((1, 1, 4), value / 4, np.float32)
        nib.save(nib.Nifti1Image(volume, affine), probseg[tissue])

    found, grid, used = synthseg.segmentation_probabilities(
        probseg, files["posteriors"], files["labels"]
    )
    assert used == sorted(str(p) for p in probseg.values())
    assert [found[t][0, 0, 0] for t in ("WM", "GM", "CSF")] == [0.0, 0.25, 0.5]
    np.testing.assert_array_equal(grid, affine)
    partial = {"WM": probseg["WM"]}  # incomplete maps: the posteriors next
    found, grid, used = synthseg.segmentation_probabilities(partial, files["posteriors"])
    assert used == [str(files["posteriors"])] and np.array_equal(grid, coarse)
    np.testing.assert_allclose(found["WM"], 0.5)
    found, _, used = synthseg.segmentation_probabilities({}, None, files["labels"])
    assert used == [str(files["labels"])]
    assert [found[t].ravel().tolist() for t in ("WM", "GM", "CSF")] == [
        [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]
    ]  # fmt: skip
    with pytest.raises(synthseg.SegmentationError, match="no SynthSeg"):
        synthseg.segmentation_probabilities(partial)


def test_masks_on_grid_resample_then_threshold_in_the_brain():
    reference = nib.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.diag([2.0, 2, 2, 1]))
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = -0.5
    wm = np.zeros((20, 20, 20), np.float32)
    wm[:10] = 1.0  # x < 9.5 mm is white matter, the rest grey matter
    probabilities = {"WM": wm, "GM": 1.0 - wm, "CSF": np.zeros_like(wm)}
    brain = np.ones((10, 10, 10), bool)
    brain[:, :, 0] = False
    masks = synthseg.masks_on_grid(probabilities, fine, reference, brain)
    expected = synthseg.threshold_probabilities(
        {t: synthseg.resample_probability(p, fine, reference) for t, p in probabilities.items()},
        brain,
    )
    assert set(masks) == {"WM", "GM", "CSF"}
    for tissue, mask in masks.items():
        assert mask.shape == (10, 10, 10) and mask.dtype == bool
        np.testing.assert_array_equal(mask, expected[tissue])
        assert not mask[:, :, 0].any()  # outside the brain
    assert masks["WM"][:3, :, 1:].all() and not masks["WM"][6:].any()
    assert masks["GM"][7:, :, 1:].all() and not masks["GM"][:4].any()
    assert not masks["WM"][4:6].all()  # the boundary mixes: below the WM threshold
    assert not masks["CSF"].any()


def test_builtin_classification_on_phantom():
    scheme = reference_scheme()
    tissue = phantom_tissue((14, 14, 8))
    data = phantom_dwi(tissue, scheme, 40.0, np.random.default_rng(1))
    reference = normalise_dwi(data, scheme.b0_mask, tissue > 0)
    classes = builtin.classify_tissues(reference.signals.astype(np.float64), scheme)
    truth = tissue[reference.mask]
    for index, name in enumerate(("WM", "GM", "CSF"), start=1):
        assert np.mean(truth[classes[name]] == index) > 0.95, name
        assert np.mean(classes[name][truth == index]) > 0.8, name


def test_reference_excludes_bad_voxels():
    scheme = reference_scheme()
    tissue = phantom_tissue((12, 12, 6))
    data = phantom_dwi(tissue, scheme, 40.0, np.random.default_rng(2))
    data[6, 6, 3, 5] = np.inf
    data[6, 5, 3, scheme.b0_mask] = 0.0
    reference = normalise_dwi(data, scheme.b0_mask, tissue > 0)
    assert not reference.mask[6, 6, 3] and not reference.mask[6, 5, 3]
    assert (reference.n_nonfinite, reference.n_nonpositive_b0) == (1, 1)
    assert np.isfinite(reference.signals).all()
    assert reference.signals.shape == (int(reference.mask.sum()), scheme.n_measurements)
    auto = normalise_dwi(data, scheme.b0_mask)
    assert (auto.mask & (tissue == 0)).sum() <= 5
    assert (auto.mask & (tissue > 0)).sum() >= 0.8 * (tissue > 0).sum()


def test_tissue_table_equals_direct_computation():
    rng = np.random.default_rng(3)
    maps = {"nnmle": {p: rng.uniform(size=(5, 5)) for p in ("odi", "ndi", "fwf")}}
    maps["mle"] = {p: v.copy() for p, v in maps["nnmle"].items()}
    maps["mle"]["odi"][0, 0] = np.nan  # failed fit voxel
    masks = {
        "WM": np.zeros((5, 5), bool),
        "GM": np.ones((5, 5), bool),
        "CSF": np.eye(5, dtype=bool),
    }
    masks["WM"][0, :3] = True
    table = tissue_table(maps, masks)
    assert table[["tissue", "estimator"]].values.tolist() == [
        ["WM", "nnmle"], ["WM", "mle"], ["GM", "nnmle"], ["GM", "mle"],
        ["CSF", "nnmle"], ["CSF", "mle"],
    ]  # fmt: skip
    wm_mle = table.iloc[1]
    assert wm_mle["n_voxels"] == 2
    np.testing.assert_allclose(wm_mle["ndi_mean"], maps["mle"]["ndi"][0, 1:3].mean())
    np.testing.assert_allclose(wm_mle["ndi_sd"], maps["mle"]["ndi"][0, 1:3].std())
    csf = table.iloc[4]
    assert np.isnan(csf["odi_mean"]) and np.isnan(csf["ndi_sd"])
    np.testing.assert_allclose(csf["fwf_mean"], np.diag(maps["nnmle"]["fwf"]).mean())
    empty = tissue_table(maps, {"WM": np.zeros((5, 5), bool)})
    assert empty["n_voxels"].tolist() == [0, 0] and empty["fwf_mean"].isna().all()


def test_group_tables_with_sessions():
    table = pd.DataFrame(
        [{"tissue": "WM", "estimator": "nnmle", "n_voxels": 3, "odi_mean": 0.2, "odi_sd": 0.1,
          "ndi_mean": 0.7, "ndi_sd": 0.1, "fwf_mean": 0.1, "fwf_sd": 0.05}]
    )  # fmt: skip
    long, summary = group_tables(
        [({"participant_id": "sub-01", "ses": "a"}, table), ({"participant_id": "sub-02"}, table)]
    )
    assert long["ses"].tolist() == ["a"] * 3 + ["n/a"] * 3
    assert summary["n"].tolist() == [2, 2, 2]
    assert summary["sd"].tolist() == [0.0, 0.0, 0.0]


def test_dwi_workflow_graph(tmp_path: Path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4), synthseg="labels")
    config = Config(
        bids_dir=phantom.root,
        output_dir=tmp_path / "out",
        analysis_level="participant",
        work_dir=tmp_path / "work",
        synthseg_dir=phantom.synthseg_dir,
    )
    (run,) = collect_dwi_runs(config)
    (tmp_path / "model.onnx").write_bytes(b"")
    workflow = init_dwi_noddi_wf(run, tmp_path / "model.onnx", config.output_dir, [], mle=True,
                                 d_par=1.7e-3)  # fmt: skip
    names = set(workflow.list_node_names())
    assert {"reference", "nn", "mle", "ds_nn", "ds_mle", "ds_tissue", "stats",
            "tissue_wf.synthseg_tissue"} <= names  # fmt: skip
    outputs = workflow.get_node("outputnode").outputs.copyable_trait_names()
    assert {"map_files", "estimators", "out_files", "stats_file", "mean_b0", "mask_file"} <= set(
        outputs
    )
    # the scheme read when the runs were collected travels as a value; no node reads bval/bvec
    assert workflow.get_node("inputnode").inputs.scheme is run.scheme
    for name in workflow.list_node_names():
        inputs = workflow.get_node(name).inputs.copyable_trait_names()
        assert not {"bval_file", "bvec_file", "estimate_file", "tissue_file", "qc_file"} & set(
            inputs
        ), name
    assert PHANTOM_LABELS["WM"] in synthseg.TISSUE_LABELS["WM"]
