"""Forward model against brute-force integration over the sphere and analytic limits."""

import numpy as np
import pytest
from scipy import integrate, special

from noddi_bids.model.noddi import (
    D_ISO,
    D_PAR,
    KAPPA_MAX,
    ODI_MIN,
    hindered_signal,
    kappa_from_odi,
    noddi_signal,
    odi_from_kappa,
    watson_mean_cos2,
    watson_stick_signal,
)


def _brute_force_stick(kappa, beta, cos_angle):
    """2-D adaptive quadrature of Watson x stick over the sphere (mu = z, g in the xz plane)."""
    sin_angle = np.sqrt(1 - cos_angle**2)

    def integrand(phi, theta):
        g_dot_n = cos_angle * np.cos(theta) + sin_angle * np.sin(theta) * np.cos(phi)
        watson = np.exp(kappa * (np.cos(theta) ** 2 - 1))
        return np.sin(theta) * watson * np.exp(-beta * g_dot_n**2)

    numerator = integrate.dblquad(integrand, 0, np.pi, 0, 2 * np.pi, epsabs=1e-12, epsrel=1e-11)[0]
    norm = integrate.quad(
        lambda t: 2 * np.pi * np.sin(t) * np.exp(kappa * (np.cos(t) ** 2 - 1)), 0, np.pi,
        epsabs=1e-13, epsrel=1e-12,
    )[0]  # fmt: skip
    return numerator / norm


@pytest.mark.parametrize("kappa", [0.0, 1e-4, 0.5, 4.0, 16.0, KAPPA_MAX])
@pytest.mark.parametrize("beta", [0.5, 2000 * D_PAR, 10.0])
def test_stick_matches_brute_force_integration(kappa, beta):
    for cos_angle in (0.0, 0.45, 0.9, 1.0):
        expected = _brute_force_stick(kappa, beta, cos_angle)
        value = watson_stick_signal(np.array(kappa), np.array(beta), np.array(cos_angle))
        np.testing.assert_allclose(value, expected, atol=1e-9)


def test_stick_isotropic_limit_is_closed_form():
    beta = np.array([0.3, 1.2, 3.4, 9.0])
    expected = np.sqrt(np.pi) * special.erf(np.sqrt(beta)) / (2 * np.sqrt(beta))
    for cos_angle in (0.0, 0.7, 1.0):
        value = watson_stick_signal(np.zeros(4), beta, np.full(4, cos_angle))
        np.testing.assert_allclose(value, expected, atol=1e-13)


def test_stick_concentrated_limit_is_a_single_stick():
    beta = 2000 * D_PAR
    cos_angle = np.linspace(0, 1, 11)
    value = watson_stick_signal(np.full(11, 1e6), np.full(11, beta), cos_angle)
    np.testing.assert_allclose(value, np.exp(-beta * cos_angle**2), atol=1e-5)


def test_watson_mean_cos2_matches_dawson_form():
    kappa = np.array([1e-2, 0.5, 3.0, 20.0, 64.0, 500.0])
    root = np.sqrt(kappa)
    expected = 1 / (2 * root * special.dawsn(root)) - 1 / (2 * kappa)
    np.testing.assert_allclose(watson_mean_cos2(kappa), expected, atol=1e-12)
    np.testing.assert_allclose(watson_mean_cos2(np.array([0.0])), 1 / 3, atol=1e-14)


def test_hindered_matches_brute_force_watson_average():
    kappa, ndi, b = 3.0, 0.6, 2000.0
    d_perp = D_PAR * (1 - ndi)
    norm = integrate.quad(lambda t: np.exp(kappa * t**2), 0, 1)[0]
    mean_t2 = integrate.quad(lambda t: t**2 * np.exp(kappa * t**2), 0, 1)[0] / norm
    d_par_w = d_perp + (D_PAR - d_perp) * mean_t2
    d_perp_w = d_perp + (D_PAR - d_perp) * (1 - mean_t2) / 2
    for cos_angle in (0.0, 0.5, 1.0):
        expected = np.exp(-b * (d_perp_w + (d_par_w - d_perp_w) * cos_angle**2))
        value = hindered_signal(np.array(kappa), ndi, b, np.array(cos_angle))
        np.testing.assert_allclose(value, expected, atol=1e-12)


