"""Tests for noddi_bids.nn.store (shipped and cached networks, --model auto) and the CLI."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from conftest import TINY_RECIPE

from noddi_bids.cli.networks import train_main
from noddi_bids.model.directions import random_rotation, random_unit_vectors, spread_directions
from noddi_bids.model.scheme import Scheme, reference_scheme, write_scheme
from noddi_bids.nn import store
from noddi_bids.nn.features import FeatureSpec
from noddi_bids.nn.infer import ModelError, OnnxEstimator, read_metadata


def _scheme(shells, counts, seed=0, n_b0=2):
    """A scheme with its own well-spread, randomly rotated directions per shell."""
    rng = np.random.default_rng(seed)
    rotation = random_rotation(rng)
    bvals, bvecs = [np.zeros(n_b0)], [np.zeros((n_b0, 3))]
    for b, n in zip(shells, counts, strict=True):
        bvals.append(np.full(n, float(b)))
        bvecs.append(spread_directions(random_unit_vectors(n, rng)) @ rotation.T)
    return Scheme(np.concatenate(bvals), np.concatenate(bvecs))


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
    raw = store.raw_models()
    assert store.resolve_model("nn-gt-raw", scheme) == raw["nn-gt-raw"]
    assert read_metadata(raw["nn-mle-raw"]).inputs == "signal"
    with pytest.raises(ModelError, match="no such model file"):
        store.resolve_model(str(tmp_path / "none.onnx"), scheme)
    with pytest.raises(ModelError, match="no such model file"):
        store.resolve_model("nn-typo", scheme)
    with pytest.raises(ModelError, match="No shipped nn-gt network applies"):
        store.resolve_model("nn-gt", _scheme((1000, 2500), (30, 30)))


@pytest.mark.parametrize("shells", store.SHIPPED_SHELLS)
@pytest.mark.parametrize("labels", ["mle", "gt"])
def test_shipped_networks_serve_any_direction_set_of_their_shells(shells, labels, monkeypatch,
                                                                  tmp_path):  # fmt: skip
    spec = FeatureSpec(shells=shells)
    path = store.shipped_models()[store.shipped_file_name(spec, labels).removesuffix(".onnx")]
    meta = read_metadata(path)
    assert meta.labels == labels and meta.inputs == "invariant" and meta.features == spec
    assert meta.spread and meta.training["spread"]["best_epoch"] >= 1
    assert meta.training["data"]["n_samples"] == 2**18 and meta.snr == [5.0, 80.0]
    assert meta.training["data"]["n_schemes"] == 256
    assert path.stat().st_size < 400_000
    monkeypatch.setenv("NODDI_BIDS_CACHE", str(tmp_path))
    for seed, count in enumerate((20, 64)):
        scheme = _scheme(shells, [count] * len(shells), seed=seed)
        assert store.resolve_model("auto", scheme, labels=labels, train=False) == path
        assert store.resolve_model(f"nn-{labels}", scheme) == path
    assert not any(tmp_path.iterdir())  # nothing trained or cached


def test_auto_trains_once_per_shells_and_reuses(monkeypatch, tmp_path):
    monkeypatch.setenv("NODDI_BIDS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(store, "AUTO_RECIPE", {**store.AUTO_RECIPE, **TINY_RECIPE})
    scheme = _scheme((1000, 2500), (30, 40))
    with pytest.raises(ModelError, match="training is disabled"):
        store.resolve_model("auto", scheme, labels="gt", train=False)
    path = store.resolve_model("auto", scheme, labels="gt", progress=False, n_threads=1)
    assert path.parent == tmp_path / "cache" / "models" and "b1000-2500" in path.name
    estimator = OnnxEstimator(path)
    estimator.check_scheme(scheme)
    assert estimator.metadata.labels == "gt" and estimator.metadata.inputs == "invariant"
    assert not list(path.parent.glob(".tmp-*"))  # atomic write left no temporary

    def refuse(*args, **kwargs):
        raise AssertionError("retrained although a cached model fits")

    monkeypatch.setattr(store, "train_auto_model", refuse)
    # Another subject: other directions and counts, jittered b-values, same shells.
    other = _scheme((1000, 2500), (45, 25), seed=7, n_b0=5)
    jittered = Scheme(other.bvals + np.where(other.b0_mask, 0, 15.0), -other.bvecs)
    assert store.resolve_model("auto", jittered, labels="gt") == path
    # Other diffusivities or label types do not match.
    with pytest.raises(AssertionError, match="retrained"):
        store.resolve_model("auto", scheme, d_par=2.0e-3, labels="gt")
    with pytest.raises(AssertionError, match="retrained"):
        store.resolve_model("auto", scheme, labels="mle")


def test_auto_refuses_schemes_no_network_can_use(monkeypatch, tmp_path):
    monkeypatch.setenv("NODDI_BIDS_CACHE", str(tmp_path))
    few = _scheme((1000, 2500), (5, 30))
    with pytest.raises(ModelError, match="No network can be trained.*has 5 directions"):
        store.resolve_model("auto", few)
    assert not any(tmp_path.iterdir())


def test_read_only_cache_falls_back_to_a_writable_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("NODDI_BIDS_CACHE", "/proc/noddi-bids-cache")  # never writable
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(store, "AUTO_RECIPE", {**store.AUTO_RECIPE, **TINY_RECIPE})
    path = store.resolve_model("auto", _scheme((1000, 2500), (30, 30)), labels="gt",
                               progress=False, n_threads=1)  # fmt: skip
    assert path.parent == tmp_path / f"noddi-bids-cache-{os.getuid()}" / "models"


def test_auto_skips_corrupt_cache_files(monkeypatch, tmp_path):
    monkeypatch.setenv("NODDI_BIDS_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "nn-gt_junk.onnx").write_bytes(b"junk")
    assert store.find_model(_scheme((1000, 2500), (30, 30)), labels="gt") is None


_CONCURRENT = """
import logging, sys
from conftest import TINY_RECIPE
from test_nn_store import _scheme
from noddi_bids.nn import store
logging.basicConfig(level=logging.INFO, format="%(message)s")
store.AUTO_RECIPE = {**store.AUTO_RECIPE, **TINY_RECIPE}
print(store.resolve_model("auto", _scheme((1000, 2500), (30, 30)), labels="gt",
                          progress=False, n_threads=1))
