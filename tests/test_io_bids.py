"""Input discovery and up-front validation (noddi_bids.io.bids)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_bids_dataset, make_qsiprep_dataset

from noddi_bids.config import (
    Config,
    EmptySelectionError,
    InputError,
    InvalidDatasetError,
    MissingInputError,
)
from noddi_bids.io.bids import (
    collect_dwi_runs,
    find_segmentation,
    parse_entities,
    validate_dataset,
)
from noddi_bids.model.scheme import reference_scheme


def _config(bids: Path, tmp_path: Path, **kwargs) -> Config:
    return Config(
        bids_dir=bids,
        output_dir=tmp_path / "out",
        analysis_level="participant",
        work_dir=tmp_path / "work",
        **kwargs,
    )


def test_parse_entities():
    assert parse_entities("sub-01_ses-a_acq-ms_run-2_dwi.nii.gz") == {
        "sub": "01",
        "ses": "a",
        "acq": "ms",
        "run": "2",
    }


def test_runs_sessions_and_entities(tmp_path):
    make_bids_dataset(
        tmp_path / "bids",
        subjects=("01", "02"),
        sessions=("a", "b"),
        runs=({"acq": "x", "run": "1"}, {"acq": "x", "run": "2"}),
        shape=(8, 8, 4),
    )
    runs = collect_dwi_runs(_config(tmp_path / "bids", tmp_path))
    assert len(runs) == 8
    assert runs[0].entities == {"sub": "01", "ses": "a", "acq": "x", "run": "1"}
    assert runs[0].scheme == reference_scheme()
    assert runs[0].shape == (8, 8, 4, 81)
    selected = collect_dwi_runs(
        _config(
            tmp_path / "bids",
            tmp_path,
            participant_labels=("02",),
            session_labels=("b",),
            bids_filters={"dwi": {"run": 2}},
        )
    )
    assert [r.name for r in selected] == ["sub-02_ses-b_acq-x_run-2"]


def test_bval_bvec_inheritance(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    folder = phantom.dwi[0].parent
    for ext in ("bval", "bvec"):
        shutil.move(folder / f"sub-01_dwi.{ext}", tmp_path / "bids" / f"dwi.{ext}")
    (run,) = collect_dwi_runs(_config(tmp_path / "bids", tmp_path))
    assert run.bval == tmp_path / "bids" / "dwi.bval"


def test_subject_without_dwi_is_skipped(tmp_path, caplog):
    make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    anat = tmp_path / "bids" / "sub-02" / "anat"
    anat.mkdir(parents=True)
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), anat / "sub-02_T1w.nii.gz"
    )
    runs = collect_dwi_runs(_config(tmp_path / "bids", tmp_path))
    assert [r.subject for r in runs] == ["01"]
    assert "sub-02: no diffusion data" in caplog.text


def test_not_bids(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidDatasetError, match="dataset_description.json"):
        collect_dwi_runs(_config(tmp_path / "plain", tmp_path))


def test_unknown_participant(tmp_path):
    make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    with pytest.raises(EmptySelectionError, match="99"):
        collect_dwi_runs(_config(tmp_path / "bids", tmp_path, participant_labels=("99",)))


def test_filter_selects_nothing(tmp_path):
    make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    config = _config(tmp_path / "bids", tmp_path, bids_filters={"dwi": {"acquisition": "none"}})
    with pytest.raises(EmptySelectionError):
        collect_dwi_runs(config)


def test_missing_bval(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    (phantom.dwi[0].parent / "sub-01_dwi.bval").unlink()
    with pytest.raises(MissingInputError, match="bval"):
        collect_dwi_runs(_config(tmp_path / "bids", tmp_path))


def test_count_mismatch(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    image = nib.load(phantom.dwi[0])
    data = np.asarray(image.dataobj)[..., :80]
    nib.save(nib.Nifti1Image(data, image.affine), phantom.dwi[0])
    with pytest.raises(InputError, match="81 volumes but the image has 80"):
        collect_dwi_runs(_config(tmp_path / "bids", tmp_path))


def test_3d_dwi(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), phantom.dwi[0])
    with pytest.raises(InputError, match="must be 4-D"):
        collect_dwi_runs(_config(tmp_path / "bids", tmp_path))


def test_single_shell(tmp_path):
    ref = reference_scheme()
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    bval = phantom.dwi[0].parent / "sub-01_dwi.bval"
    values = np.where(ref.bvals > 1000, 700, ref.bvals).astype(int)
    bval.write_text(" ".join(map(str, values)) + "\n")
    with pytest.raises(InputError, match="at least two non-zero b-shells"):
        collect_dwi_runs(_config(tmp_path / "bids", tmp_path))


def test_truncated_nifti(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    content = phantom.dwi[0].read_bytes()
    phantom.dwi[0].write_bytes(content[: len(content) // 2])
    with pytest.raises(InputError, match="unreadable or truncated"):
        collect_dwi_runs(_config(tmp_path / "bids", tmp_path))


def test_garbage_nifti(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4))
    phantom.dwi[0].write_bytes(gzip.compress(b"not a nifti file at all"))
    with pytest.raises(InputError, match="unreadable or truncated"):
        collect_dwi_runs(_config(tmp_path / "bids", tmp_path))


@pytest.mark.parametrize("kind", ["labels", "probseg", "posteriors"])
def test_find_segmentation(tmp_path, kind):
    phantom = make_bids_dataset(tmp_path / "bids", sessions=("a",), shape=(8, 8, 4), synthseg=kind)
    found = find_segmentation(phantom.synthseg_dir, {"sub": "01", "ses": "a"})
    assert (found.labels is not None) == (kind == "labels")
    assert (found.posteriors is not None) == (kind == "posteriors")
    assert sorted(found.probseg) == (["CSF", "GM", "WM"] if kind == "probseg" else [])


def test_segmentation_missing_and_unreadable(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4), synthseg="labels")
    with pytest.raises(MissingInputError, match="no SynthSeg output"):
        find_segmentation(phantom.synthseg_dir, {"sub": "02"})
    (path,) = phantom.synthseg_dir.rglob("*_dseg.nii.gz")
    path.write_bytes(b"\x1f\x8b broken")
    with pytest.raises(InputError, match="unreadable"):
        find_segmentation(phantom.synthseg_dir, {"sub": "01"})


# Preprocessed (QSIPrep-shaped) input
PREFIX = "sub-01_space-T1w"


def test_validation_is_skipped_for_derivatives(tmp_path, caplog):
    phantom = make_qsiprep_dataset(tmp_path / "qsiprep", shape=(8, 8, 4))
    with caplog.at_level("INFO", logger="noddi_bids"):
        validate_dataset(phantom.root)
    assert "derivative dataset" in caplog.text and "do not follow BIDS naming" not in caplog.text


def test_preproc_selected_and_mask_in_the_same_space(tmp_path):
    phantom = make_qsiprep_dataset(tmp_path / "qsiprep", shape=(8, 8, 4), brain_mask=True)
    folder = phantom.dwi[0].parent
    # another dwi series of the pipeline (not desc-preproc) and a mask in another space
    for path in folder.glob(f"{PREFIX}_desc-preproc_dwi.*"):
        shutil.copyfile(path, path.with_name(path.name.replace("desc-preproc", "desc-raw")))
    (folder / f"{PREFIX}_desc-brain_mask.nii.gz").rename(
        folder / "sub-01_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"
    )
    (selected,) = collect_dwi_runs(_config(phantom.root, tmp_path))
    assert selected.dwi == phantom.dwi[0]
    assert selected.entities == {"sub": "01", "space": "T1w"}
    assert selected.brain_mask is None and selected.brain_mask_origin == ""
    filters = {"dwi": {"desc": "raw"}}
    chosen = collect_dwi_runs(_config(phantom.root, tmp_path, bids_filters=filters))
    assert [r.dwi.name for r in chosen] == [f"{PREFIX}_desc-raw_dwi.nii.gz"]


def test_mask_dir_wins_over_the_pipeline_mask(tmp_path):
    phantom = make_qsiprep_dataset(tmp_path / "qsiprep", shape=(8, 8, 4), brain_mask=True)
    masks = tmp_path / "masks"
    masks.mkdir()
    image = nib.load(phantom.dwi[0])
    ones = nib.Nifti1Image(np.ones(image.shape[:3], np.uint8), image.affine)
    nib.save(ones, masks / "sub-01_desc-brain_mask.nii.gz")
    (run_,) = collect_dwi_runs(_config(phantom.root, tmp_path))
    assert run_.brain_mask == phantom.dwi[0].parent / f"{PREFIX}_desc-brain_mask.nii.gz"
    (user,) = collect_dwi_runs(_config(phantom.root, tmp_path, mask_dir=masks))
    assert user.brain_mask == masks / "sub-01_desc-brain_mask.nii.gz"
    assert user.brain_mask_origin == "user-supplied"
