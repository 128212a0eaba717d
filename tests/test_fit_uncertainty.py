"""Standard deviations of the MLE from the Fisher information (noddi_bids.fit.uncertainty)."""

from __future__ import annotations

import numpy as np
import pytest

from noddi_bids.fit.mle import NoddiFit, NoddiMLE
from noddi_bids.fit.uncertainty import MAX_TABULATED_SNR, TABLE_STEP, rician_information
from noddi_bids.model.noddi import noddi_signal
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import reference_scheme
from noddi_bids.nn.synth import synthesise_signals


def test_rician_information_limits_and_monte_carlo():
    h = rician_information()
    snr = np.arange(h.size) * TABLE_STEP
    assert h[0] == 0.0 and np.all(np.diff(h) > 0)
    np.testing.assert_allclose(h[5], snr[5] ** 2, rtol=0.01)  # a -> 0: h ~ a^2
    assert h[-1] == pytest.approx(1 - 0.5 / MAX_TABULATED_SNR**2, abs=1e-5)  # Gaussian limit
    # E[(m r(m a) - a)^2] by sampling the Rice distribution at a = 1.5
    from scipy.special import i0e, i1e

    rng = np.random.default_rng(0)
    a = 1.5
    m = np.hypot(a + rng.standard_normal(400_000), rng.standard_normal(400_000))
    sampled = np.mean((m * i1e(m * a) / i0e(m * a) - a) ** 2)
    assert h[int(round(a / TABLE_STEP))] == pytest.approx(sampled, rel=0.01)


def _fit_of(estimates: np.ndarray, directions: np.ndarray) -> NoddiFit:
    n = estimates.shape[0]
    return NoddiFit(*estimates[:, :3].T, directions, estimates[:, 3], np.zeros(n),
                    np.ones(n, bool), np.ones(n, int), np.ones(n, bool))  # fmt: skip


def test_standard_deviations_match_finite_differences_of_the_exact_model():
    """At the truth, the SDs equal those of J^T W J with J by finite differences."""
    scheme, sigma = reference_scheme(), 0.02
    truth = np.array([0.3, 0.6, 0.15])
    mu = np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])

    def signal(theta: np.ndarray) -> np.ndarray:
        direction = np.array([np.sin(theta[3]) * np.cos(theta[4]),
                              np.sin(theta[3]) * np.sin(theta[4]), np.cos(theta[3])])  # fmt: skip
        clean = noddi_signal(*theta[:3], direction, scheme.bvals, scheme.bvecs).reshape(-1)
        return theta[5] * clean

    theta = np.array([*truth, np.arccos(mu[2]), np.arctan2(mu[1], mu[0]), 1.0])
    steps = 1e-6 * np.ones(6)
    jacobian = np.column_stack(
        [(signal(theta + np.eye(6)[k] * steps[k]) - signal(theta - np.eye(6)[k] * steps[k]))
         / (2 * steps[k]) for k in range(6)]  # fmt: skip
    )
    h = rician_information()
    a = signal(theta) / sigma
    weights = np.interp(a / TABLE_STEP, np.arange(h.size), h) / sigma**2
    expected = np.sqrt(np.diag(np.linalg.inv(jacobian.T @ (weights[:, None] * jacobian)))[:3])
    data = signal(theta)[None, :]  # noise-free measurements: only the estimate matters
    fit = _fit_of(np.array([[*truth, 1.0]]), mu[None, :])
    found = NoddiMLE(scheme).standard_deviations(data, fit, sigma=sigma)
    np.testing.assert_allclose(found[0], expected, rtol=2e-3)


def test_no_sticks_no_odi_standard_deviation():
    """Fitted with NDI = 0 the signal does not depend on ODI: singular, ODI's SD is NaN."""
    scheme = reference_scheme()
    estimates = np.array([[0.4, 0.0, 0.2, 1.0], [0.4, 0.5, 0.2, 1.0]])
    directions = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    data = synthesise_signals(estimates[:, :3], directions, scheme)
    found = NoddiMLE(scheme).standard_deviations(data, _fit_of(estimates, directions), 0.05)
    assert np.isnan(found[0, 0]) and np.isfinite(found[0, 1:]).all()
    assert np.isfinite(found[1]).all()


def test_white_matter_coverage_is_nominal():
    """Truth within +-1 SD in about 68 % of noisy white-matter voxels (SNR 30, sigma known)."""
    scheme, rng, n = reference_scheme(), np.random.default_rng(3), 1500
    truth = np.tile([0.25, 0.7, 0.1], (n, 1))
    directions = rng.standard_normal((n, 3))
    data = add_rician_noise(synthesise_signals(truth, directions, scheme), 30.0, rng)
    model = NoddiMLE(scheme, n_threads=1)
    fit = model.fit(data, sigma=1 / 30, progress=False)
    deviations = model.standard_deviations(data, fit, sigma=1 / 30)
    coverage = np.mean(np.abs(fit.parameters - truth) <= deviations, axis=0)
    assert np.all((coverage > 0.6) & (coverage < 0.76)), coverage
