"""Bad input through the real command line: a clear one-line error, the right exit code, and
an untouched output folder (never even created)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_bids_dataset

from noddi_bids import __version__
from noddi_bids.cli.run import main
from noddi_bids.model.scheme import Scheme, reference_scheme, write_scheme


def _dataset(tmp_path: Path) -> Path:
    return make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4)).root


def not_bids(tmp_path):
    (tmp_path / "bids").mkdir()
    return tmp_path / "bids", []


def unknown_participant(tmp_path):
    return _dataset(tmp_path), ["--participant-label", "sub-99"]


def filter_selects_nothing(tmp_path):
    (tmp_path / "filter.json").write_text('{"dwi": {"acquisition": "none"}}')
    return _dataset(tmp_path), ["--bids-filter-file", tmp_path / "filter.json"]


def missing_bvec(tmp_path):
    root = _dataset(tmp_path)
    (root / "sub-01" / "dwi" / "sub-01_dwi.bvec").unlink()
    return root, []


def count_mismatch(tmp_path):
    root = _dataset(tmp_path)
    ref, folder = reference_scheme(), root / "sub-01" / "dwi"
    shorter = Scheme(ref.bvals[:80], ref.bvecs[:80])
    write_scheme(shorter, folder / "sub-01_dwi.bval", folder / "sub-01_dwi.bvec")
    return root, []


def three_d_dwi(tmp_path):
    root = _dataset(tmp_path)
    path = root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), path)
    return root, []


def single_shell(tmp_path):
    root = _dataset(tmp_path)
    bval = root / "sub-01" / "dwi" / "sub-01_dwi.bval"
    values = np.where(reference_scheme().bvals > 1000, 700, reference_scheme().bvals)
    bval.write_text(" ".join(str(int(v)) for v in values) + "\n")
    return root, []


def truncated_nifti(tmp_path):
    root = _dataset(tmp_path)
    path = root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    path.write_bytes(path.read_bytes()[:5000])
    return root, []


def unreadable_synthseg(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4), synthseg="labels")
    (path,) = phantom.synthseg_dir.rglob("*_dseg.nii.gz")
    path.write_bytes(b"garbage")
    return phantom.root, ["--synthseg-dir", phantom.synthseg_dir]


def posteriors_with_wrong_frames(tmp_path):
    phantom = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4), synthseg="posteriors")
    (path,) = phantom.synthseg_dir.rglob("*posteriors.nii.gz")
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., :5], image.affine), path)
    return phantom.root, ["--synthseg-dir", phantom.synthseg_dir]


def missing_synthseg(tmp_path):
    (tmp_path / "seg").mkdir()
    return _dataset(tmp_path), ["--synthseg-dir", tmp_path / "seg"]


def model_for_another_scheme(tmp_path, model):
    ref = reference_scheme()
    other = Scheme(np.where(ref.bvals > 1000, 2500.0, ref.bvals), ref.bvecs)
    root = make_bids_dataset(tmp_path / "bids", shape=(8, 8, 4), scheme=other).root
    return root, ["--model", model]


def corrupt_model(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not protobuf")
    return _dataset(tmp_path), ["--model", tmp_path / "broken.onnx"]


def missing_model(tmp_path):
    return _dataset(tmp_path), ["--model", tmp_path / "none.onnx"]


def bad_option(tmp_path):
    return _dataset(tmp_path), ["--no-such-option"]


def bad_dpar(tmp_path):
    return _dataset(tmp_path), ["--dpar", "1.7"]


def _brain_mask(tmp_path, shape, affine):
    masks = tmp_path / "masks"
    masks.mkdir()
    nib.save(
        nib.Nifti1Image(np.ones(shape, np.uint8), affine), masks / "sub-01_desc-brain_mask.nii.gz"
    )
    return _dataset(tmp_path), ["--mask-dir", masks]


def mask_on_another_grid(tmp_path):
    return _brain_mask(tmp_path, (16, 16, 8), np.diag([1.25, 1.25, 1.25, 1.0]))


def mask_with_another_affine(tmp_path):
    return _brain_mask(tmp_path, (8, 8, 4), np.eye(4))


def nprocs_zero(tmp_path):
    return _dataset(tmp_path), ["--nprocs", "0"]


def nprocs_negative(tmp_path):
    return _dataset(tmp_path), ["--nprocs", "-1"]


def _with_scheme(tmp_path, scheme):
    root = make_bids_dataset(tmp_path / "bids", shape=(6, 6, 3), scheme=scheme).root
    return root, []


def shell_with_too_few_directions(tmp_path):
    ref = reference_scheme()
    bvals = ref.bvals.copy()
    bvals[np.flatnonzero(ref.bvals == 700)[:20]] = 1200.0  # b = 700 keeps 4 directions
    return _with_scheme(tmp_path, Scheme(bvals, ref.bvecs))


def non_shelled_sampling(tmp_path):
    rng = np.random.default_rng(0)
    bvals = np.r_[0.0, 0.0, rng.permutation(np.repeat(np.arange(200.0, 3100.0, 100.0), 2))]
    vectors = rng.standard_normal((bvals.size, 3))
    return _with_scheme(tmp_path, Scheme(bvals, np.where(bvals[:, None] > 0, vectors, 0.0)))


def directions_in_one_cap(tmp_path):
    ref, rng = reference_scheme(), np.random.default_rng(1)
    cap = rng.standard_normal((ref.n_measurements, 3)) * [0.25, 0.25, 0.0] + [0.0, 0.0, 1.0]
    weighted = (ref.bvals == 2000)[:, None]
    return _with_scheme(tmp_path, Scheme(ref.bvals, np.where(weighted, cap, ref.bvecs)))


def omp_nthreads_zero(tmp_path):
    return _dataset(tmp_path), ["--omp-nthreads", "0"]


def run_synthseg_without_freesurfer(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(shutil.which("python")).parent))
    return _dataset(tmp_path), ["--run-synthseg"]


CASES = [
    (not_bids, 16, "not a BIDS dataset"),
    (unknown_participant, 18, "99 not found"),
    (filter_selects_nothing, 18, "selects no dwi run"),
    (missing_bvec, 66, "no .bvec file"),
    (count_mismatch, 1, "describe 80 volumes but the image has 81"),
    (three_d_dwi, 1, "must be 4-D"),
    (single_shell, 1, "at least two non-zero b-shells"),
    (truncated_nifti, 1, "unreadable or truncated NIfTI"),
    (unreadable_synthseg, 1, "unreadable or truncated NIfTI"),
    (posteriors_with_wrong_frames, 1, "must be 4-D with 33 frames"),
    (missing_synthseg, 66, "no SynthSeg output"),
    (model_for_another_scheme, 1, "not the network's shells"),
    (corrupt_model, 1, "not a readable ONNX model"),
    (missing_model, 66, "ONNX model file does not exist"),
    (bad_option, 64, "unrecognized arguments"),
    (bad_dpar, 64, "--dpar"),
    (run_synthseg_without_freesurfer, 1, "mri_synthseg"),
    (
        mask_on_another_grid,
        1,
        "sub-01_desc-brain_mask.nii.gz: not on the grid of sub-01_dwi.nii.gz: shape (16, 16, 8)",
    ),
    (
        mask_with_another_affine,
        1,
        "sub-01_desc-brain_mask.nii.gz: not on the grid of sub-01_dwi.nii.gz: its affine differs",
    ),
    (nprocs_zero, 64, "--nprocs 0: must be >= 1"),
    (nprocs_negative, 64, "--nprocs -1: must be >= 1"),
    (omp_nthreads_zero, 64, "--omp-nthreads 0: must be >= 1"),
    (shell_with_too_few_directions, 1, "has 4 directions"),
    (non_shelled_sampling, 1, "has 2 directions"),
    (directions_in_one_cap, 1, "directions of shell b = 2000 are not spread over the sphere"),
]


@pytest.mark.parametrize(("make", "code", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input(tmp_path, capsys, model_cache, monkeypatch, make, code, message):
    kwargs = {
        "model": model_cache,
        "monkeypatch": monkeypatch,
    }
    wanted = make.__code__.co_varnames[1 : make.__code__.co_argcount]
    bids, extra = make(tmp_path, **{k: kwargs[k] for k in wanted})
    out = tmp_path / "out"
    args = [bids, out, "participant", "-w", tmp_path / "work", "--nprocs", "1", *extra]
    assert main([str(a) for a in args]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("noddi-bids: error:")]
    assert errors == lines[-1:], "one error line, last"
    assert message in errors[0]
    assert not out.exists()
    assert not (tmp_path / "work").exists()


def test_unknown_analysis_level(tmp_path, capsys):
    assert main([str(_dataset(tmp_path)), str(tmp_path / "out"), "session"]) == 17
    assert "unknown analysis level 'session'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_is_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("")
    assert main([str(_dataset(tmp_path)), str(tmp_path / "out"), "participant"]) == 1
    assert "not a folder" in capsys.readouterr().err


def test_output_not_writable(tmp_path, capsys):
    # /proc refuses new entries even for root (os.access would say yes to root)
    assert main([str(_dataset(tmp_path)), "/proc/noddi-bids-out", "participant"]) == 1
    assert "not writable" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"noddi-bids {__version__}"


def test_group_without_participant_results(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main([str(_dataset(tmp_path)), str(tmp_path / "out"), "group"]) == 66
    assert "run the participant level first" in capsys.readouterr().err
