"""Vectorisable building blocks of the fitter's kernels against NumPy."""

import numpy as np
import pytest
from numba import njit

from noddi_bids.fit.polynomial import CONTRACT
from noddi_bids.fit.simd import exp, index, log

_RNG = np.random.default_rng(0)
_TINY, _HUGE = np.finfo(float).tiny, np.finfo(float).max


# The kernels' compile options (the functions take their callers' flags when inlined).
@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def _exp_loop(x, out):
    for m in range(index(0), index(x.shape[0])):
        out[m] = exp(x[m])


@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def _log_loop(x, out):
    for m in range(index(0), index(x.shape[0])):
        out[m] = log(x[m])


def _run(loop, x):
    out = np.empty_like(x)
    loop(x, out)
    return out


@pytest.mark.parametrize(
    ("loop", "numpy_function", "x"),
    [
        (_exp_loop, np.exp, np.concatenate([
            [0.0, -0.0, 1e-300, -1e-300, np.log(2) / 2, -np.log(2) / 2, -708.0, 709.0],
            np.linspace(-708.0, 709.0, 200_001),
            _RNG.uniform(-50.0, 0.0, 100_000),
            -np.geomspace(1e-12, 700.0, 10_000),
        ])),
        (_log_loop, np.log, np.concatenate([
            [1.0, 2.0, 0.5, np.sqrt(2.0), np.nextafter(np.sqrt(2.0), 2.0), np.sqrt(0.5), _TINY,
             _HUGE],
            np.exp2(np.linspace(-1022.0, 1023.99, 200_001)),
            _RNG.uniform(0.5, 2.0, 100_000),
            _RNG.uniform(1.0, 1e6, 100_000),
        ])),
    ],
    ids=["exp", "log"],
)  # fmt: skip
def test_matches_numpy_to_rounding(loop, numpy_function, x):
    out = _run(loop, x)
    # exp(0) = 1 and log(1) = 0 exactly
    assert out[0] == numpy_function(x[0])
    np.testing.assert_allclose(out, numpy_function(x), rtol=1e-15, atol=0)


def test_exp_clamps_beyond_the_normal_range():
    out = _run(_exp_loop, np.array([-800.0, -1e308, -np.inf, 710.0]))
    np.testing.assert_allclose(out[:3], np.exp(-708.0))
    assert out[3] == np.exp(709.0)
