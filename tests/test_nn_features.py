"""Rotation-invariant inputs, fibre direction, direction sets and random training schemes."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from noddi_bids.model.directions import (
    min_angle_degrees,
    perturb_directions,
    random_rotation,
    random_unit_vectors,
    spread_directions,
)
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.normalise import normalise_by_b0
from noddi_bids.model.scheme import Scheme, reference_scheme
from noddi_bids.nn.features import (
    FeatureError,
    FeatureSpec,
    design,
    fibre_direction,
    fit_order,
    sh_basis,
)
from noddi_bids.nn.schemes import random_scheme
from noddi_bids.nn.synth import random_directions, synthesise_signals


def _tissue(n, rng):
    parameters = rng.uniform([0.05, 0.1, 0.0], [0.9, 0.9, 0.6], (n, 3))
    return parameters, random_directions(n, rng)


def _shell_scheme(shells, counts, rng, n_b0=3, spread=True):
    bvals, bvecs = [np.zeros(n_b0)], [np.zeros((n_b0, 3))]
    for b, n in zip(shells, counts, strict=True):
        vectors = random_unit_vectors(n, rng)
        bvals.append(np.full(n, float(b)))
        bvecs.append(spread_directions(vectors) if spread else vectors)
    return Scheme(np.concatenate(bvals), np.concatenate(bvecs))


def test_spec_layout_and_round_trip():
    spec = FeatureSpec(shells=(700, 2000))
    assert spec.directions == ((6, 160), (6, 160))
    assert spec.n_features == len(spec.names) == 9
    assert spec.names[:5] == ("b700_l0", "b700_l2", "b2000_l0", "b2000_l2", "log_sigma")
    assert spec.key == "b700-2000"
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="distinct positive"):
        FeatureSpec(shells=(2000, 700))
    with pytest.raises(ValueError, match="6 <= low <= high"):
        FeatureSpec(shells=(1000,), directions=((4, 60),))


@pytest.mark.parametrize(("count", "spread", "order"), [
    (6, True, 2), (22, True, 2), (24, True, 4), (48, True, 6), (48, False, 2), (12, False, 0),
])  # fmt: skip
def test_fit_order_rule(count, spread, order):
    # 1.5 directions per coefficient for orders 4 (15) and 6 (28), a condition number <= 2;
    # uniformly random sets are badly conditioned at high orders (and at 12 directions even at 2)
    rng = np.random.default_rng(count)
    vectors = random_unit_vectors(count, rng)
    assert fit_order(spread_directions(vectors) if spread else vectors) == order


def test_features_do_not_depend_on_rotation_or_volume_order():
    rng = np.random.default_rng(0)
    scheme = reference_scheme()
    spec = FeatureSpec.for_scheme(scheme)
    parameters, directions = _tissue(300, rng)
    signals = synthesise_signals(parameters, directions, scheme)
    # every input but the noise level, which is rounding noise on noise-free signals
    columns = [i for i, name in enumerate(spec.names) if name != "log_sigma"]
    reference = design(scheme, spec).features(signals)[:, columns]
    # The table and the tissue rotated together: the same signals on a rotated table.
    rotation = random_rotation(rng)
    rotated = Scheme(scheme.bvals, scheme.bvecs @ rotation.T)
    assert_allclose(design(rotated, spec).features(signals)[:, columns], reference, atol=2e-5)
    # Volumes in another order.
    order = rng.permutation(scheme.n_measurements)
    shuffled = design(Scheme(scheme.bvals[order], scheme.bvecs[order]), spec)
    assert_allclose(shuffled.features(signals[:, order])[:, columns], reference, atol=2e-5)


def test_features_agree_between_direction_sets():
    # Another well-spread set of the same counts, and a 3-degree per-volume perturbation: only
    # the orders above 2 alias differently (no noise here).
    rng = np.random.default_rng(1)
    scheme = reference_scheme()
    spec = FeatureSpec.for_scheme(scheme)
    parameters, directions = _tissue(300, rng)
    reference = design(scheme, spec).features(synthesise_signals(parameters, directions, scheme))
    other = _shell_scheme((700, 2000), (24, 48), rng)
    tilted = Scheme(scheme.bvals, np.where(scheme.b0_mask[:, None], 0.0, perturb_directions(
        np.where(scheme.b0_mask[:, None], 1.0, scheme.bvecs), 3.0, rng)))  # fmt: skip
    for table in (other, tilted):
        features = design(table, spec).features(synthesise_signals(parameters, directions, table))
        assert np.abs(features[:, :4] - reference[:, :4]).max() < 5e-3


@pytest.mark.parametrize("snr", [10.0, 40.0])
def test_noise_level_from_b0_repeats_and_shell_residuals(snr):
    rng = np.random.default_rng(2)
    for n_b0 in (1, 9):
        scheme = _shell_scheme((1000, 2000), (30, 60), rng, n_b0=n_b0)
        parameters, directions = _tissue(4000, rng)
        clean = synthesise_signals(parameters, directions, scheme)
        signals, _ = normalise_by_b0(add_rician_noise(clean, snr, rng), scheme.b0_mask)
        sigma = design(scheme, FeatureSpec.for_scheme(scheme)).noise_sigma(signals)
        # Rician magnitudes of low signals spread less than sigma: a few per cent low at SNR 10
        assert np.median(sigma) == pytest.approx(1 / snr, rel=0.15), n_b0


def test_fibre_direction_from_quadratic_fits():
    rng = np.random.default_rng(3)
    scheme = _shell_scheme((1000, 2000, 3000), (30, 45, 60), rng)
    parameters = np.column_stack([rng.uniform(0.05, 0.5, 500), rng.uniform(0.4, 0.9, 500),
                                  rng.uniform(0.0, 0.3, 500)])  # fmt: skip
    truth = random_directions(500, rng)
    clean = synthesise_signals(parameters, truth, scheme)

    def angles(signals):
        found = fibre_direction(signals, scheme)
        assert_allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-9)
        cosine = np.abs(np.sum(found * truth, axis=1))
        return np.degrees(np.arccos(np.clip(cosine, 0, 1)))

    assert angles(clean).max() < 0.1
    noisy, _ = normalise_by_b0(add_rician_noise(clean, 30.0, rng), scheme.b0_mask)
    assert np.median(angles(noisy)) < 5.0


def _cone(n, rng, half_angle=30.0):
    vectors = random_unit_vectors(40 * n, rng)
    vectors[vectors[:, 2] < 0] *= -1
    return vectors[vectors[:, 2] > np.cos(np.radians(half_angle))][:n]


def _bad_schemes():
    rng = np.random.default_rng(4)
    few = _shell_scheme((700, 2000), (5, 48), rng)
    cone = Scheme(np.r_[0.0, [700.0] * 24, [2000.0] * 48],
                  np.r_[[[0, 0, 0]], spread_directions(random_unit_vectors(24, rng)),
                        _cone(48, rng)])  # fmt: skip
    dsi_b = np.r_[0.0, np.repeat(np.arange(300.0, 3100.0, 100.0), 3)]
    dsi = Scheme(dsi_b, np.r_[[[0, 0, 0]], random_unit_vectors(dsi_b.size - 1, rng)])
    exact = _shell_scheme((700, 2000), (6, 6), rng, n_b0=1)
    return {
        "too few directions": (few, "has 5 directions"),
        "cone": (cone, "not spread over the sphere"),
        "non-shelled": (dsi, "not the network's shells"),
        "no noise estimate": (exact, "noise level cannot be estimated"),
    }


@pytest.mark.parametrize("case", sorted(_bad_schemes()))
def test_schemes_a_network_cannot_use_are_named(case):
    scheme, message = _bad_schemes()[case]
    spec = FeatureSpec(shells=(700, 2000))
    with pytest.raises(FeatureError, match=message):
        design(scheme, spec)


def test_spread_directions_match_dipy_electrostatic_sets():
    rng = np.random.default_rng(5)
    # DIPY's disperse_charges reaches 29.06 and 20.85 degrees for 24 and 48 directions
    assert min_angle_degrees(spread_directions(random_unit_vectors(24, rng))) > 28.5
    assert min_angle_degrees(spread_directions(random_unit_vectors(48, rng))) > 20.0
    vectors = spread_directions(random_unit_vectors(60, rng))
    assert np.linalg.cond(sh_basis(vectors, 4)) < 1.1
    rotation = random_rotation(rng)
    assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0)
    moved = perturb_directions(vectors, 3.0, rng)
    tilt = np.degrees(np.arccos(np.clip(np.sum(moved * vectors, axis=1), -1, 1)))
    assert 2.0 < np.sqrt(np.mean(tilt**2)) / np.sqrt(2) < 4.0


def test_random_training_schemes_stay_within_the_spec():
    rng = np.random.default_rng(6)
    spec = FeatureSpec(shells=(1000, 2000), directions=((10, 40), (20, 90)), b0_volumes=(1, 5))
    for _ in range(10):
        scheme = random_scheme(spec, rng)
        design(scheme, spec)  # applies: counts and conditioning within range
        assert 1 <= scheme.n_b0 <= 5
        assert 10 <= scheme.shell_counts[0] <= 40 and 20 <= scheme.shell_counts[1] <= 90
