"""Derivative names and atomic writes (noddi_bids.io.derivatives)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from noddi_bids import __version__
from noddi_bids.atomic import atomic_target
from noddi_bids.io.derivatives import (
    dataset_location,
    derivative_name,
    derivative_path,
    source_uri,
    write_dataset_description,
    write_tsv,
)


def test_entity_order():
    source = {"sub": "01", "ses": "2", "acq": "ms", "dir": "AP", "run": "1"}
    name = derivative_name(source, "dwimap", ".nii.gz", desc="mle", param="icvf", model="noddi")
    assert name == "sub-01_ses-2_acq-ms_dir-AP_run-1_model-noddi_param-icvf_desc-mle_dwimap.nii.gz"
    assert (
        derivative_name({"sub": "01"}, "mask", ".nii.gz", label="WM")
        == "sub-01_label-WM_mask.nii.gz"
    )
    with pytest.raises(ValueError, match="unknown entities"):
        derivative_name({"sub": "01", "echo": "1"}, "mask", ".nii.gz")


def test_path_has_session_folder(tmp_path):
    path = derivative_path(tmp_path, {"sub": "01", "ses": "a"}, "stats", ".tsv", desc="tissue")
    assert path == tmp_path / "sub-01" / "ses-a" / "dwi" / "sub-01_ses-a_desc-tissue_stats.tsv"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub-01" / "dwi" / "file.tsv"
    with pytest.raises(RuntimeError), atomic_target(target) as temporary:
        temporary.write_text("partial")
        raise RuntimeError("crash while writing")
    assert list(target.parent.iterdir()) == []
    write_tsv(pd.DataFrame({"a": [1.0, None]}), target)
    assert target.read_text() == "a\n1.0\nn/a\n"
    assert [p.name for p in target.parent.iterdir()] == ["file.tsv"]


def test_dataset_description(tmp_path, monkeypatch):
    monkeypatch.setenv("NODDI_BIDS_CONTAINER", "docker")
    write_dataset_description(tmp_path / "out", tmp_path / "bids")
    description = json.loads((tmp_path / "out" / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "noddi-bids"
    assert description["GeneratedBy"][0]["Version"] == __version__
    assert description["GeneratedBy"][0]["Container"]["Type"] == "docker"
    assert (tmp_path / "out" / ".bidsignore").is_file()
    assert description["DatasetLinks"] == {"raw": (tmp_path / "bids").as_uri()}
    assert description["SourceDatasets"] == [{"URL": "bids:raw:"}]


def test_dataset_links_inside_and_outside(tmp_path):
    bids = tmp_path / "bids"
    assert dataset_location(bids / "derivatives" / "noddi", bids) == "../.."
    assert dataset_location(tmp_path / "out", bids) == bids.as_uri()


@pytest.mark.parametrize(
    ("description", "name"),
    [({"DatasetType": "raw"}, "raw"), ({}, "raw"), ({"DatasetType": "derivative"}, "preprocessed")],
)
def test_source_uri_names_the_input_dataset(tmp_path, description, name):
    (tmp_path / "dataset_description.json").write_text(json.dumps({"Name": "x", **description}))
    path = tmp_path / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    assert source_uri(tmp_path, path) == f"bids:{name}:sub-01/dwi/sub-01_dwi.nii.gz"
    out = tmp_path / "derivatives" / "noddi"
    write_dataset_description(out, tmp_path)
    written = json.loads((out / "dataset_description.json").read_text())
    assert written["DatasetLinks"] == {name: "../.."}
