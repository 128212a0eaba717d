"""Goodness of fit (noddi_bids.qc.residuals): predictions, RMSE/NRMSE, noise level, flags."""

from __future__ import annotations

import numpy as np
import pytest

from noddi_bids.model.noddi import D_ISO, D_PAR, noddi_signal
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import reference_scheme
from noddi_bids.qc import residuals


def _voxels(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    parameters = np.column_stack(
        [rng.uniform(0.05, 0.9, n), rng.uniform(0.1, 0.9, n), rng.uniform(0.0, 0.5, n)]
    )
    directions = rng.standard_normal((n, 3))
    return parameters, directions / np.linalg.norm(directions, axis=1, keepdims=True)


def test_prediction_is_the_forward_model_times_s0():
    scheme, rng = reference_scheme(), np.random.default_rng(1)
    parameters, directions = _voxels(6, rng)
    s0 = rng.uniform(0.8, 1.2, 6)
    predicted = residuals.predicted_signals(parameters, directions, s0, scheme, D_PAR, D_ISO)
    exact = noddi_signal(*parameters.T, directions, scheme.bvals, scheme.bvecs)
    np.testing.assert_allclose(predicted, s0[:, None] * exact, rtol=0, atol=1e-8)


def test_undefined_estimates_give_nan_rows():
    scheme, rng = reference_scheme(), np.random.default_rng(2)
    parameters, directions = _voxels(4, rng)
    parameters[1, 0] = np.nan
    directions[2] = 0.0
    s0 = np.array([1.0, 1.0, 1.0, np.inf])
    predicted = residuals.predicted_signals(parameters, directions, s0, scheme, D_PAR, D_ISO)
    assert np.isfinite(predicted[0]).all()
    assert np.isnan(predicted[1:]).all()


def test_rmse_and_nrmse_of_known_residuals():
    rng = np.random.default_rng(3)
    predicted = rng.uniform(0.2, 1.0, (5, 40))
    offsets = np.array([0.0, 0.01, 0.02, 0.05, 0.1])
    signs = np.where(np.arange(40) % 2, 1.0, -1.0)
    signals = predicted + offsets[:, None] * signs
    mean_b0 = np.array([100.0, 200.0, 300.0, 400.0, 500.0])
    noise = np.full(5, 0.02)
    quality = residuals.fit_quality(signals, predicted, mean_b0, noise, 2.0)
    np.testing.assert_allclose(quality.nrmse, offsets, atol=1e-12)
    np.testing.assert_allclose(quality.rmse, offsets * mean_b0, atol=1e-9)
    # out of model above 2 x the noise level 0.02
    assert quality.out_of_model.tolist() == [False, False, False, True, True]


def test_local_median_matches_brute_force():
    rng = np.random.default_rng(4)
    mask = rng.uniform(size=(6, 5, 4)) < 0.7
    values = rng.uniform(size=int(mask.sum()))
    values[3] = np.nan
    volume = np.full(mask.shape, np.nan)
    volume[mask] = values
    expected = []
    for i, j, k in np.argwhere(mask):
        block = volume[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2, max(k - 1, 0) : k + 2]
        expected.append(np.nanmedian(block))
    np.testing.assert_allclose(residuals.local_median(values, mask), expected)


def test_noise_level_needs_two_b0_volumes():
    scheme = reference_scheme()
    signals = np.ones((3, scheme.n_measurements))
    single = scheme.b0_mask & (np.cumsum(scheme.b0_mask) == 1)
    assert np.isnan(residuals.b0_noise(signals, single)).all()
    mask = np.ones((3, 1, 1), bool)
    assert np.isnan(residuals.local_noise(signals, mask, single)).all()
    ratio = residuals.out_of_model_ratio(1)
    assert np.isnan(ratio)
    quality = residuals.fit_quality(signals, signals + 1, np.ones(3), np.full(3, np.nan), ratio)
    assert not quality.out_of_model.any()


@pytest.mark.parametrize("snr", [15.0, 40.0])
def test_in_model_voxels_pass_and_corrupted_ones_are_flagged(snr):
    """Noise alone stays below the threshold; four spiked volumes do not (true parameters)."""
    scheme, rng = reference_scheme(), np.random.default_rng(5)
    mask = np.ones((10, 10, 6), bool)
    n = int(mask.sum())
    parameters, directions = _voxels(n, rng)
    clean = noddi_signal(*parameters.T, directions, scheme.bvals, scheme.bvecs)
    noisy = add_rician_noise(clean, snr, rng)
    spiked = np.arange(n) % 10 == 0
    weighted = np.flatnonzero(~scheme.b0_mask)[[5, 20, 40, 60]]
    noisy[np.ix_(spiked, weighted)] += 0.8
    signals = noisy / noisy[:, scheme.b0_mask].mean(axis=1, keepdims=True)
    noise = residuals.local_noise(signals, mask, scheme.b0_mask)
    np.testing.assert_allclose(np.median(noise), 1 / snr, rtol=0.15)
    s0 = 1 / noisy[:, scheme.b0_mask].mean(axis=1)  # the truth's S0 relative to the mean b = 0
    predicted = residuals.predicted_signals(parameters, directions, s0, scheme, D_PAR, D_ISO)
    ratio = residuals.out_of_model_ratio(scheme.n_b0)
    quality = residuals.fit_quality(signals, predicted, np.ones(n), noise, ratio)
    assert not quality.out_of_model[~spiked].any()
    assert quality.out_of_model[spiked].all()
