"""Batched Rician MLE: recovery, optimality against a slow reference, robustness."""

import numpy as np
import pytest
from reference_fit import exact_log_likelihood, slow_fit

from noddi_bids.fit.mle import NoddiMLE, estimate_sigma
from noddi_bids.model.noddi import noddi_signal
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import Scheme, reference_scheme


@pytest.fixture(scope="module")
def scheme():
    return reference_scheme()


@pytest.fixture(scope="module")
def fitter(scheme):
    return NoddiMLE(scheme)


def _voxels(rng, n, odi=(0.05, 0.95), ndi=(0.15, 0.95), fwf=(0.05, 0.45)):
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return {
        "odi": rng.uniform(*odi, n),
        "ndi": rng.uniform(*ndi, n),
        "fwf": rng.uniform(*fwf, n),
        "direction": directions,
    }


def _signals(truth, scheme):
    return noddi_signal(truth["odi"], truth["ndi"], truth["fwf"], truth["direction"],
                        scheme.bvals, scheme.bvecs)  # fmt: skip


def test_recovers_parameters_from_noise_free_signals(fitter, scheme):
    rng = np.random.default_rng(0)
    truth = _voxels(rng, 300, odi=(0.05, 0.9), ndi=(0.2, 0.9), fwf=(0.05, 0.45))
    s0 = rng.uniform(200, 2000, 300)
    data = s0[:, None] * _signals(truth, scheme)
    fit = fitter.fit(data, sigma=1e-4 * s0)
    for key in ("odi", "ndi", "fwf"):
        np.testing.assert_allclose(getattr(fit, key), truth[key], atol=1e-3, err_msg=key)
    np.testing.assert_allclose(fit.s0, s0, rtol=1e-4)
    alignment = np.abs(np.sum(fit.direction * truth["direction"], axis=1))
    assert np.all(alignment > np.cos(np.radians(0.5)))
    assert fit.converged.all()


def test_reaches_the_likelihood_of_a_slow_multistart_reference(fitter, scheme):
    rng = np.random.default_rng(1)
    truth = _voxels(rng, 30)
    data = add_rician_noise(_signals(truth, scheme), 15, rng)
    sigma = np.full(30, 1 / 15)
    fit = fitter.fit(data, sigma=sigma)
    reference = slow_fit(data, sigma, scheme, rng)
    ours = exact_log_likelihood(data, sigma, fit.odi, fit.ndi, fit.fwf, fit.direction,
                                fit.s0, scheme)  # fmt: skip
    theirs = exact_log_likelihood(data, sigma, *(reference[k] for k in
                                  ("odi", "ndi", "fwf", "direction", "s0")), scheme)  # fmt: skip
    np.testing.assert_allclose(fit.log_likelihood, ours, atol=1e-6)
    assert np.mean(ours >= theirs - 1e-3) >= 0.99


def test_start_from_given_parameters(fitter, scheme):
    rng = np.random.default_rng(2)
    truth = _voxels(rng, 200)
    data = add_rician_noise(_signals(truth, scheme), 15, rng)
    from_truth = fitter.fit(data, sigma=1 / 15, init=truth)
    from_grid = fitter.fit(data, sigma=1 / 15)
    assert from_truth.converged.mean() > 0.98
    # the grid-started fit (three starts) is as likely as one started at the truth
    assert np.mean(from_grid.log_likelihood >= from_truth.log_likelihood - 1e-3) > 0.97
    errors = np.abs(from_truth.parameters - np.column_stack([truth["odi"], truth["ndi"],
                                                             truth["fwf"]]))  # fmt: skip
    assert np.median(errors, axis=0).max() < 0.1


def test_bad_voxels_are_skipped_without_touching_neighbours(fitter, scheme):
    rng = np.random.default_rng(3)
    truth = _voxels(rng, 6)
    data = 1000 * add_rician_noise(_signals(truth, scheme), 20, rng)
    clean = fitter.fit(data[[0, 5]])
    data[1, 10] = np.nan
    data[2, 3] = np.inf
    data[3, scheme.b0_mask] = 0.0
    data[4, :] = -5.0
    fit = fitter.fit(data)
    assert fit.valid.tolist() == [True, False, False, False, False, True]
    assert np.isnan(fit.odi[1:5]).all() and not fit.converged[1:5].any()
    np.testing.assert_allclose(fit.parameters[[0, 5]], clean.parameters, atol=1e-12)


def test_chunking_does_not_change_results(scheme):
    rng = np.random.default_rng(4)
    truth = _voxels(rng, 50)
    data = add_rician_noise(_signals(truth, scheme), 15, rng)
    whole = NoddiMLE(scheme).fit(data, sigma=1 / 15)
    chunked = NoddiMLE(scheme, chunk_size=7).fit(data, sigma=1 / 15)
    np.testing.assert_allclose(chunked.parameters, whole.parameters, atol=1e-12)


@pytest.mark.parametrize("low_b", [0.0, 5.0])
def test_measurement_order_does_not_change_results(scheme, low_b):
    # the fitter orders the measurements by b-value itself; b = 0 volumes recorded as b = 5
    # are modelled, not skipped (two of them here, the others exactly 0)
    rng = np.random.default_rng(6)
    bvals = scheme.bvals.copy()
    bvals[np.flatnonzero(bvals == 0)[:2]] = low_b
    scheme = Scheme(bvals, scheme.bvecs)
    truth = _voxels(rng, 40)
    data = add_rician_noise(_signals(truth, scheme), 15, rng)
    order = rng.permutation(scheme.n_measurements)
    fitter = NoddiMLE(scheme)
    shuffled = NoddiMLE(Scheme(scheme.bvals[order], scheme.bvecs[order]))
    assert fitter.tables.leading_b0 == (scheme.n_b0 if low_b == 0 else scheme.n_b0 - 2)
    for init in (None, truth):
        fit = fitter.fit(data, sigma=1 / 15, init=init)
        refit = shuffled.fit(data[:, order], sigma=1 / 15, init=init)
        np.testing.assert_allclose(refit.log_likelihood, fit.log_likelihood, atol=1e-9)
        np.testing.assert_allclose(refit.parameters, fit.parameters, atol=1e-6)


def test_sigma_estimated_from_b0_images(scheme):
    rng = np.random.default_rng(5)
    data = add_rician_noise(np.ones((20000, scheme.n_measurements)), 20, rng)
    sigma = estimate_sigma(data, scheme.b0_mask)
    assert np.median(sigma) == pytest.approx(0.05, rel=0.05)
    np.testing.assert_array_equal(estimate_sigma(data[:, scheme.b0_mask]), sigma)
    with pytest.raises(ValueError, match="two b = 0"):
        estimate_sigma(data, np.arange(scheme.n_measurements) == 0)


def test_rejects_wrong_shape(fitter):
    with pytest.raises(ValueError, match="shape"):
        fitter.fit(np.ones((3, 5)))
