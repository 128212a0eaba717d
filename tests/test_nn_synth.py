"""Tests for noddi_bids.nn.synth (training data)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noddi_bids.model.noddi import ODI_MIN, noddi_signal
from noddi_bids.model.scheme import reference_scheme
from noddi_bids.nn.synth import (
    ParameterLimits,
    make_training_set,
    random_directions,
    sample_parameters,
    sample_snr,
    synthesise_signals,
)


def test_synthesised_signals_match_exact_model():
    scheme = reference_scheme()
    rng = np.random.default_rng(3)
    params = sample_parameters(300, ParameterLimits(odi=(ODI_MIN, 1.0), ndi=(0.0, 1.0)), rng)
    directions = random_directions(300, rng)
    fast = synthesise_signals(params, directions, scheme)
    exact = noddi_signal(
        params[:, 0], params[:, 1], params[:, 2], directions, scheme.bvals, scheme.bvecs
    )
    assert_allclose(fast, exact, atol=1e-6, rtol=0)


def test_synthesise_empty_and_mismatched():
    scheme = reference_scheme()
    assert synthesise_signals(np.empty((0, 3)), np.empty((0, 3)), scheme).shape == (0, 81)
    with pytest.raises(ValueError, match="directions"):
        synthesise_signals(np.full((2, 3), 0.5), np.ones((3, 3)), scheme)


def test_directions_uniform_and_unit():
    d = random_directions(20000, np.random.default_rng(0))
    assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    assert_allclose(d.mean(axis=0), 0.0, atol=0.02)
    assert_allclose(d.T @ d / d.shape[0], np.eye(3) / 3, atol=0.02)


def test_limits_validated_and_respected():
    with pytest.raises(ValueError, match="odi"):
        ParameterLimits(odi=(0.5, 0.4))
    with pytest.raises(ValueError, match="fwf"):
        ParameterLimits(fwf=(0.0, 1.5))
    limits = ParameterLimits(odi=(0.2, 0.3), ndi=(0.4, 0.5), fwf=(0.0, 0.1))
    p = sample_parameters(5000, limits, np.random.default_rng(1))
    assert np.all(p >= limits.low) and np.all(p <= limits.high)


def test_snr_constant_or_range():
    rng = np.random.default_rng(0)
    assert_array_equal(sample_snr(4, 15.0, rng), 15.0)
    values = sample_snr(1000, (10.0, 30.0), rng)
    assert values.min() >= 10 and values.max() <= 30 and values.std() > 3
    with pytest.raises(ValueError):
        sample_snr(3, (0.0, 5.0), rng)


def test_training_set_reproducible_and_normalised():
    scheme = reference_scheme()
    a = make_training_set(scheme, 500, labels="gt", seed=7)
    b = make_training_set(scheme, 500, labels="gt", seed=7)
    c = make_training_set(scheme, 500, labels="gt", seed=8)
    assert_array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)
    assert a.inputs.dtype == np.float32 and a.inputs.shape == (500, 81)
    assert a.mle is None
    assert_allclose(a.inputs[:, scheme.b0_mask].mean(axis=1), 1.0, atol=1e-6)
    assert a.settings["seed"] == 7 and a.settings["n_samples"] == 500


def test_mle_labels_start_from_truth():
    scheme = reference_scheme()
    limits = ParameterLimits(fwf=(0.0, 0.3))
    data = make_training_set(scheme, 200, labels="mle", seed=1, limits=limits, snr=50.0)
    assert data.mle.shape == (200, 3) and np.all(np.isfinite(data.mle))
    # At high SNR the fit started from the truth stays close to it.
    assert np.median(np.abs(data.mle - data.truth)) < 0.03


def test_unknown_labels():
    with pytest.raises(ValueError, match="labels"):
        make_training_set(reference_scheme(), 10, labels="bogus")


def test_mle_labels_saved_and_reused(tmp_path):
    scheme = reference_scheme()
    saved = tmp_path / "labels.npz"
    first = make_training_set(scheme, 60, labels="mle", seed=4, save_mle_labels=saved)
    again = make_training_set(scheme, 60, labels="mle", seed=4, mle_labels_file=saved)
    assert_array_equal(again.mle, first.mle)
    assert_array_equal(again.inputs, first.inputs)
    with pytest.raises(ValueError, match="made with"):
        make_training_set(scheme, 60, labels="mle", seed=5, mle_labels_file=saved)
