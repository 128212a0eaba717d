"""Tests for noddi_bids.model.scheme (acquisition schemes)."""

import json
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noddi_bids.model.scheme import (
    SHELL_TOLERANCE,
    Scheme,
    SchemeError,
    SchemeWarning,
    cluster_shells,
    read_scheme,
    reference_scheme,
    write_scheme,
)


def _small_arrays():
    """A tiny valid two-shell scheme: 2 b0, 3 x b=700, 3 x b=2000."""
    bvals = np.array([0.0, 700, 700, 700, 0, 2000, 2000, 2000])
    bvecs = np.array(
        [
            [0, 0, 0],
            [1, 0, 0],
            [0, 1, 0],
            [0, 0, 1],
            [0, 0, 0],
            [0.6, 0.8, 0],
            [0, 0.6, 0.8],
            [0.8, 0, 0.6],
        ],
        dtype=float,
    )
    return bvals, bvecs


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _write_pair(tmp_path, bvals, bvecs, *, transpose=False, stem="dwi"):
    bval = _write(tmp_path / f"{stem}.bval", " ".join(f"{b:g}" for b in bvals) + "\n")
    table = np.asarray(bvecs, dtype=float)
    rows = table if transpose else table.T
    bvec = _write(
        tmp_path / f"{stem}.bvec",
        "\n".join(" ".join(repr(float(x)) for x in row) for row in rows) + "\n",
    )
    return bval, bvec


def _min_angle_deg(vecs):
    dots = np.abs(vecs @ vecs.T)
    np.fill_diagonal(dots, 0.0)
    return np.degrees(np.arccos(dots.max()))


# -- reference scheme ---------------------------------------------------------------
def test_reference_scheme_content():
    ref = reference_scheme()
    assert ref.n_measurements == 81
    assert ref.n_b0 == 9
    assert_array_equal(ref.shells, [700.0, 2000.0])
    assert_array_equal(ref.shell_counts, [24, 48])
    assert ref.summary() == "81 volumes: b=0 x9, b=700 x24, b=2000 x48"
    # b0 interleaved: one per block of 9 volumes
    assert_array_equal(np.flatnonzero(ref.b0_mask), np.arange(0, 81, 9))
    assert_allclose(np.linalg.norm(ref.bvecs[~ref.b0_mask], axis=1), 1.0, atol=1e-5)
    assert reference_scheme() is ref  # cached


def test_reference_scheme_directions_well_spread():
    ref = reference_scheme()
    low = ref.bvecs[ref.shell_index == 0]
    high = ref.bvecs[ref.shell_index == 1]
    # generator records 29.07 and 20.86 degrees
    assert _min_angle_deg(low) > 20.0
    assert _min_angle_deg(high) > 14.0
    # roughly isotropic: the scatter matrix of the directions is close to I/3
    for vecs in (low, high):
        assert_allclose(vecs.T @ vecs / len(vecs), np.eye(3) / 3, atol=0.05)


def test_arrays_are_read_only():
    ref = reference_scheme()
    for array in (ref.bvals, ref.bvecs, ref.b0_mask, ref.shells, ref.shell_index):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1
    with pytest.raises(AttributeError):
        ref.b0_threshold = 10.0


# -- reading ------------------------------------------------------------------------
def test_read_three_rows_and_transposed_give_same_scheme(tmp_path):
    bvals, bvecs = _small_arrays()
    a = read_scheme(*_write_pair(tmp_path, bvals, bvecs, stem="rows"))
    with pytest.warns(SchemeWarning, match=r"cols\.bvec"):
        b = read_scheme(*_write_pair(tmp_path, bvals, bvecs, transpose=True, stem="cols"))
    assert a == b
    assert a.hash == b.hash


def test_read_bval_as_column(tmp_path):
    bvals, bvecs = _small_arrays()
    bval, bvec = _write_pair(tmp_path, bvals, bvecs)
    _write(bval, "\n".join(f"{b:g}" for b in bvals) + "\n")
    assert_array_equal(read_scheme(bval, bvec).bvals, bvals)


def test_unnormalised_bvecs_are_normalised(tmp_path):
    bvals, bvecs = _small_arrays()
    scale = np.array([1, 2.0, 0.5, 3, 1, 10, 0.1, 1.5])[:, None]
    scheme = read_scheme(*_write_pair(tmp_path, bvals, bvecs * scale))
    weighted = ~scheme.b0_mask
    assert_allclose(np.linalg.norm(scheme.bvecs[weighted], axis=1), 1.0, rtol=1e-12)
    assert_allclose(scheme.bvecs, bvecs, atol=1e-12)
    assert scheme.hash == Scheme(bvals, bvecs).hash


