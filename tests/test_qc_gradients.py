"""Gradient-table check (noddi_bids.qc.gradients) and --gradient-check, on a tilted ring of fibres.

The phantom is a torus of white matter (fibres along its circles) whose axis points in no
particular direction, so that any flip or permutation of the b-vector axes turns the fibres out
of the ring; around it, dispersed grey-matter-like tissue.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from noddi_bids.cli import example as example_cli
from noddi_bids.cli.run import main
from noddi_bids.example.bids import write_bids_dwi
from noddi_bids.example.phantom import anatomical_directions, phantom_parameters
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import Scheme, read_scheme, reference_scheme
from noddi_bids.nn.synth import synthesise_signals
from noddi_bids.qc.gradients import candidate_transforms, check_gradient_table

SHAPE = (20, 20, 12)
ZOOMS = (2.0, 2.0, 2.0)
#: Errors of the issue: x, y, z flipped, x and y swapped; and a cyclic permutation.
ERRORS = {"(-x, y, z)": "(-x, y, z)", "(x, -y, z)": "(x, -y, z)", "(x, y, -z)": "(x, y, -z)",
          "(y, x, z)": "(y, x, z)", "(y, z, x)": "(z, x, y)"}  # fmt: skip
TRANSFORMS = {t.name: t for t in candidate_transforms()}


def ring_signals(
    scheme: Scheme, orientations: str = "ring", snr: float = 30.0, seed: int = 0
) -> np.ndarray:
    """Normalised signals (X*Y*Z, M) of the ring phantom (``orientations="random"``: the same
    tissue with a random orientation per voxel)."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    offset = np.indices(SHAPE).reshape(3, -1).T - (np.asarray(SHAPE) - 1) / 2
    along = offset @ axis
    radial = offset - along[:, None] * axis
    ring = (np.linalg.norm(radial, axis=1) - 6.0) ** 2 + along**2 <= 2.6**2
    rng = np.random.default_rng(seed)
    directions = np.cross(axis, radial) + 1e-9
    if orientations == "random":
        directions = rng.standard_normal(directions.shape)
    parameters = np.where(ring[:, None], [0.1, 0.7, 0.05], [0.9, 0.3, 0.1])
    signals = add_rician_noise(synthesise_signals(parameters, directions, scheme), snr, rng)
    return signals / signals[:, scheme.b0_mask].mean(axis=1, keepdims=True)


def test_candidates_are_the_24_axial_classes():
    transforms = candidate_transforms()
    assert len(transforms) == 24 and transforms[0].is_identity
    # no two candidates give the same axes (up to the sign of all three)
    matrices = [t.matrix for t in transforms]
    for i, a in enumerate(matrices):
        for b in matrices[i + 1 :]:
            assert not np.allclose(a, b) and not np.allclose(a, -b)
    assert TRANSFORMS["(-x, y, z)"].words == "x flipped"
    assert TRANSFORMS["(y, x, z)"].words == "x and y swapped"
    assert TRANSFORMS["(y, x, -z)"].words == "x and y swapped, z flipped"
    np.testing.assert_array_equal(
        TRANSFORMS["(y, x, z)"].apply(reference_scheme()).bvecs,
        reference_scheme().bvecs[:, [1, 0, 2]],
    )


@pytest.mark.parametrize("table", ["reference", "rotated"])
def test_correct_tables_pass(table):
    scheme = reference_scheme()
    if table == "rotated":  # the data acquired with a rotated table, checked with that table
        angle = np.radians(35.0)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle),
                             0], [0, 0, 1]])  # fmt: skip
        scheme = Scheme(scheme.bvals, scheme.bvecs @ rotation.T)
    found = check_gradient_table(ring_signals(scheme), np.ones(SHAPE, bool), scheme, ZOOMS)
    assert found.verdict == "ok" and found.correction.is_identity
    assert found.ratio == 1.0 and found.contrast > 2.0


@pytest.mark.parametrize("error", list(ERRORS))
def test_flips_and_permutations_are_detected_and_corrected(error):
    scheme = reference_scheme()
    signals = ring_signals(scheme)
    wrong = TRANSFORMS[error].apply(scheme)  # the table stored with the error
    found = check_gradient_table(signals, np.ones(SHAPE, bool), wrong, ZOOMS)
    assert found.verdict == "error"
    assert found.correction.name == ERRORS[error]
    assert found.ratio > 1.5
    corrected = found.correction.apply(wrong)
    np.testing.assert_allclose(np.abs(corrected.bvecs), np.abs(scheme.bvecs), atol=1e-12)
    assert check_gradient_table(signals, np.ones(SHAPE, bool), corrected, ZOOMS).verdict == "ok"


def test_random_orientations_are_inconclusive():
    scheme = reference_scheme()
    signals = ring_signals(scheme, orientations="random")
    found = check_gradient_table(signals, np.ones(SHAPE, bool), scheme, ZOOMS)
    assert found.verdict == "inconclusive" and found.correction.is_identity
    assert "inconclusive" in found.summary()


