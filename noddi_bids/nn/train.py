"""The NODDI network and its training (PyTorch).

Architecture (the study's): the inputs -> 3 hidden layers of 120 units with ELU (alpha 0.05)
-> 3 outputs through a hard sigmoid (``clip(x / 6 + 1/2, 0, 1)``), so that ODI, NDI and FWF stay
in [0, 1]. The inputs are either the ``M`` measurements normalised by the mean b = 0 (the
study's raw-signal network; 39,243 weights for the 81-measurement reference scheme) or the
rotation-invariant features of :mod:`noddi_bids.nn.features`, standardised by their training
mean and standard deviation inside the network (so the exported graph takes raw features).
Training minimises the mean squared error with Adam (learning rate 5e-4, L2 weight decay 1e-6),
batches of 1000, 10 % of the samples held out for validation, keeping the weights with the
lowest validation loss.

This is the only module, with :mod:`noddi_bids.nn.export`, that imports torch.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Set before torch loads its OpenMP runtime: idle OpenMP threads then sleep instead of spinning.
# On the shared 2-core development machine spinning threads starved each other (288 ms per
# 1000-sample training step against 13 ms); on two idle cores passive waiting cost ~5 % (3.8
# against 3.6 ms). An explicit OMP_WAIT_POLICY in the environment is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from noddi_bids import __version__  # noqa: E402
from noddi_bids.model.noddi import D_ISO, D_PAR  # noqa: E402
from noddi_bids.model.scheme import B0_THRESHOLD, Scheme  # noqa: E402
from noddi_bids.nn.export import export_onnx  # noqa: E402
from noddi_bids.nn.features import FeatureSpec  # noqa: E402
from noddi_bids.nn.metadata import ModelMetadata  # noqa: E402
from noddi_bids.nn.synth import (  # noqa: E402
    DEFAULT_SAMPLES,
    DEFAULT_SNR,
    DEFAULT_SNR_RANGE,
    DEFAULT_TRAINING_SCHEMES,
    LABEL_TYPES,
    PARAMETERS,
    ParameterLimits,
    SnrSpec,
    TrainingSet,
    make_invariant_training_set,
    make_training_set,
)
from noddi_bids.progress import no_bar  # noqa: E402

LOGGER = logging.getLogger(__name__)
#: Epochs between log lines when the progress bar is off (not a terminal).
_LOG_EVERY = 10


@dataclass(frozen=True)
class TrainingSettings:
    """Network and optimiser settings (defaults: the study's recipe).

    Attributes
    ----------
    hidden : tuple of int
        Units of each hidden layer.
    elu_alpha : float
        ELU slope parameter.
    learning_rate, weight_decay : float
        Adam settings (weight decay is an L2 penalty).
    batch_size, epochs : int
        Mini-batch size and maximum number of epochs.
    validation_fraction : float
        Share of the samples held out for validation.
    patience : int or None
        Stop after this many epochs without a better validation loss (None: never).
    plateau : int or None
        Halve the learning rate after this many epochs without a better validation loss
        (None: a constant learning rate, the study's recipe).
    hybrid_weight : float
        Weight lambda of the ground-truth term of the ``hybrid`` loss
        ``lambda MSE(gt) + (1 - lambda) MSE(mle)``.
    seed : int
        Seed of the weight initialisation, the split and the batch order.
    device : str
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    n_threads : int or None
        CPU threads of torch (None: torch's default).
    """

    hidden: tuple[int, ...] = (120, 120, 120)
    elu_alpha: float = 0.05
    learning_rate: float = 5e-4
    weight_decay: float = 1e-6
    batch_size: int = 1000
    epochs: int = 500
    validation_fraction: float = 0.1
    patience: int | None = None
    plateau: int | None = None
    hybrid_weight: float = 0.5
    seed: int = 0
    device: str = "auto"
    n_threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (device and threads are left out: they do not change the model)."""
        settings = asdict(self)
        settings["hidden"] = list(self.hidden)
        del settings["device"], settings["n_threads"]
        return settings


@dataclass
class TrainingResult:
    """Outcome of :func:`train_network`.

    Attributes
    ----------
    network : torch.nn.Module
        The network with the best validation weights, on the CPU, in evaluation mode.
    best_epoch, epochs_run : int
        Epoch (1-based) of the best validation loss, and epochs run.
    best_validation_loss : float
        Lowest validation loss.
    history : dict
        ``"train"`` and ``"validation"`` loss per epoch.
    seconds : float
        Wall-clock training time.
    device : str
        Device used.
    """

    network: nn.Module
    best_epoch: int
    epochs_run: int
    best_validation_loss: float
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"


class Standardise(nn.Module):
    """``(x - mean) / scale`` with fixed per-input constants (exported with the network).

    Parameters
    ----------
    mean, scale : ndarray, shape (F,)
        Training mean and standard deviation of each input.
    """

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - torch hook
        return (x - self.mean) / self.scale


def build_network(
    n_inputs: int,
    hidden: tuple[int, ...] = (120, 120, 120),
    elu_alpha: float = 0.05,
    standardise: tuple[np.ndarray, np.ndarray] | None = None,
) -> nn.Sequential:
    """Fully connected NODDI network.

    Parameters
    ----------
    n_inputs : int
        Number of inputs (measurements, or features).
    hidden : tuple of int
        Units of the hidden layers.
    elu_alpha : float
        ELU slope parameter.
    standardise : (ndarray, ndarray), optional
        Mean and standard deviation of each input: a :class:`Standardise` layer comes first.

    Returns
    -------
    torch.nn.Sequential
        [``Standardise``], ``Linear -> ELU`` per hidden layer, then ``Linear -> Hardsigmoid`` to
        3 outputs.
    """
    layers: list[nn.Module] = [] if standardise is None else [Standardise(*standardise)]
    width = n_inputs
    for units in hidden:
        layers += [nn.Linear(width, units), nn.ELU(alpha=elu_alpha)]
        width = units
    layers += [nn.Linear(width, len(PARAMETERS)), nn.Hardsigmoid()]
    return nn.Sequential(*layers)


def label_targets(data: TrainingSet, labels: str, hybrid_weight: float = 0.5):
    """Targets (N, K, 3) and loss weights (K,) for a label type.

    ``gt`` and ``mle`` have one target (K = 1); ``hybrid`` stacks truth and MLE labels with
    weights ``(lambda, 1 - lambda)``.
    """
    if labels not in LABEL_TYPES:
        raise ValueError(f"labels must be one of {LABEL_TYPES}, got {labels!r}")
    if labels != "gt" and data.mle is None:
        raise ValueError(f"{labels!r} training needs MLE labels; make the set with labels='mle'")
    if labels == "gt":
        return data.truth[:, None, :], np.array([1.0])
    if labels == "mle":
        return data.mle[:, None, :], np.array([1.0])
    if not 0.0 <= hybrid_weight <= 1.0:
        raise ValueError(f"hybrid weight must be in [0, 1], got {hybrid_weight}")
    return np.stack([data.truth, data.mle], axis=1), np.array([hybrid_weight, 1 - hybrid_weight])


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch finds no CUDA device; use 'cpu'")
    return torch.device(name)


def _weighted_mse(prediction, targets, weights):
    """``sum_k w_k mean((prediction - targets[:, k])^2)``."""
    squared = (prediction[:, None, :] - targets) ** 2
    return torch.sum(squared.mean(dim=(0, 2)) * weights)


def train_network(
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    settings: TrainingSettings | None = None,
    progress: bool | None = None,
    standardise: bool = False,
) -> TrainingResult:
    """Train a NODDI network on prepared inputs and targets.

    Parameters
    ----------
    inputs : ndarray, shape (N, F)
        Network inputs: normalised noisy signals, or their features.
    targets : ndarray, shape (N, K, 3)
        Labels (see :func:`label_targets`).
    weights : ndarray, shape (K,)
        Loss weight of each target.
    settings : TrainingSettings, optional
        Network and optimiser settings.
    progress : bool, optional
        Show a progress bar over epochs with the losses (default: when on a terminal).
    standardise : bool
        Standardise the inputs inside the network by the training samples' mean and standard
        deviation (for features of different scales).

    Returns
    -------
    TrainingResult
    """
    settings = TrainingSettings() if settings is None else settings
    if not 0.0 < settings.validation_fraction < 1.0:
        raise ValueError("validation_fraction must be in (0, 1)")
    if settings.n_threads:
        torch.set_num_threads(settings.n_threads)
    device = _device(settings.device)
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    n_samples = inputs.shape[0]
    n_val = max(1, int(round(settings.validation_fraction * n_samples)))
    if n_samples - n_val < 1:
        raise ValueError(f"{n_samples} samples are too few to hold out a validation set")
    order = torch.randperm(n_samples, generator=generator)
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))[order].to(device)
    y = torch.as_tensor(np.asarray(targets, dtype=np.float32))[order].to(device)
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32)).to(device)
    x_val, y_val, x_train, y_train = x[:n_val], y[:n_val], x[n_val:], y[n_val:]

    scaling = None
    if standardise:
        train_inputs = x[n_val:].cpu().numpy()
        scaling = (train_inputs.mean(axis=0), np.maximum(train_inputs.std(axis=0), 1e-6))
    network = build_network(inputs.shape[1], settings.hidden, settings.elu_alpha, scaling)
    network = network.to(device)
    optimiser = torch.optim.Adam(
        network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    scheduler = (
        None
        if settings.plateau is None
        else torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, factor=0.5, patience=settings.plateau
        )
    )
    history: dict[str, list[float]] = {"train": [], "validation": []}
    best = (np.inf, 0, copy.deepcopy(network.state_dict()))
    start = time.perf_counter()
    bar = tqdm(range(settings.epochs), desc="training", unit="epoch", disable=no_bar(progress))
    for epoch in bar:
        network.train()
        permutation = torch.randperm(x_train.shape[0], generator=generator).to(device)
        total = torch.zeros((), device=device)
        for first in range(0, x_train.shape[0], settings.batch_size):
            batch = permutation[first : first + settings.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = _weighted_mse(network(x_train[batch]), y_train[batch], w)
            loss.backward()
            optimiser.step()
            total += loss.detach() * batch.numel()
        network.eval()
        with torch.no_grad():
            val_loss = float(_weighted_mse(network(x_val), y_val, w))
        train_loss = float(total) / x_train.shape[0]
        history["train"].append(train_loss)
        history["validation"].append(val_loss)
        if val_loss < best[0]:
            best = (val_loss, epoch + 1, copy.deepcopy(network.state_dict()))
        if scheduler is not None:
            scheduler.step(val_loss)
        bar.set_postfix(train=f"{train_loss:.5f}", val=f"{val_loss:.5f}", best=f"{best[0]:.5f}")
        if bar.disable and (epoch + 1) % _LOG_EVERY == 0:
            LOGGER.info(
                "epoch %d: train %.6f, validation %.6f (best %.6f at %d)",
                epoch + 1, train_loss, val_loss, best[0], best[1],
            )  # fmt: skip
        if settings.patience is not None and epoch + 1 - best[1] >= settings.patience:
            LOGGER.info("Early stop at epoch %d (best %d)", epoch + 1, best[1])
            break
    bar.close()
    network.load_state_dict(best[2])
    network = network.to("cpu").eval()
    seconds = time.perf_counter() - start
    LOGGER.info(
        "Trained %d epochs in %.0f s on %s; best validation loss %.6g at epoch %d",
        len(history["train"]),
        seconds,
        device,
        best[0],
        best[1],
    )
    return TrainingResult(
        network=network,
        best_epoch=best[1],
        epochs_run=len(history["train"]),
        best_validation_loss=float(best[0]),
        history=history,
        seconds=seconds,
        device=str(device),
    )


def train_model(
    scheme: Scheme,
    out: str | Path,
    *,
    labels: str = "mle",
    n_samples: int = DEFAULT_SAMPLES,
    snr: SnrSpec = DEFAULT_SNR,
    limits: ParameterLimits | None = None,
    data_seed: int = 0,
    settings: TrainingSettings | None = None,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    n_threads: int | None = None,
    progress: bool | None = None,
    command: str | None = None,
    mle_labels_file: str | Path | None = None,
    save_mle_labels: str | Path | None = None,
) -> TrainingResult:
    """Synthesise training data, train a network and export it to ONNX with its metadata.

    Parameters
    ----------
    scheme : Scheme
        Acquisition scheme of the data the network will be applied to.
    out : str or Path
        Output ``.onnx`` file (written atomically).
    labels : {"mle", "gt", "hybrid"}
        Label type.
    n_samples : int
        Number of synthetic samples.
    snr : float or (float, float)
        Training SNR (or range).
    limits : ParameterLimits, optional
        Parameter sampling limits.
    data_seed : int
        Seed of the training data.
    settings : TrainingSettings, optional
        Network and optimiser settings.
    d_par, d_iso : float
        Fixed diffusivities, mm^2/s.
    n_threads : int, optional
        Threads of the data synthesis / MLE labelling and of torch on the CPU.
    progress : bool, optional
        Progress bars.
    command : str, optional
        Command line recorded in the metadata.
    mle_labels_file, save_mle_labels : str or Path, optional
        Reuse or save the MLE labels (see :func:`noddi_bids.nn.synth.make_training_set`).

    Returns
    -------
    TrainingResult
    """
    settings = _with_threads(settings, n_threads)
    start = time.perf_counter()
    data = make_training_set(
        scheme,
        n_samples,
        labels=labels,
        limits=limits,
        snr=snr,
        seed=data_seed,
        d_par=d_par,
        d_iso=d_iso,
        n_threads=n_threads,
        progress=progress,
        mle_labels_file=mle_labels_file,
        save_mle_labels=save_mle_labels,
    )
    synthesis_seconds = time.perf_counter() - start
    return _train_and_export(
        data, out, labels, settings, progress, command, synthesis_seconds, scheme=scheme
    )


def train_invariant_model(
    spec: FeatureSpec,
    out: str | Path,
    *,
    labels: str = "mle",
    n_samples: int = DEFAULT_SAMPLES,
    snr: tuple[float, float] = DEFAULT_SNR_RANGE,
    n_schemes: int = DEFAULT_TRAINING_SCHEMES,
    limits: ParameterLimits | None = None,
    data_seed: int = 0,
    settings: TrainingSettings | None = None,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    n_threads: int | None = None,
    progress: bool | None = None,
    command: str | None = None,
) -> TrainingResult:
    """Train a rotation-invariant network for a set of shells and export it to ONNX.

    Parameters
    ----------
    spec : FeatureSpec
        Shells, orders and trained ranges (direction counts, b = 0 volumes, conditioning).
    out : str or Path
        Output ``.onnx`` file (written atomically).
    labels : {"mle", "gt", "hybrid"}
        Label type.
    n_samples : int
        Number of synthetic samples.
    snr : (float, float)
        b = 0 SNR range (drawn log-uniformly).
    n_schemes : int
        Number of random acquisition schemes the samples are spread over.
    limits : ParameterLimits, optional
        Parameter sampling limits.
    data_seed : int
        Seed of the training data.
    settings : TrainingSettings, optional
        Network and optimiser settings.
    d_par, d_iso : float
        Fixed diffusivities, mm^2/s.
    n_threads : int, optional
        Threads of the data synthesis / MLE labelling and of torch on the CPU.
    progress : bool, optional
        Progress bars.
    command : str, optional
        Command line recorded in the metadata.

    Returns
    -------
    TrainingResult
    """
    settings = _with_threads(settings, n_threads)
    start = time.perf_counter()
    data = make_invariant_training_set(
        spec,
        n_samples,
        labels=labels,
        limits=limits,
        snr=snr,
        n_schemes=n_schemes,
        seed=data_seed,
        d_par=d_par,
        d_iso=d_iso,
        n_threads=n_threads,
        progress=progress,
    )
    synthesis_seconds = time.perf_counter() - start
    return _train_and_export(
        data, out, labels, settings, progress, command, synthesis_seconds, features=spec
    )


def _with_threads(settings: TrainingSettings | None, n_threads: int | None) -> TrainingSettings:
    settings = TrainingSettings() if settings is None else settings
    if n_threads and not settings.n_threads:
        settings = TrainingSettings(**{**asdict(settings), "n_threads": n_threads})
    return settings


def _train_and_export(
    data: TrainingSet,
    out: str | Path,
    labels: str,
    settings: TrainingSettings,
    progress: bool | None,
    command: str | None,
    synthesis_seconds: float,
    scheme: Scheme | None = None,
    features: FeatureSpec | None = None,
) -> TrainingResult:
    """Train on `data` and export the network with its metadata (raw: scheme; else features)."""
    LOGGER.info(
        "Training a %s-label network on %d samples (%d inputs), up to %d epochs",
        labels, data.inputs.shape[0], data.inputs.shape[1], settings.epochs,
    )  # fmt: skip
    targets, weights = label_targets(data, labels, settings.hybrid_weight)
    result = train_network(
        data.inputs, targets, weights, settings, progress, standardise=features is not None
    )
    network, spread = result.network, None
    if features is not None:
        start = time.perf_counter()
        network, spread = train_spread(result.network, data.inputs, data.truth, settings)
        spread["seconds"] = round(time.perf_counter() - start, 1)
    training = {
        **settings.to_dict(),
        "data": data.settings,
        "n_used": int(data.inputs.shape[0]),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_validation_loss": result.best_validation_loss,
        "synthesis_seconds": round(synthesis_seconds, 1),
        "training_seconds": round(result.seconds, 1),
        "device": result.device,
        "torch": torch.__version__,
        "command": command or "",
        **({} if spread is None else {"spread": spread}),
    }
    metadata = ModelMetadata(
        scheme=scheme,
        features=features,
        b0_threshold=B0_THRESHOLD if scheme is None else scheme.b0_threshold,
        d_par=float(data.settings["d_par"]),
        d_iso=float(data.settings["d_iso"]),
        labels=labels,
        parameters=PARAMETERS,
        snr=data.settings["snr"],
        training=training,
        version=__version__,
        spread=spread is not None,
    )
    export_onnx(network, out, metadata)
    return result


class WithSpread(nn.Module):
    """A network's estimates followed by the SD of their error: ``[mean, spread]`` columns."""

    def __init__(self, mean: nn.Module, spread: nn.Module) -> None:
        super().__init__()
        self.mean = mean
        self.spread = spread

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - torch hook
        return torch.cat([self.mean(x), self.spread(x)], dim=1)


#: Hidden units of the spread head, and its optimiser: Adam at 1e-3, batches of 1000, up to
#: 40 epochs, stopping after 5 without a better validation loss.
SPREAD_HIDDEN = (64, 64)
_SPREAD_EPOCHS, _SPREAD_PATIENCE, _SPREAD_FLOOR = 40, 5, 1e-3


def train_spread(
    network: nn.Module, inputs: np.ndarray, truth: np.ndarray, settings: TrainingSettings
) -> tuple[WithSpread, dict[str, Any]]:
    """Train a head that predicts the SD of a trained network's error against the truth.

    The network is frozen; a small network on the same (standardised) inputs outputs, per
    parameter, ``sd = softplus(z) + 1e-3`` and is trained by the Gaussian negative
    log-likelihood of the errors ``truth - estimate``: ``log sd + (error / sd)^2 / 2``. Its SD is
    then the spread of the estimate's error around the truth (variance and bias together) for
    inputs like this one: a per-voxel uncertainty at the cost of a second, smaller network.

    Parameters
    ----------
    network : torch.nn.Module
        The trained network (its first layer must be a :class:`Standardise`).
    inputs : ndarray, shape (N, F)
        Training inputs.
    truth : ndarray, shape (N, 3)
        Ground-truth parameters of the inputs (whatever labels the network was trained on).
    settings : TrainingSettings
        Seed, batch size, device and threads.

    Returns
    -------
    network : WithSpread
        The frozen network and the spread head, in evaluation mode on the CPU.
    record : dict
        Epochs run, best epoch and validation loss (negative log-likelihood).
    """
    device = _device(settings.device)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    torch.manual_seed(settings.seed + 1)
    network = network.to(device).eval()
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32)).to(device)
    with torch.no_grad():
        error = torch.as_tensor(np.asarray(truth, dtype=np.float32)).to(device) - network(x)
    scaling = network[0]
    head = build_network(x.shape[1], SPREAD_HIDDEN, settings.elu_alpha,
                         (scaling.mean.cpu().numpy(), scaling.scale.cpu().numpy()))  # fmt: skip
    head[-1] = nn.Softplus()
    head = nn.Sequential(head, _Floor(_SPREAD_FLOOR)).to(device)
    order = torch.randperm(x.shape[0], generator=generator).to(device)
    n_val = max(1, int(round(settings.validation_fraction * x.shape[0])))
    validation, training = order[:n_val], order[n_val:]
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3)

    def nll(rows):
        sd = head(x[rows])
        return torch.mean(torch.log(sd) + 0.5 * (error[rows] / sd) ** 2)

    best = (np.inf, 0, copy.deepcopy(head.state_dict()))
    for epoch in range(_SPREAD_EPOCHS):
        head.train()
        shuffled = training[torch.randperm(training.numel(), generator=generator).to(device)]
        for first in range(0, shuffled.numel(), settings.batch_size):
            optimiser.zero_grad(set_to_none=True)
            loss = nll(shuffled[first : first + settings.batch_size])
            loss.backward()
            optimiser.step()
        head.eval()
        with torch.no_grad():
            value = float(nll(validation))
        if value < best[0]:
            best = (value, epoch + 1, copy.deepcopy(head.state_dict()))
        if epoch + 1 - best[1] >= _SPREAD_PATIENCE:
            break
    head.load_state_dict(best[2])
    LOGGER.info("Spread head: best validation NLL %.5f at epoch %d", best[0], best[1])
    record = {"hidden": list(SPREAD_HIDDEN), "epochs_run": epoch + 1, "best_epoch": best[1],
              "best_validation_nll": best[0]}  # fmt: skip
    return WithSpread(network.cpu(), head.cpu()).eval(), record


class _Floor(nn.Module):
    """Add a constant (keeps an SD away from zero)."""

    def __init__(self, floor: float) -> None:
        super().__init__()
        self.floor = floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - torch hook
        return x + self.floor
