"""The study's synthetic evaluation of NODDI estimators on a parameter grid.

Grid: ODI and NDI 0.05..0.95 and FWF 0.05..0.45 in steps of 0.1 (10 x 10 x 5 = 500 points),
fibre along x, every signal repeated with independent Rician noise (100 repeats at SNR 15 by
default). Per grid point and estimator over the N repeats: mean, bias = mean - truth, and the
population SD (divide by N). Estimators are callables from noisy signals (S0 = 1 scale) to
(N, 3) ODI, NDI, FWF.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from noddi_bids.fit.mle import NoddiMLE
from noddi_bids.model.noddi import D_ISO, D_PAR
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.normalise import normalise_by_b0
from noddi_bids.model.scheme import Scheme
from noddi_bids.nn.infer import OnnxEstimator
from noddi_bids.nn.synth import DEFAULT_SNR, PARAMETERS, synthesise_signals

LOGGER = logging.getLogger(__name__)

#: Grid values of the study's evaluation.
GRID_ODI = np.round(np.arange(0.05, 0.96, 0.1), 2)
GRID_NDI = np.round(np.arange(0.05, 0.96, 0.1), 2)
GRID_FWF = np.round(np.arange(0.05, 0.46, 0.1), 2)
#: Noise repeats per grid point.
DEFAULT_REPEATS = 100
#: Fibre orientation of the evaluation signals.
FIBRE = (1.0, 0.0, 0.0)

Estimator = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    grid : ndarray, shape (P, 3)
        True ODI, NDI, FWF of each grid point.
    estimates : dict of str to ndarray of shape (P, R, 3)
        Estimates per estimator, grid point and repeat.
    table : pandas.DataFrame
        One row per grid point and estimator: truth, mean, bias and SD of each parameter.
    """

    grid: np.ndarray
    estimates: dict[str, np.ndarray]
    table: pd.DataFrame


def evaluation_grid(
    odi: np.ndarray = GRID_ODI, ndi: np.ndarray = GRID_NDI, fwf: np.ndarray = GRID_FWF
) -> np.ndarray:
    """All combinations of the grid values, shape (P, 3), ODI varying slowest."""
    mesh = np.meshgrid(odi, ndi, fwf, indexing="ij")
    return np.stack([axis.reshape(-1) for axis in mesh], axis=1)


def simulate(
    scheme: Scheme,
    grid: np.ndarray,
    n_repeats: int = DEFAULT_REPEATS,
    snr: float = DEFAULT_SNR,
    seed: int = 0,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
) -> np.ndarray:
    """Noisy signals (S0 = 1) for every grid point and repeat, shape (P * R, M), repeats fastest."""
    rng = np.random.default_rng(seed)
    directions = np.broadcast_to(np.asarray(FIBRE), grid.shape)
    clean = synthesise_signals(grid, directions, scheme, d_par, d_iso)
    return add_rician_noise(np.repeat(clean, n_repeats, axis=0), snr, rng)


def network_estimator(model: OnnxEstimator, scheme: Scheme) -> Estimator:
    """Estimator applying a network to signals normalised by their mean b = 0."""
    model.check_scheme(scheme)

    def estimate(noisy: np.ndarray) -> np.ndarray:
        normalised, _ = normalise_by_b0(noisy, scheme.b0_mask)
        return model.predict(normalised, scheme)

    return estimate


def mle_estimator(
    scheme: Scheme,
    snr: float | None = DEFAULT_SNR,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    n_threads: int | None = None,
) -> Estimator:
    """Estimator running the full conventional fit (grid search, tensor orientation, MLE).

    ``snr`` gives the known noise ``sigma = 1 / snr``; None estimates sigma from the b = 0
    images per voxel as the NODDI toolbox does.
    """
    model = NoddiMLE(scheme, d_par=d_par, d_iso=d_iso, n_threads=n_threads)

    def estimate(noisy: np.ndarray) -> np.ndarray:
        sigma = None if snr is None else 1.0 / snr
        return model.fit(noisy, sigma=sigma).parameters

    return estimate


def summarise(grid: np.ndarray, estimates: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Mean, bias and population SD per grid point, estimator and parameter.

    Parameters
    ----------
    grid : ndarray, shape (P, 3)
        Truth.
    estimates : mapping of str to ndarray of shape (P, R, 3)
        Estimates per estimator.

    Returns
    -------
    pandas.DataFrame
        Columns ``estimator``, ``odi_true``, ``ndi_true``, ``fwf_true`` and per parameter
        ``<p>_mean``, ``<p>_bias``, ``<p>_sd``.
    """
    frames = []
    for name, values in estimates.items():
        mean = np.nanmean(values, axis=1)
        frame = {"estimator": name}
        frame |= {f"{p}_true": grid[:, i] for i, p in enumerate(PARAMETERS)}
        for i, p in enumerate(PARAMETERS):
            frame[f"{p}_mean"] = mean[:, i]
            frame[f"{p}_bias"] = mean[:, i] - grid[:, i]
            frame[f"{p}_sd"] = np.nanstd(values[:, :, i], axis=1)
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def overall(table: pd.DataFrame) -> pd.DataFrame:
    """Mean |bias| and mean SD over the grid per estimator and parameter.

    Returns
    -------
    pandas.DataFrame
        Index: estimator (in first-appearance order); columns ``<p>_abs_bias``, ``<p>_sd``.
    """
    columns = {}
    for p in PARAMETERS:
        columns[f"{p}_abs_bias"] = table[f"{p}_bias"].abs()
        columns[f"{p}_sd"] = table[f"{p}_sd"]
    frame = pd.DataFrame(columns).assign(estimator=table["estimator"])
    return frame.groupby("estimator", sort=False).mean()


def evaluate(
    scheme: Scheme,
    estimators: Mapping[str, Estimator],
    grid: np.ndarray | None = None,
    n_repeats: int = DEFAULT_REPEATS,
    snr: float = DEFAULT_SNR,
    seed: int = 0,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
) -> Evaluation:
    """Run every estimator on the same noisy grid signals.

    Parameters
    ----------
    scheme : Scheme
        Acquisition scheme.
    estimators : mapping of str to callable
        Name -> function from noisy signals (N, M) to estimates (N, 3).
    grid : ndarray, shape (P, 3), optional
        Ground truth points (default: :func:`evaluation_grid`).
    n_repeats : int
        Noise realisations per point.
    snr : float
        SNR relative to b = 0.
    seed : int
        Noise seed.
    d_par, d_iso : float
        Diffusivities of the simulated signals, mm^2/s.

    Returns
    -------
    Evaluation
    """
    grid = evaluation_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    noisy = simulate(scheme, grid, n_repeats, snr, seed, d_par, d_iso)
    estimates = {}
    for name, estimator in estimators.items():
        LOGGER.info("Evaluating %s on %d signals", name, noisy.shape[0])
        values = np.asarray(estimator(noisy), dtype=np.float64)
        estimates[name] = values.reshape(grid.shape[0], n_repeats, len(PARAMETERS))
    return Evaluation(grid=grid, estimates=estimates, table=summarise(grid, estimates))
