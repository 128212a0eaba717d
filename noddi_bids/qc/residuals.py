"""Goodness of fit: how well an estimate predicts the measured signal, voxel by voxel.

Each voxel's signal is predicted from its estimate with the forward model
(:func:`noddi_bids.nn.synth.synthesise_signals`, the fitter's exact tables): the estimate's
ODI, NDI and FWF, its fibre direction, the estimator's diffusivities and its S0 (the fitted S0
of the maximum-likelihood fit; the voxel's mean b = 0 signal for a network, which has none).
Over all M volumes, b = 0 included, as AMICO and QSIRecon do::

    RMSE  = sqrt(mean_m (S_m - S0 * model_m)^2)     in the units of the dwi image
    NRMSE = RMSE / mean b = 0 signal of the voxel    dimensionless

(AMICO divides by the root-mean-square of the measured signal instead; dividing by the mean
b = 0 makes NRMSE the RMSE of the normalised signals the estimators see, and for a voxel the
model fits it is about the noise level, 1/SNR.)

A voxel is **out of model** where its NRMSE exceeds a ratio (:func:`out_of_model_ratio`: 1.5
with six or more b = 0 volumes, 2 with three to five, 2.5 with two) times the local noise
level: the median, over the brain voxels of the surrounding 3 x 3 x 3 block, of each voxel's
standard deviation of its normalised b = 0 signals (corrected for the bias of a median of sample
SDs, :func:`local_noise`). The median over a block estimates the noise several times more
precisely than one voxel's b = 0 volumes alone (nine b = 0 volumes leave a voxel's own estimate
25 % uncertain), is not pulled up by a few voxels with pulsation or motion, and still follows
slow changes of the noise across the image. The ratios were chosen on synthetic data where the
model holds (``benchmarks/fit_quality.py``, ``docs/qc.md``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from noddi_bids.model.noddi import ODI_MIN
from noddi_bids.model.scheme import Scheme

#: Out of model: NRMSE above this many times the local noise level, by the number of b = 0
#: volumes the noise level comes from: (at least this many, ratio), first match (docs/qc.md).
OUT_OF_MODEL_RATIOS = ((6, 1.5), (3, 2.0), (2, 2.5))
#: Side of the block (voxels) over which the local noise level is the median.
NOISE_BLOCK = 3


@dataclass(frozen=True)
class FitQuality:
    """Goodness of fit of the voxels of a mask (NaN where the estimate is not finite).

    Attributes
    ----------
    rmse : ndarray, shape (N,)
        Root-mean-square error of the predicted signal, units of the dwi image.
    nrmse : ndarray, shape (N,)
        RMSE divided by the voxel's mean b = 0 signal.
    noise : ndarray, shape (N,)
        Local noise level of the normalised signal (:func:`local_noise`); NaN with fewer than
        two b = 0 volumes.
    out_of_model : ndarray of bool, shape (N,)
        ``nrmse > ratio * noise`` (:func:`out_of_model_ratio`; False where either is NaN).
    """

    rmse: np.ndarray
    nrmse: np.ndarray
    noise: np.ndarray
    out_of_model: np.ndarray


def predicted_signals(
    parameters: np.ndarray,
    directions: np.ndarray,
    s0: np.ndarray,
    scheme: Scheme,
    d_par: float,
    d_iso: float,
) -> np.ndarray:
    """Signals an estimate predicts, normalised like the measured ones (NaN where undefined).

    Parameters
    ----------
    parameters : ndarray, shape (N, 3)
        ODI, NDI, FWF; clipped into the model's range ([ODI_MIN, 1], [0, 1], [0, 1]).
    directions : ndarray, shape (N, 3)
        Fibre directions in the b-vector frame (any length but 0).
    s0 : ndarray, shape (N,)
        b = 0 signal relative to the voxel's mean b = 0 signal (1 for a network).
    scheme : Scheme
        Acquisition scheme.
    d_par, d_iso : float
        Diffusivities of the estimate, mm^2/s.

    Returns
    -------
    ndarray, shape (N, M)
        ``s0 * S/S0`` of the forward model; rows whose parameters, direction or s0 are not
        finite (or whose direction is 0) are NaN.
    """
    from noddi_bids.nn.synth import synthesise_signals

    parameters = np.asarray(parameters, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64)
    s0 = np.asarray(s0, dtype=np.float64)
    norm = np.linalg.norm(directions, axis=1)
    defined = np.all(np.isfinite(parameters), 1) & np.isfinite(norm) & (norm > 0) & np.isfinite(s0)
    low, high = np.array([ODI_MIN, 0.0, 0.0]), np.ones(3)
    predicted = np.full((parameters.shape[0], scheme.n_measurements), np.nan)
    if defined.any():
        model = synthesise_signals(
            np.clip(parameters[defined], low, high), directions[defined], scheme, d_par, d_iso
        )
        predicted[defined] = s0[defined, None] * model
    return predicted


def b0_noise(signals: np.ndarray, b0_mask: np.ndarray) -> np.ndarray:
    """Return the SD (ddof 1) of each voxel's normalised b = 0 signals (NaN with fewer than 2)."""
    if np.count_nonzero(b0_mask) < 2:
        return np.full(signals.shape[0], np.nan)
    return np.std(np.asarray(signals, dtype=np.float64)[:, b0_mask], axis=1, ddof=1)


