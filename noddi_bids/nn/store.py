"""Where networks come from: shipped models, the user cache, automatic training keyed by shells.

Rotation-invariant networks (:mod:`noddi_bids.nn.features`) apply to every scheme with their
shells, so they are found by shells: ``--model auto`` uses a shipped or cached network whose
shells match the data's (and whose diffusivities and label type are the requested ones, and
whose trained ranges cover the data's direction sets). If there is none, it trains one for the
data's shells with :data:`AUTO_RECIPE` and caches it; every later subject with those shells,
whatever its directions, reuses it. Training takes a lock next to the cache file, so that when
many processes (SLURM array tasks) start at once one trains and the others wait for it; the
lock is an ``fcntl`` record lock, which the system releases when its holder dies, so a killed
trainer never blocks the next one. The file is written to a temporary name and renamed.

The cache folder is ``$NODDI_BIDS_CACHE`` or the platform's user cache folder
(``~/.cache/noddi-bids`` on Linux). When it is not writable (a read-only container image), new
networks go to ``$TMPDIR/noddi-bids-cache-<uid>`` with a warning; set ``NODDI_BIDS_CACHE`` to a
writable shared folder so that all jobs of a study share one training.

The study's raw-signal networks for the exact reference scheme ship too (``nn-mle-raw``,
``nn-gt-raw``). Nothing here imports torch unless a network has to be trained.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from noddi_bids.model.noddi import D_ISO, D_PAR
from noddi_bids.model.scheme import Scheme
from noddi_bids.nn.features import FeatureError, FeatureSpec
from noddi_bids.nn.infer import read_metadata
from noddi_bids.nn.metadata import ModelError, ModelMetadata

LOGGER = logging.getLogger(__name__)

#: Environment variable naming the cache folder.
CACHE_ENV = "NODDI_BIDS_CACHE"
#: The study's raw-signal networks for the exact reference scheme: name -> file.
RAW_MODELS = {"nn-mle-raw": "nn-mle_reference.onnx", "nn-gt-raw": "nn-gt_reference.onnx"}
#: Names of shipped rotation-invariant networks by label type: name -> labels.
NAMED_LABELS = {"nn-mle": "mle", "nn-gt": "gt"}
#: Shell sets (s/mm^2) with shipped rotation-invariant networks: the reference protocol, a
#: common clinical two-shell protocol, an HCP-like and an ABCD-like protocol.
SHIPPED_SHELLS = ((700.0, 2000.0), (1000.0, 2000.0), (1000.0, 2000.0, 3000.0),
                  (500.0, 1000.0, 2000.0, 3000.0))  # fmt: skip
#: Training recipe of shipped and automatically trained rotation-invariant networks.
AUTO_RECIPE: dict[str, Any] = {
    "n_samples": 2**18,
    "n_schemes": 256,
    "snr": (5.0, 80.0),
    "epochs": 100,
    "patience": 15,
    "plateau": 5,
    "learning_rate": 1e-3,
    "seed": 0,
}
_RELATIVE_TOLERANCE = 1e-6


def cache_dir() -> Path:
    """Folder of cached networks: ``$NODDI_BIDS_CACHE`` or the user cache folder.

    Returns
    -------
    Path
        ``$NODDI_BIDS_CACHE`` when set; else ``%LOCALAPPDATA%/noddi-bids/Cache`` on Windows,
        ``~/Library/Caches/noddi-bids`` on macOS, ``$XDG_CACHE_HOME/noddi-bids`` or
        ``~/.cache/noddi-bids`` elsewhere. Not created here.
    """
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "noddi-bids" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "noddi-bids"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "noddi-bids"


def fallback_cache_dir() -> Path:
    """Writable folder for new networks when :func:`cache_dir` is read-only."""
    return Path(tempfile.gettempdir()) / f"noddi-bids-cache-{os.getuid()}"


def model_folders() -> list[Path]:
    """Folders searched for cached networks: the cache, then the fallback."""
    return [cache_dir() / "models", fallback_cache_dir() / "models"]


def writable_model_folder() -> Path:
    """Return the cache's model folder (created), or the fallback when it is not writable."""
    for index, folder in enumerate(model_folders()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            if index:
                LOGGER.warning(
                    "The network cache %s is not writable; caching in %s instead. Set %s to a "
                    "writable (shared) folder so that every job finds the network.",
                    model_folders()[0], folder, CACHE_ENV,
                )  # fmt: skip
            return folder
    raise ModelError(
        f"No writable folder for a new network: {model_folders()[0]} and "
        f"{model_folders()[1]} cannot be written; set {CACHE_ENV} to a writable folder."
    )


def _shipped_folder() -> Path:
    return Path(os.fspath(resources.files("noddi_bids").joinpath("data").joinpath("models")))


def shipped_models() -> dict[str, Path]:
    """Every network shipped with the package: file stem -> path."""
    return {path.stem: path for path in sorted(_shipped_folder().glob("*.onnx"))}


def raw_models() -> dict[str, Path]:
    """Return the shipped raw-signal networks of the reference scheme: name -> path."""
    return {name: _shipped_folder() / file for name, file in RAW_MODELS.items()}


def shipped_file_name(spec: FeatureSpec, labels: str) -> str:
    """File name of a shipped rotation-invariant network, e.g. ``nn-mle_b700-2000_lmax2-2``."""
    return f"nn-{labels}_{spec.key}.onnx"


def cached_model_path(
    spec: FeatureSpec,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    labels: str = "mle",
    folder: Path | None = None,
) -> Path:
    """Cache file of the automatically trained network for shells, diffusivities and labels."""
    name = f"nn-{labels}_{spec.key}_dpar{d_par:.6g}_diso{d_iso:.6g}.onnx"
    return (folder or model_folders()[0]) / name


def _compatible(
    metadata: ModelMetadata, scheme: Scheme, d_par: float, d_iso: float, labels: str
) -> bool:
    if metadata.features is None or metadata.labels != labels:
        return False
    if not (
        math.isclose(metadata.d_par, d_par, rel_tol=_RELATIVE_TOLERANCE)
        and math.isclose(metadata.d_iso, d_iso, rel_tol=_RELATIVE_TOLERANCE)
    ):
        return False
    try:
        metadata.features.check(scheme)
    except FeatureError:
        return False
    return True


def find_model(
    scheme: Scheme,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    labels: str = "mle",
    cached: bool = True,
) -> Path | None:
    """First shipped or cached rotation-invariant network that applies to a scheme.

    The shipped networks are tried first, then the cached ones. Unreadable files are skipped
    with a warning.

    Parameters
    ----------
    scheme : Scheme
        The data's scheme.
    d_par, d_iso : float
        Diffusivities the network must have been trained with, mm^2/s.
    labels : {"mle", "gt", "hybrid"}
        Label type.
    cached : bool
        Also search the cache folders (False: shipped networks only).

    Returns
    -------
    Path or None
        The network file, or None when none applies.
    """
    candidates = [p for name, p in shipped_models().items() if name.startswith(f"nn-{labels}_")]
    if cached:
        for folder in model_folders():
            if folder.is_dir():
                candidates += sorted(folder.glob(f"nn-{labels}_*.onnx"))
    for path in candidates:
        try:
            metadata = read_metadata(path)
        except ModelError as err:
            LOGGER.warning("Skipping unusable network: %s", err)
            continue
        if _compatible(metadata, scheme, d_par, d_iso, labels):
            return path
    return None


def resolve_model(
    spec: str,
    scheme: Scheme,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    labels: str = "mle",
    train: bool = True,
    *,
    n_threads: int | None = None,
    progress: bool | None = None,
) -> Path:
    """Network file for a ``--model`` value.

    Parameters
    ----------
    spec : str
        ``"auto"`` (shipped or cached network for the data's shells, trained once if none),
        ``"nn-mle"``/``"nn-gt"`` (the shipped network of that label type for the data's shells),
        ``"nn-mle-raw"``/``"nn-gt-raw"`` (the study's raw-signal networks of the reference
        scheme) or a path to an ``.onnx`` file.
    scheme : Scheme
        Scheme of the data.
    d_par, d_iso : float
        Fixed diffusivities the network must have been trained with, mm^2/s.
    labels : {"mle", "gt", "hybrid"}
        Label type for ``auto``.
    train : bool
        Whether ``auto`` may train and cache a network when none applies.
    n_threads : int, optional
        CPU threads for automatic training.
    progress : bool, optional
        Progress bars of automatic training.

    Returns
    -------
    Path
        The network file. Raw and path models are not checked against `scheme` here; do that
        with :meth:`noddi_bids.nn.infer.OnnxEstimator.check_scheme`.

    Raises
    ------
    ModelError
        Unknown name, missing file, no shipped network for the shells, a scheme no network can
        use, or ``auto`` with nothing that applies and ``train=False``.
    """
    if spec in RAW_MODELS:
        return raw_models()[spec]
    if spec in NAMED_LABELS:
        found = find_model(scheme, d_par, d_iso, NAMED_LABELS[spec], cached=False)
        if found is None:
            shipped = "; ".join("/".join(f"{b:g}" for b in shells) for shells in SHIPPED_SHELLS)
            raise ModelError(
                f"No shipped {spec} network applies to {scheme.summary()} (shipped shells: "
                f"{shipped} s/mm^2, d_par {D_PAR:g}); use --model auto to train one for these "
                "shells once and cache it."
            )
        return found
    if spec != "auto":
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(
                f"{spec}: no such model file; use 'auto', one of "
                f"{sorted([*NAMED_LABELS, *RAW_MODELS])} or the path of an .onnx network "
                "written by noddi-bids-train."
            )
        return path
    found = find_model(scheme, d_par, d_iso, labels)
    if found is not None:
        LOGGER.info("Using network %s for %s", found, scheme.summary())
        return found
    features = FeatureSpec.for_scheme(scheme)
    try:
        features.check(scheme)
    except FeatureError as err:
        raise ModelError(
            f"No network can be trained for {scheme.summary()}: {err}. Rotation-invariant "
            "networks need shelled data with 6 or more well-spread directions per shell."
        ) from err
    if not train:
        raise ModelError(
            f"No shipped or cached {labels!r} network applies to {scheme.summary()} (d_par "
            f"{d_par:g}, d_iso {d_iso:g}) and training is disabled; train one with "
            f"noddi-bids-train --bval DWI.bval --bvec DWI.bvec --labels {labels} --out "
            f"{cached_model_path(features, d_par, d_iso, labels)}"
        )
    target = cached_model_path(features, d_par, d_iso, labels, writable_model_folder())
    with training_lock(target):
        found = find_model(scheme, d_par, d_iso, labels)  # trained while we waited?
        if found is not None:
            LOGGER.info("Using network %s, trained by another process", found)
            return found
        LOGGER.info(
            "No network applies to %s; training one for its shells (%s labels, about 5 "
            "minutes on 2 cores, once for every subject with these shells) into %s",
            scheme.summary(), labels, target,
        )  # fmt: skip
        return train_auto_model(features, target, d_par, d_iso, labels, n_threads, progress)


@contextmanager
def training_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` while training `target`.

    Other processes asking for the same network wait here (with a log line) until the holder
    finishes. ``fcntl.lockf`` record locks are released by the system when the holder exits
    or is killed, so a dead trainer never leaves a stale lock.
    """
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a", encoding="utf-8") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            LOGGER.info("Another process is training %s; waiting for it", target.name)
            fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def train_auto_model(
    features: FeatureSpec,
    target: Path,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    labels: str = "mle",
    n_threads: int | None = None,
    progress: bool | None = None,
    recipe: dict[str, Any] | None = None,
) -> Path:
    """Train a rotation-invariant network with the automatic recipe, written atomically.

    Parameters
    ----------
    features : FeatureSpec
        Shells and trained ranges.
    target : Path
        Output file.
    d_par, d_iso : float
        Diffusivities, mm^2/s.
    labels : str
        Label type.
    n_threads : int, optional
        CPU threads.
    progress : bool, optional
        Progress bars.
    recipe : dict, optional
        Overrides of :data:`AUTO_RECIPE`.

    Returns
    -------
    Path
        `target`.
    """
    from noddi_bids.nn.train import TrainingSettings, train_invariant_model

    recipe = {**AUTO_RECIPE, **(recipe or {})}
    settings = TrainingSettings(
        epochs=recipe["epochs"],
        patience=recipe["patience"],
        plateau=recipe["plateau"],
        learning_rate=recipe["learning_rate"],
        seed=recipe["seed"],
        n_threads=n_threads,
    )
    result = train_invariant_model(
        features,
        target,
        labels=labels,
        n_samples=recipe["n_samples"],
        snr=tuple(recipe["snr"]),
        n_schemes=recipe["n_schemes"],
        data_seed=recipe["seed"],
        settings=settings,
        d_par=d_par,
        d_iso=d_iso,
        n_threads=n_threads,
        progress=progress,
        command=f"noddi_bids.nn.store.train_auto_model(recipe={recipe})",
    )
    LOGGER.info(
        "Cached %s (%d epochs in %.0f s, validation loss %.6g)",
        target, result.epochs_run, result.seconds, result.best_validation_loss,
    )  # fmt: skip
    return target