"""


def test_concurrent_jobs_train_once(tmp_path):
    env = {**os.environ, "NODDI_BIDS_CACHE": str(tmp_path), "PYTHONPATH": os.path.dirname(__file__)}
    jobs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(3)]  # fmt: skip
    results = [job.communicate(timeout=300) for job in jobs]
    assert all(job.returncode == 0 for job in jobs), results
    assert len({out.strip() for out, _ in results}) == 1
    trained = [err for _, err in results if "training one for its shells" in err]
    assert len(trained) == 1, [err[-500:] for _, err in results]


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from noddi_bids.nn.store import training_lock
with training_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(300)
"""


def test_lock_of_a_killed_trainer_is_released(tmp_path):
    target = tmp_path / "net.onnx"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(target)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    start = time.perf_counter()
    with store.training_lock(target):
        assert time.perf_counter() - start < 5


def test_train_cli(tmp_path):
    out = tmp_path / "cli.onnx"
    bval, bvec = tmp_path / "x.bval", tmp_path / "x.bvec"
    write_scheme(_scheme((1000, 2500), (30, 30)), bval, bvec)
    argv = ["--bval", str(bval), "--bvec", str(bvec), "--labels", "gt", "--threads", "1"]
    argv += ["--samples", "1000", "--schemes", "8", "--epochs", "2", "--seed", "3"]
    assert train_main([*argv, "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta.inputs == "invariant" and meta.features.shells == (1000.0, 2500.0)
    assert meta.training["command"].startswith("noddi-bids-train --bval")
    assert meta.training["data"]["seed"] == 3 and meta.training["epochs_run"] == 2
    raw = tmp_path / "raw.onnx"
    assert train_main([*argv, "--out", str(raw), "--inputs", "signal"]) == 0
    assert read_metadata(raw).inputs == "signal"
    assert train_main(["--bval", str(bval), "--out", str(out)]) == 1