def test_n_volumes_checked(tmp_path):
    bvals, bvecs = _small_arrays()
    bval, bvec = _write_pair(tmp_path, bvals, bvecs)
    assert read_scheme(bval, bvec, n_volumes=8).n_measurements == 8
    with pytest.raises(SchemeError, match=r"dwi\.bval.*image has 9"):
        read_scheme(bval, bvec, n_volumes=9)


# -- shells -------------------------------------------------------------------------
def test_jittered_bvalues_cluster_into_two_shells():
    bvals = [0, 5, 695, 700, 705, 2010, 1990]
    shells, index = cluster_shells(bvals, b0_threshold=50.0, tolerance=SHELL_TOLERANCE)
    assert_array_equal(shells, [700.0, 2000.0])
    assert_array_equal(index, [-1, -1, 0, 0, 0, 1, 1])


def test_hcp_like_jitter_is_one_shell_per_nominal_value():
    rng = np.random.default_rng(0)
    bvals = np.concatenate([[5] * 6, *(b + rng.integers(-15, 16, 30) for b in (1000, 2000, 3000))])
    shells, index = cluster_shells(bvals)
    assert_allclose(shells, [1000, 2000, 3000], atol=5)
    assert_array_equal(np.bincount(index[index >= 0]), [30, 30, 30])


def test_700_and_1000_are_separate_shells():
    shells, index = cluster_shells([0, 700, 1000, 700, 1000])
    assert_array_equal(shells, [700.0, 1000.0])
    assert_array_equal(index, [-1, 0, 1, 0, 1])


def test_cluster_shells_without_weighted_volumes():
    shells, index = cluster_shells([0, 0, 10])
    assert shells.size == 0
    assert_array_equal(index, [-1, -1, -1])


def test_shell_properties():
    bvals, bvecs = _small_arrays()
    scheme = Scheme(bvals, bvecs)
    assert_array_equal(scheme.b0_mask, bvals == 0)
    assert_array_equal(scheme.shell_index, [-1, 0, 0, 0, -1, 1, 1, 1])
    assert_array_equal(scheme.shell_counts, [3, 3])
    assert scheme.summary() == "8 volumes: b=0 x2, b=700 x3, b=2000 x3"


# -- hash ---------------------------------------------------------------------------
def test_hash_stable_under_sign_flips_and_b0_vectors():
    bvals, bvecs = _small_arrays()
    base = Scheme(bvals, bvecs).hash
    flipped = bvecs * np.array([1, -1, 1, -1, 1, -1, -1, 1])[:, None]
    assert Scheme(bvals, flipped).hash == base
    b0_junk = bvecs.copy()
    b0_junk[0] = [1, 0, 0]
    assert Scheme(bvals, b0_junk).hash == base
    assert len(base) == 16
    assert re.fullmatch(r"[0-9a-f]{16}", base)


def test_hash_changes_with_content():
    bvals, bvecs = _small_arrays()
    base = Scheme(bvals, bvecs).hash
    changed = bvals.copy()
    changed[5] = 2005
    assert Scheme(changed, bvecs).hash != base
    rotated = bvecs.copy()
    rotated[1] = [0.6, 0.8, 0]
    assert Scheme(bvals, rotated).hash != base
    assert Scheme(bvals[::-1], bvecs[::-1]).hash != base  # order matters


def test_reference_hash_survives_write_read(tmp_path):
    ref = reference_scheme()
    write_scheme(ref, tmp_path / "r.bval", tmp_path / "r.bvec")
    again = read_scheme(tmp_path / "r.bval", tmp_path / "r.bvec")
    assert again.hash == ref.hash
    assert again.matches(ref) == (True, "schemes match")


# -- matches ------------------------------------------------------------------------
def test_matches_reports_what_differs():
    bvals, bvecs = _small_arrays()
    scheme = Scheme(bvals, bvecs)
    assert scheme.matches(Scheme(bvals + np.r_[0, 5, 0, 0, 0, -10, 0, 0], -bvecs)) == (
        True,
        "schemes match",
    )

    ok, reason = scheme.matches(Scheme(bvals[:-1], bvecs[:-1]))
    assert not ok and "number of volumes: 8 vs 7" in reason

    shifted = bvals.copy()
    shifted[6] = 1900
    ok, reason = scheme.matches(Scheme(shifted, bvecs))
    assert not ok and "volume 6" in reason and "2000 vs 1900" in reason

    turned = bvecs.copy()
    turned[2] = [0, 0.8, 0.6]
    ok, reason = scheme.matches(Scheme(bvals, turned))
    assert not ok and "b-vector of volume 2" in reason and "degrees" in reason

    b0_moved = bvals.copy()
    b0_moved[0] = 60.0  # within b_tol=100 but no longer b = 0
    b0_vecs = bvecs.copy()
    b0_vecs[0] = [1, 0, 0]
    ok, reason = scheme.matches(Scheme(b0_moved, b0_vecs), b_tol=100.0)
    assert not ok and "volume 0 is b = 0 in one scheme only" in reason


