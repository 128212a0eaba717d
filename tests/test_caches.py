import os
import tempfile
from pathlib import Path

import pytest

from noddi_bids.caches import fallback_folder, writable_cache

VARIABLE = "NODDI_BIDS_TEST_CACHE"


@pytest.fixture
def temporary(tmp_path, monkeypatch):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.delenv(VARIABLE, raising=False)
    return folder


def read_only(monkeypatch, folder: Path) -> None:
    """Make os.access report `folder` unwritable, as on a read-only mount (even for root)."""
    real = os.access

    def access(path, mode):
        return False if Path(path) == folder and mode & os.W_OK else real(path, mode)

    monkeypatch.setattr(os, "access", access)


def test_writable_folder_is_used_as_it_is(tmp_path, temporary, monkeypatch):
    configured = tmp_path / "cache" / "not-yet"
    monkeypatch.setenv(VARIABLE, str(configured))
    assert writable_cache(VARIABLE, "test") == configured
    assert configured.is_dir()  # created, not replaced
    assert os.environ[VARIABLE] == str(configured)
    assert not fallback_folder("test").exists()


def test_unset_variable_without_default(temporary):
    assert writable_cache(VARIABLE, "test") is None
    assert VARIABLE not in os.environ


def test_read_only_default_falls_back_empty(tmp_path, temporary, monkeypatch):
    default = tmp_path / "package"
    default.mkdir()
    (default / "index.nbi").write_text("not copied")
    read_only(monkeypatch, default)
    used = writable_cache(VARIABLE, "test", default=default)
    assert used == temporary / f"noddi-bids-test-{os.getuid()}"
    assert os.environ[VARIABLE] == str(used)
    assert list(used.iterdir()) == []


def test_read_only_folder_is_copied_once(tmp_path, temporary, monkeypatch):
    image = tmp_path / "image-cache"
    (image / "fit_abc").mkdir(parents=True)
    (image / "fit_abc" / "kernels.f-12.py311.nbi").write_bytes(b"index")
    (image / "fit_abc" / "kernels.f-12.py311.1.nbc").write_bytes(b"code" * 100)
    (image / "fontlist.json").write_text("{}")
    monkeypatch.setenv(VARIABLE, str(image))
    read_only(monkeypatch, image)
    fallback = fallback_folder("test")
    (fallback / "fit_abc").mkdir(parents=True)
    (fallback / "fit_abc" / "kernels.f-12.py311.nbi").write_bytes(b"newer index")

    assert writable_cache(VARIABLE, "test") == fallback
    assert os.environ[VARIABLE] == str(fallback)
    copied = sorted(p.relative_to(fallback) for p in fallback.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(image) for p in image.rglob("*") if p.is_file())
    assert (fallback / "fit_abc" / "kernels.f-12.py311.1.nbc").read_bytes() == b"code" * 100
    assert (fallback / "fit_abc" / "kernels.f-12.py311.nbi").read_bytes() == b"newer index"
    assert not [p for p in fallback.rglob(".tmp-*")]
    # a second process (MultiProc worker) finds the variable pointing at the copy already
    assert writable_cache(VARIABLE, "test") == fallback
