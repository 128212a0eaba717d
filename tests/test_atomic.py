"""Atomic writes of folders (noddi_bids.atomic); files: tests/test_io_derivatives.py."""

from __future__ import annotations

import pytest

from noddi_bids.atomic import atomic_target


def _folder(path, names):
    path.mkdir()
    for name in names:
        (path / name).write_text(name)


def test_folder_replaces_an_older_one_as_a_whole(tmp_path):
    target = tmp_path / "series"
    _folder(target, ["old.dcm", "stale.txt"])
    with atomic_target(target) as temporary:
        _folder(temporary, ["new.dcm"])
        assert sorted(p.name for p in target.iterdir()) == ["old.dcm", "stale.txt"]
    assert [p.name for p in target.iterdir()] == ["new.dcm"]
    assert [p.name for p in tmp_path.iterdir()] == ["series"]


def test_failed_folder_leaves_the_older_one(tmp_path):
    target = tmp_path / "series"
    _folder(target, ["old.dcm"])
    with pytest.raises(RuntimeError), atomic_target(target) as temporary:
        _folder(temporary, ["partial.dcm"])
        raise RuntimeError("crash while writing")
    assert [p.name for p in target.iterdir()] == ["old.dcm"]
    assert [p.name for p in tmp_path.iterdir()] == ["series"]
