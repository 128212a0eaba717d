"""Where networks come from: the shipped reference models, the user cache, automatic training.

``--model auto`` looks for a shipped or cached network whose scheme matches the data (and whose
fixed diffusivities and label type are the requested ones). If there is none, it trains one for
the data's scheme with :data:`AUTO_RECIPE`, stores it in the cache under a name keyed by the
scheme hash, the diffusivities and the label type, and every later subject with the same
protocol reuses it. The file is written to a temporary name and renamed, so two processes that
train the same scheme at once both end with a complete file.

The cache folder is ``$NODDI_BIDS_CACHE`` or the platform's user cache folder
(``~/.cache/noddi-bids`` on Linux); containers set ``NODDI_BIDS_CACHE`` inside the image.
Nothing here imports torch unless a network has to be trained.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from noddi_bids.model.noddi import D_ISO, D_PAR
from noddi_bids.model.scheme import Scheme
from noddi_bids.nn.infer import read_metadata
from noddi_bids.nn.metadata import ModelError, ModelMetadata

LOGGER = logging.getLogger(__name__)

#: Environment variable naming the cache folder.
CACHE_ENV = "NODDI_BIDS_CACHE"
#: Shipped reference-protocol networks: name -> file in ``noddi_bids/data/models``.
SHIPPED = {"nn-mle": "nn-mle_reference.onnx", "nn-gt": "nn-gt_reference.onnx"}
#: Training recipe of ``--model auto`` (the study's data and optimiser; early stopping keeps
#: the run within about ten minutes on two CPU cores, see docs/benchmarks.md).
AUTO_RECIPE: dict[str, Any] = {"n_samples": 2**18, "epochs": 200, "patience": 20, "seed": 0}
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


def shipped_models() -> dict[str, Path]:
    """Networks shipped with the package for the reference protocol.

    Returns
    -------
    dict
        ``{"nn-mle": path, "nn-gt": path}``.
    """
    folder = resources.files("noddi_bids").joinpath("data").joinpath("models")
    return {name: Path(os.fspath(folder.joinpath(file))) for name, file in SHIPPED.items()}


def cached_model_path(
    scheme: Scheme, d_par: float = D_PAR, d_iso: float = D_ISO, labels: str = "mle"
) -> Path:
    """Cache file of the automatically trained network for a scheme, diffusivities and labels."""
    name = f"nn-{labels}_{scheme.hash}_dpar{d_par:.6g}_diso{d_iso:.6g}.onnx"
    return cache_dir() / "models" / name


def _compatible(
    metadata: ModelMetadata, scheme: Scheme, d_par: float, d_iso: float, labels: str
) -> bool:
    return (
        metadata.labels == labels
        and math.isclose(metadata.d_par, d_par, rel_tol=_RELATIVE_TOLERANCE)
        and math.isclose(metadata.d_iso, d_iso, rel_tol=_RELATIVE_TOLERANCE)
        and metadata.scheme.matches(scheme)[0]
    )


def find_model(
    scheme: Scheme, d_par: float = D_PAR, d_iso: float = D_ISO, labels: str = "mle"
) -> Path | None:
    """First shipped or cached network that fits a scheme, diffusivities and label type.

    The cache file named by :func:`cached_model_path` is tried first, then the shipped models,
    then any other ``.onnx`` file in the cache. Unreadable files are skipped with a warning.

    Returns
    -------
    Path or None
        The network file, or None when none fits.
    """
    folder = cache_dir() / "models"
    candidates = [cached_model_path(scheme, d_par, d_iso, labels), *shipped_models().values()]
    if folder.is_dir():
        candidates += sorted(folder.glob("*.onnx"))
    seen: set[Path] = set()
    for path in candidates:
        if path in seen or not path.is_file():
            continue
        seen.add(path)
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
        ``"auto"``, a shipped name (``"nn-mle"``, ``"nn-gt"``) or a path to an ``.onnx`` file.
    scheme : Scheme
        Scheme of the data (used by ``auto``).
    d_par, d_iso : float
        Fixed diffusivities the network must have been trained with, mm^2/s (``auto``).
    labels : {"mle", "gt", "hybrid"}
        Label type for ``auto``.
    train : bool
        Whether ``auto`` may train and cache a network when none fits.
    n_threads : int, optional
        CPU threads for automatic training.
    progress : bool, optional
        Progress bars of automatic training.

    Returns
    -------
    Path
        The network file. Named and path models are not checked against `scheme` here; do
        that with :meth:`noddi_bids.nn.infer.OnnxEstimator.check_scheme`.

    Raises
    ------
    ModelError
        Unknown name, missing file, or ``auto`` with nothing that fits and ``train=False``.
    """
    if spec in SHIPPED:
        return shipped_models()[spec]
    if spec != "auto":
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(
                f"{spec}: no such model file; use 'auto', one of {sorted(SHIPPED)} or the path "
                "of an .onnx network written by noddi-bids-train."
            )
        return path
    found = find_model(scheme, d_par, d_iso, labels)
    if found is not None:
        LOGGER.info("Using network %s for %s (hash %s)", found, scheme.summary(), scheme.hash)
        return found
    target = cached_model_path(scheme, d_par, d_iso, labels)
    if not train:
        raise ModelError(
            f"No shipped or cached {labels!r} network fits {scheme.summary()} (hash "
            f"{scheme.hash}, d_par {d_par:g}, d_iso {d_iso:g}) and training is disabled; "
            f"train one with noddi-bids-train --bval DWI.bval --bvec DWI.bvec --labels {labels} "
            f"--out {target}"
        )
    LOGGER.info(
        "No network fits %s (hash %s); training one (%s labels) and caching it at %s",
        scheme.summary(),
        scheme.hash,
        labels,
        target,
    )
    return train_auto_model(scheme, target, d_par, d_iso, labels, n_threads, progress)


def train_auto_model(
    scheme: Scheme,
    target: Path,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    labels: str = "mle",
    n_threads: int | None = None,
    progress: bool | None = None,
    recipe: dict[str, Any] | None = None,
) -> Path:
    """Train a network with the automatic recipe and write it atomically to `target`.

    Parameters
    ----------
    scheme : Scheme
        Scheme to train for.
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
        Overrides of :data:`AUTO_RECIPE` (``n_samples``, ``epochs``, ``patience``, ``seed``).

    Returns
    -------
    Path
        `target`.
    """
    from noddi_bids.nn.train import TrainingSettings, train_model

    recipe = {**AUTO_RECIPE, **(recipe or {})}
    settings = TrainingSettings(
        epochs=recipe["epochs"],
        patience=recipe["patience"],
        seed=recipe["seed"],
        n_threads=n_threads,
    )
    result = train_model(
        scheme,
        target,
        labels=labels,
        n_samples=recipe["n_samples"],
        data_seed=recipe["seed"],
        settings=settings,
        d_par=d_par,
        d_iso=d_iso,
        n_threads=n_threads,
        progress=progress,
        command=f"noddi_bids.nn.store.train_auto_model(recipe={recipe})",
    )
    LOGGER.info(
        "Cached %s (%d epochs, validation loss %.6g)",
        target,
        result.epochs_run,
        result.best_validation_loss,
    )
    return target
