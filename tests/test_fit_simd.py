"""Vectorisable building blocks of the fitter's kernels against NumPy."""

import numpy as np
from numba import njit

from noddi_bids.fit.polynomial import CONTRACT
from noddi_bids.fit.simd import exp, index, log


# The kernels' compile options (the functions take their callers' flags when inlined).
@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def _exp_loop(x, out):
    for m in range(index(0), index(x.shape[0])):
        out[m] = exp(x[m])


@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def _log_loop(x, out):
    for m in range(index(0), index(x.shape[0])):
        out[m] = log(x[m])


def test_exp_matches_numpy_to_rounding():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        [0.0, -0.0, 1e-300, -1e-300, np.log(2) / 2, -np.log(2) / 2, -708.0, 709.0],
        np.linspace(-708.0, 709.0, 200_001),
        rng.uniform(-50.0, 0.0, 100_000),
        -np.geomspace(1e-12, 700.0, 10_000),
    ])  # fmt: skip
    out = np.empty_like(x)
    _exp_loop(x, out)
    expected = np.exp(x)
    assert out[0] == 1.0
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=0)


def test_exp_clamps_beyond_the_normal_range():
    x = np.array([-800.0, -1e308, -np.inf, 710.0])
    out = np.empty_like(x)
    _exp_loop(x, out)
    np.testing.assert_allclose(out[:3], np.exp(-708.0))
    assert out[3] == np.exp(709.0)


def test_log_matches_numpy_to_rounding():
    rng = np.random.default_rng(1)
    tiny, huge = np.finfo(float).tiny, np.finfo(float).max
    x = np.concatenate([
        [1.0, 2.0, 0.5, np.sqrt(2.0), np.nextafter(np.sqrt(2.0), 2.0), np.sqrt(0.5), tiny, huge],
        np.geomspace(tiny, huge, 200_001),
        rng.uniform(0.5, 2.0, 100_000),
        rng.uniform(1.0, 1e6, 100_000),
    ])  # fmt: skip
    out = np.empty_like(x)
    _log_loop(x, out)
    expected = np.log(x)
    assert out[0] == 0.0
    np.testing.assert_allclose(out, expected, rtol=1e-15, atol=0)
