"""Vectorisable building blocks of the fitter's kernels against NumPy."""

import numpy as np
from numba import njit

from noddi_bids.fit.simd import exp, index
from noddi_bids.fit.tables import build_tables


@njit(cache=True)
def _exp_loop(x, out):
    for m in range(index(0), index(x.shape[0])):
        out[m] = exp(x[m])


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


def test_runs_of_equal_b_values():
    bvals = np.array([0, 0, 1000, 1000, 0, 2000, 2000, 2000, 1000], dtype=float)
    bvecs = np.tile([1.0, 0.0, 0.0], (bvals.size, 1))
    runs = build_tables(bvals, bvecs).runs
    # start, stop and index of the b-value among the unique ones (0, 1000, 2000)
    np.testing.assert_array_equal(runs, [[0, 2, 0], [2, 4, 1], [4, 5, 0], [5, 8, 2], [8, 9, 1]])
