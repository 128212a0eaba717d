"""Tests for noddi_bids.nn.store (shipped and cached networks, --model auto) and the CLI."""

import numpy as np
import pytest

from noddi_bids.cli.networks import train_main
from noddi_bids.model.scheme import Scheme, reference_scheme
from noddi_bids.nn import store
from noddi_bids.nn.infer import ModelError, OnnxEstimator, read_metadata

TINY_RECIPE = {"n_samples": 1500, "epochs": 3, "patience": None, "seed": 0}


def _other_scheme():
    """A two-shell scheme different from the reference (b = 1000 / 2500, 30 volumes)."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((28, 3))
    bvals = np.r_[0.0, [1000.0] * 14, 0.0, [2500.0] * 14]
    bvecs = np.r_[[[0, 0, 0]], vectors[:14], [[0, 0, 0]], vectors[14:]]
    return Scheme(bvals, bvecs)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NODDI_BIDS_CACHE", str(tmp_path / "c"))
    assert store.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NODDI_BIDS_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store.cache_dir() == tmp_path / ".cache" / "noddi-bids"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.cache_dir() == tmp_path / "xdg" / "noddi-bids"


def test_named_and_path_specs(tmp_path):
    scheme = reference_scheme()
    shipped = store.shipped_models()
    assert set(shipped) == {"nn-mle", "nn-gt"}
    assert store.resolve_model("nn-gt", scheme) == shipped["nn-gt"]
    with pytest.raises(ModelError, match="no such model file"):
        store.resolve_model(str(tmp_path / "none.onnx"), scheme)
    with pytest.raises(ModelError, match="no such model file"):
        store.resolve_model("nn-typo", scheme)


@pytest.mark.parametrize("labels", ["mle", "gt"])
def test_shipped_models(labels, monkeypatch, tmp_path):
    path = store.shipped_models()[f"nn-{labels}"]
    meta = read_metadata(path)
    assert meta.labels == labels and meta.scheme.matches(reference_scheme())[0]
    assert meta.training["data"]["n_samples"] == 2**18 and meta.snr == 15.0
    assert meta.training["epochs"] == 500 and meta.training["batch_size"] == 1000
    assert path.stat().st_size < 400_000
    monkeypatch.setenv("NODDI_BIDS_CACHE", str(tmp_path))
    assert store.resolve_model("auto", reference_scheme(), labels=labels, train=False) == path


def test_auto_trains_caches_and_reuses(monkeypatch, tmp_path):
    monkeypatch.setenv("NODDI_BIDS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(store, "AUTO_RECIPE", TINY_RECIPE)
    scheme = _other_scheme()
    with pytest.raises(ModelError, match="training is disabled"):
        store.resolve_model("auto", scheme, labels="gt", train=False)
    path = store.resolve_model("auto", scheme, labels="gt", progress=False, n_threads=1)
    assert path == store.cached_model_path(scheme, labels="gt")
    assert path.parent == tmp_path / "cache" / "models" and scheme.hash in path.name
    estimator = OnnxEstimator(path)
    estimator.check_scheme(scheme)
    assert estimator.metadata.labels == "gt"
    assert not list(path.parent.glob(".tmp-*"))  # atomic write left no temporary

    def refuse(*args, **kwargs):
        raise AssertionError("retrained although a cached model fits")

    monkeypatch.setattr(store, "train_auto_model", refuse)
    assert store.resolve_model("auto", scheme, labels="gt") == path
    # Same protocol with flipped b-vectors and jittered b-values reuses the same file.
    jittered = Scheme(scheme.bvals + np.where(scheme.b0_mask, 0, 3.0), -scheme.bvecs)
    assert store.resolve_model("auto", jittered, labels="gt") == path
    # Other diffusivities or label types do not match.
    with pytest.raises(AssertionError, match="retrained"):
        store.resolve_model("auto", scheme, d_par=2.0e-3, labels="gt")
    with pytest.raises(AssertionError, match="retrained"):
        store.resolve_model("auto", scheme, labels="mle")


def test_auto_skips_corrupt_cache_files(monkeypatch, tmp_path):
    monkeypatch.setenv("NODDI_BIDS_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "junk.onnx").write_bytes(b"junk")
    assert store.find_model(_other_scheme(), labels="gt") is None
    assert store.find_model(reference_scheme(), labels="gt") == store.shipped_models()["nn-gt"]


def test_train_cli(tmp_path, caplog):
    out = tmp_path / "cli.onnx"
    bval, bvec = tmp_path / "x.bval", tmp_path / "x.bvec"
    from noddi_bids.model.scheme import write_scheme

    write_scheme(_other_scheme(), bval, bvec)
    argv = ["--bval", str(bval), "--bvec", str(bvec), "--labels", "gt", "--out", str(out)]
    argv += ["--samples", "1000", "--epochs", "2", "--seed", "3", "--threads", "1"]
    assert train_main(argv) == 0
    meta = read_metadata(out)
    assert meta.training["command"].startswith("noddi-bids-train --bval")
    assert meta.training["data"]["seed"] == 3 and meta.training["epochs_run"] == 2
    assert train_main(["--bval", str(bval), "--out", str(out)]) == 1