def test_matches_b_tol():
    bvals, bvecs = _small_arrays()
    scheme = Scheme(bvals, bvecs)
    other = Scheme(bvals + np.where(bvals > 0, 30.0, 0.0), bvecs)
    assert not scheme.matches(other)[0]
    assert scheme.matches(other, b_tol=30.0)[0]


# -- serialisation ------------------------------------------------------------------
def test_dict_round_trip_through_json():
    ref = reference_scheme()
    data = json.loads(json.dumps(ref.to_dict()))
    assert isinstance(data["bvals"][0], float)
    back = Scheme.from_dict(data)
    assert back == ref
    assert back.hash == ref.hash == data["hash"]


def test_from_dict_rejects_bad_metadata():
    data = reference_scheme().to_dict()
    data["hash"] = "0" * 16
    with pytest.raises(SchemeError, match="does not match its content"):
        Scheme.from_dict(data)
    with pytest.raises(SchemeError, match="lacks bvecs"):
        Scheme.from_dict({"bvals": [0, 700, 2000]})


def test_write_read_round_trip(tmp_path):
    bvals, bvecs = _small_arrays()
    bvals = bvals + np.r_[0, 0, 0.5, 0, 0, 0, 0, 0]
    scheme = Scheme(bvals, bvecs)
    write_scheme(scheme, tmp_path / "o.bval", tmp_path / "o.bvec")
    text = (tmp_path / "o.bval").read_text()
    assert text.split() == ["0", "700", "700.5", "700", "0", "2000", "2000", "2000"]
    assert len((tmp_path / "o.bvec").read_text().splitlines()) == 3
    again = read_scheme(tmp_path / "o.bval", tmp_path / "o.bvec")
    assert_array_equal(again.bvals, scheme.bvals)
    assert_allclose(again.bvecs, scheme.bvecs, atol=1e-6)
    assert again.hash == scheme.hash


# -- bad inputs: every one raises SchemeError naming the file -----------------------
@pytest.fixture
def good_pair(tmp_path):
    bvals, bvecs = _small_arrays()
    return _write_pair(tmp_path, bvals, bvecs, stem="sub-01_dwi")


def test_missing_file(good_pair, tmp_path):
    bval, _ = good_pair
    with pytest.raises(SchemeError, match=r"nope\.bvec: cannot read"):
        read_scheme(bval, tmp_path / "nope.bvec")