def local_median(values: np.ndarray, mask: np.ndarray, size: int = NOISE_BLOCK) -> np.ndarray:
    """Median of ``values`` over the mask voxels of the ``size``-cube around each mask voxel.

    Parameters
    ----------
    values : ndarray, shape (N,)
        One value per voxel of ``mask`` (C order); NaN values are left out of the medians.
    mask : ndarray of bool, shape (X, Y, Z)
        The voxels ``values`` belong to.
    size : int
        Odd side of the cube, voxels.

    Returns
    -------
    ndarray, shape (N,)
    """
    mask = np.asarray(mask, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    coordinates = np.argwhere(mask)
    row_of = np.full(mask.shape, -1, dtype=np.int64)
    row_of[mask] = np.arange(coordinates.shape[0])
    radius = size // 2
    steps = range(-radius, radius + 1)
    offsets = np.array([(i, j, k) for i in steps for j in steps for k in steps])
    neighbours = coordinates[:, None, :] + offsets[None, :, :]
    inside = np.all((neighbours >= 0) & (neighbours < np.array(mask.shape)), axis=2)
    clipped = np.clip(neighbours, 0, np.array(mask.shape) - 1)
    rows = row_of[clipped[..., 0], clipped[..., 1], clipped[..., 2]]
    rows = np.where(inside, rows, -1)
    gathered = np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)
    if not np.isfinite(gathered).any():
        return np.full(values.shape, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks give NaN
        return np.nanmedian(gathered, axis=1)


def local_noise(signals: np.ndarray, mask: np.ndarray, b0_mask: np.ndarray) -> np.ndarray:
    """Local noise level of normalised signals: :func:`local_median` of :func:`b0_noise`.

    The median of sample SDs with ``k = n_b0 - 1`` degrees of freedom is ``median(chi_k) /
    sqrt(k)`` times the noise SD (0.67 for two b = 0 volumes, 0.96 for nine); it is divided
    by that, so the level is median-unbiased whatever the number of b = 0 volumes.
    """
    from scipy.stats import chi

    dof = int(np.count_nonzero(b0_mask)) - 1
    bias = chi.median(dof) / np.sqrt(dof) if dof > 0 else np.nan
    return local_median(b0_noise(signals, b0_mask), mask) / bias


def out_of_model_ratio(n_b0: int) -> float:
    """Out-of-model ratio for a noise level from ``n_b0`` b = 0 volumes (NaN below two).

    Fewer b = 0 volumes make the noise level less certain and the ratio larger
    (:data:`OUT_OF_MODEL_RATIOS`, chosen on the example phantom, where noise alone then flags
    at most 0.015 % of the voxels with six or more b = 0 volumes, 0.01 % with three to five and
    0.1 % with two: ``benchmarks/fit_quality.py``).

    Examples
    --------
    >>> out_of_model_ratio(9), out_of_model_ratio(3), out_of_model_ratio(2)
    (1.5, 2.0, 2.5)
    """
    return next((ratio for least, ratio in OUT_OF_MODEL_RATIOS if n_b0 >= least), np.nan)


def fit_quality(
    signals: np.ndarray,
    predicted: np.ndarray,
    mean_b0: np.ndarray,
    noise: np.ndarray,
    ratio: float,
) -> FitQuality:
    """RMSE, NRMSE and out-of-model flags of predicted signals.

    Parameters
    ----------
    signals : ndarray, shape (N, M)
        Measured signals divided by their mean b = 0 signal.
    predicted : ndarray, shape (N, M)
        The estimate's prediction on the same scale (:func:`predicted_signals`).
    mean_b0 : ndarray, shape (N,)
        Mean b = 0 signal of each voxel, units of the dwi image.
    noise : ndarray, shape (N,)
        Local noise level of the normalised signals (:func:`local_noise`).
    ratio : float
        Out of model above this many times the noise level (:func:`out_of_model_ratio`).

    Returns
    -------
    FitQuality
    """
    residuals = np.asarray(signals, dtype=np.float64) - predicted
    nrmse = np.sqrt(np.mean(residuals * residuals, axis=1))
    with np.errstate(invalid="ignore"):
        out_of_model = nrmse > ratio * noise
    return FitQuality(
        rmse=nrmse * np.asarray(mean_b0, dtype=np.float64),
        nrmse=nrmse,
        noise=np.asarray(noise, dtype=np.float64),
        out_of_model=out_of_model,
    )