def _scheme_arrays():
    bvals = np.array([0.0, 700.0, 700.0, 2000.0, 2000.0, 2000.0])
    bvecs = np.array([[0, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0.6, 0.8]])
    return bvals, bvecs.astype(float)


def test_free_water_limit():
    bvals, bvecs = _scheme_arrays()
    signal = noddi_signal(0.3, 0.5, 1.0, [0, 0, 1], bvals, bvecs)
    np.testing.assert_allclose(signal[0], np.exp(-bvals * D_ISO), atol=1e-15)


def test_single_fibre_limit_along_and_across():
    bvals, bvecs = _scheme_arrays()
    signal = noddi_signal(1e-7, 1.0, 0.0, [1, 0, 0], bvals, bvecs)[0]
    assert signal[0] == pytest.approx(1.0)
    assert signal[1] == pytest.approx(np.exp(-700 * D_PAR), abs=1e-5)  # along the fibre
    assert signal[2] == pytest.approx(1.0, abs=1e-5)  # across the fibre
    assert signal[3] == pytest.approx(np.exp(-2000 * D_PAR), abs=1e-5)


def test_d_par_is_configurable():
    bvals, bvecs = _scheme_arrays()
    default = noddi_signal(0.2, 0.7, 0.1, [1, 0, 0], bvals, bvecs)
    cortex = noddi_signal(0.2, 0.7, 0.1, [1, 0, 0], bvals, bvecs, d_par=1.1e-3)
    assert np.all(cortex[0, 1:] > default[0, 1:])
    kappa = kappa_from_odi(np.array(0.2))
    expected = watson_stick_signal(kappa, np.array(2000 * 1.1e-3), np.array(1.0))
    mixed = 0.9 * (0.7 * expected + 0.3 * hindered_signal(kappa, 0.7, 2000.0, 1.0, 1.1e-3))
    np.testing.assert_allclose(cortex[0, 3], mixed + 0.1 * np.exp(-2000 * D_ISO), atol=1e-14)


def test_batch_shapes_and_b0():
    bvals, bvecs = _scheme_arrays()
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(5000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    signal = noddi_signal(
        rng.uniform(ODI_MIN, 1, 5000), rng.uniform(0, 1, 5000), rng.uniform(0, 1, 5000),
        directions, bvals, bvecs,
    )  # fmt: skip
    assert signal.shape == (5000, 6)
    np.testing.assert_allclose(signal[:, 0], 1.0, atol=1e-14)
    assert np.all((signal > 0) & (signal <= 1 + 1e-12))


def test_odi_kappa_round_trip():
    odi = np.linspace(ODI_MIN, 1, 50)
    np.testing.assert_allclose(odi_from_kappa(kappa_from_odi(odi)), odi, atol=1e-14)
    assert odi_from_kappa(np.float64(KAPPA_MAX)) == pytest.approx(ODI_MIN)


def test_torch_twin_matches_numpy_and_is_differentiable():
    import torch
    bvals, bvecs = _scheme_arrays()
    rng = np.random.default_rng(1)
    params = rng.uniform(0.1, 0.9, size=(4, 3))
    directions = rng.normal(size=(4, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    expected = noddi_signal(*params.T, directions, bvals, bvecs)
    tensors = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params.T]
    value = noddi_signal(*tensors, torch.tensor(directions), torch.tensor(bvals),
                         torch.tensor(bvecs))  # fmt: skip
    np.testing.assert_allclose(value.detach().numpy(), expected, atol=1e-13)

    def function(odi, ndi, fwf):
        return noddi_signal(odi, ndi, fwf, torch.tensor(directions), torch.tensor(bvals),
                            torch.tensor(bvecs))  # fmt: skip

    assert torch.autograd.gradcheck(function, tuple(tensors), eps=1e-6, atol=1e-6)