_BVAL_MESSAGE = r"sub-01_dwi\.bval: "
_BVEC_MESSAGE = r"sub-01_dwi\.bvec: "
BAD_FILES = [
    pytest.param({"bval": b"\xff\xfe\x00\x80"}, _BVAL_MESSAGE + "cannot read", id="binary"),
    pytest.param(
        {"bvec": "1 0 0 x 0 0 0 0\n0 0 0 0 0 0 0 0\n0 0 0 0 0 0 0 0\n"},
        _BVEC_MESSAGE + "line 1 is not numeric",
        id="non-numeric",
    ),
    *(
        pytest.param({which: "\n  \n"}, rf"sub-01_dwi\.{which}: file is empty", id=f"empty-{which}")
        for which in ("bval", "bvec")
    ),
    pytest.param(
        {"bvec": "1 0 0 0 0 0 0 0\n0 1 0 0 0 0 0 0\n"},
        _BVEC_MESSAGE + "expected 3 rows",
        id="bvec-two-rows",
    ),
    pytest.param(
        {"bvec": "1 0 0 0 0 0 0 0\n0 1 0 0 0 0 0\n0 0 1 0 0 0 0 0\n"},
        _BVEC_MESSAGE + "rows have different lengths",
        id="ragged",
    ),
    pytest.param(
        {"bval": "0 700 700 700\n0 2000 2000 2000\n"},
        _BVAL_MESSAGE + "expected one row",
        id="bval-two-rows",
    ),
    pytest.param(
        {"bval": "0 700 700 700 0 2000 2000\n"},
        r"sub-01_dwi\.bval has 7 b-values.*sub-01_dwi\.bvec",
        id="count-mismatch",
    ),
    *(
        pytest.param(
            {"bval": f"0 700 {token} 700 0 2000 2000 2000\n"},
            _BVAL_MESSAGE + "b-value of volume 2",
            id=f"bval-{token}",
        )
        for token in ("nan", "inf", "-inf", "NaN")
    ),
    *(
        pytest.param(
            {"bvec": f"0 1 0 0 0 0.6 0 0.8\n0 0 1 0 0 0.8 {token} 0\n0 0 0 1 0 0 0.8 0.6\n"},
            _BVEC_MESSAGE + "b-vector of volume 6",
            id=f"bvec-{token}",
        )
        for token in ("nan", "inf")
    ),
    pytest.param(
        {"bval": "0 700 700 700 0 -2000 2000 2000\n"},
        _BVAL_MESSAGE + "negative b-value -2000",
        id="negative-bval",
    ),
    *(
        pytest.param(
            {"bvec": f"0 1 0 0 0 0.6 0 {length}\n0 0 1 0 0 0.8 0.6 0\n0 0 0 1 0 0 0.8 0\n"},
            _BVEC_MESSAGE + "zero-length b-vector at volume 7",
            id=f"zero-length-bvec-{length}",
        )
        for length in (0.0, 1e-8)
    ),
    pytest.param(
        {
            "bval": "1000 700 700 700 1000 2000 2000 2000\n",
            "bvec": "1 1 0 0 0 0.6 0 0.8\n0 0 1 0 1 0.8 0.6 0\n0 0 0 1 0 0 0.8 0.6\n",
        },
        _BVAL_MESSAGE + "no b = 0 volume",
        id="no-b0",
    ),
    pytest.param(
        {"bval": "0 0 0 0 0 0 0 0\n"}, _BVAL_MESSAGE + "NODDI needs at least two", id="only-b0"
    ),
]


@pytest.mark.parametrize(("contents", "message"), BAD_FILES)
def test_bad_file(good_pair, contents, message):
    paths = dict(zip(("bval", "bvec"), good_pair, strict=True))
    for which, content in contents.items():
        paths[which].write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SchemeError, match=message):
        read_scheme(*good_pair)


def test_count_mismatch_with_image(good_pair):
    bval, bvec = good_pair
    with pytest.raises(SchemeError, match=r"sub-01_dwi\.bval and .*sub-01_dwi\.bvec describe 8"):
        read_scheme(bval, bvec, n_volumes=80)


def test_zero_bvec_allowed_on_b0(good_pair):
    bval, bvec = good_pair
    _write(bval, "10 700 700 700 0 2000 2000 2000\n")  # b=10 is below the b0 threshold
    assert read_scheme(bval, bvec).n_b0 == 2


def test_single_shell(good_pair):
    bval, bvec = good_pair
    _write(bval, "0 1000 1000 1000 0 1000 1005 995\n")
    with pytest.raises(SchemeError) as info:
        read_scheme(bval, bvec)
    message = str(info.value)
    assert "sub-01_dwi.bval" in message
    assert "NODDI needs at least two non-zero b-shells" in message
    assert "b=1000 x6" in message


# -- bad inputs built in code are caught by the same checks -------------------------
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b, v: (b[:-1], v), "7 b-values but 8 b-vectors"),
        (lambda b, v: (b, v.T), r"shape \(M, 3\)"),
        (lambda b, v: (b.reshape(2, 4), v), "must be 1-D"),
        (lambda b, v: (b[:0], v[:0]), "no b-values"),
        (lambda b, v: (np.where(b == 700, np.nan, b), v), "b-value of volume 1"),
        (lambda b, v: (np.where(b == 700, -700, b), v), "negative b-value"),
        (lambda b, v: (b, np.where(b[:, None] > 0, 0.0, v)), "zero-length b-vector"),
        (lambda b, v: (b + 100, v + 0.1), "no b = 0 volume"),
        (lambda b, v: (np.where(b > 0, 700.0, b), v), "at least two non-zero b-shells"),
    ],
)
def test_scheme_constructor_validates(edit, message):
    bvals, bvecs = edit(*_small_arrays())
    with pytest.raises(SchemeError, match=f"scheme: .*{message}"):
        Scheme(bvals, bvecs)


@pytest.mark.parametrize(
    "kwargs", [{"b0_threshold": -1.0}, {"shell_tolerance": 0.0}, {"b0_threshold": np.nan}]
)
def test_scheme_rejects_bad_parameters(kwargs):
    with pytest.raises(SchemeError, match="scheme: "):
        Scheme(*_small_arrays(), **kwargs)


def test_scheme_error_is_value_error():
    assert issubclass(SchemeError, ValueError)