# -- the app ---------------------------------------------------------------------------------
@pytest.fixture
def flipped_dataset(tmp_path: Path) -> Path:
    """The ring phantom, in a border of background noise, as a BIDS dataset whose b-vectors
    have y flipped."""
    scheme = reference_scheme()
    rng = np.random.default_rng(1)
    data = add_rician_noise(np.zeros((26 * 26 * 18, scheme.n_measurements)), 30.0, rng)
    data = 1000.0 * data.reshape(26, 26, 18, -1)
    data[3:-3, 3:-3, 3:-3] = 1000.0 * ring_signals(scheme).reshape(*SHAPE, -1)
    stored = TRANSFORMS["(x, -y, z)"].apply(scheme)
    write_bids_dwi(tmp_path / "bids", {"sub": "01"}, data, np.diag([*ZOOMS, 1.0]), stored,
                   dtype=np.float32)  # fmt: skip
    return tmp_path / "bids"


def _run(*args: object) -> int:
    return main([str(a) for a in args])


def test_stop_exits_with_one_line_and_writes_nothing(flipped_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    code = _run(flipped_dataset, out, "participant", "-w", tmp_path / "work",
                "--gradient-check", "stop")  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and not out.exists()
    assert error.startswith("noddi-bids: error: ") and "sub-01_dwi.bvec" in error
    assert "y flipped" in error and "--gradient-check fix" in error


def test_fix_applies_the_correction_and_records_it(flipped_dataset, tmp_path, model_cache):
    out = tmp_path / "out"
    assert _run(flipped_dataset, out, "participant", "-w", tmp_path / "work", "--nprocs", "1",
                "--gradient-check", "fix") == 0  # fmt: skip
    sidecar = json.loads(
        (out / "sub-01/dwi/sub-01_model-noddi_param-od_desc-nnmle_dwimap.json").read_text()
    )
    check = sidecar["GradientCheck"]
    assert (check["Verdict"], check["Correction"]) == ("error", "(x, -y, z)")
    assert check["Applied"] is True
    stored = read_scheme(*(flipped_dataset / "sub-01/dwi" / f"sub-01_dwi.{e}" for e in ("bval",
                         "bvec")))  # fmt: skip
    assert sidecar["Scheme"]["Hash"] == TRANSFORMS["(x, -y, z)"].apply(stored).hash
    assert sidecar["Scheme"]["Hash"] == reference_scheme().hash
    report = (out / "sub-01.html").read_text()
    assert "Gradient-table check" in report and "(x, -y, z) applied" in report


def test_warn_is_the_default_and_keeps_the_table(flipped_dataset, tmp_path, model_cache, caplog):
    out = tmp_path / "out"
    assert _run(flipped_dataset, out, "participant", "-w", tmp_path / "work",
                "--nprocs", "1") == 0  # fmt: skip
    assert "rerun with --gradient-check fix to apply (x, -y, z)" in caplog.text
    sidecar = json.loads(
        (out / "sub-01/dwi/sub-01_model-noddi_param-od_desc-nnmle_dwimap.json").read_text()
    )
    assert sidecar["GradientCheck"]["Applied"] is False
    assert sidecar["Scheme"]["Hash"] != reference_scheme().hash


# -- the example's anatomical fibres ---------------------------------------------------------
def test_anatomical_fibres_run_along_white_matter_and_across_its_boundary():
    """A white-matter tube along x in grey matter: fibres along x in it, radial outside."""
    shape = (16, 14, 14)
    j, k = np.indices(shape)[1:]
    radius = np.hypot(j - 6.5, k - 6.5)
    wm = (radius <= 3.0).astype(float)
    fractions = {"WM": wm, "GM": (radius <= 6.0) * (1 - wm), "CSF": np.zeros(shape)}
    directions = anatomical_directions(fractions)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-9)
    inner = (radius <= 2.0)[2:-2]
    assert np.all(np.abs(directions[2:-2][inner][:, 0]) > 0.99)
    shell = ((radius >= 4.0) & (radius <= 5.0))[2:-2]
    assert np.all(np.abs(directions[2:-2][shell][:, 0]) < 0.1)


def test_example_command_takes_the_fibres(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(example_cli, "make_example", lambda *a, **k: calls.append(k))
    assert example_cli.main(["make", str(tmp_path / "ex"), "--fibres", "anatomical"]) == 0
    assert calls[0]["fibres"] == "anatomical"
    with pytest.raises(SystemExit):
        example_cli.main(["make", str(tmp_path / "ex"), "--fibres", "crossing"])
    with pytest.raises(ValueError, match="fibres must be one of"):
        phantom_parameters({t: np.ones((2, 2, 2)) / 3 for t in ("WM", "GM", "CSF")},
                           np.random.default_rng(0), "crossing")  # fmt: skip


def test_bad_gradient_check_choice_is_a_usage_error(tmp_path, capsys):
    assert _run(tmp_path, tmp_path / "out", "participant", "--gradient-check", "maybe") == 64
    assert "--gradient-check" in capsys.readouterr().err
