"""Rician-likelihood Bessel terms for compiled (numba) code.

numba cannot call ``scipy.special``, and a ctypes bridge would stop numba from caching the
compiled kernels, so the two functions the fitter needs are rebuilt from SciPy itself:
Chebyshev interpolants of ``log(i0e(z))`` and ``I1(z)/I0(z)`` on [0, 2] and [2, 8], and of
``log(sqrt(z) i0e(z))`` and the ratio in ``16/z - 1`` beyond 8, fitted once at import to SciPy's
values (absolute error below 1e-10, checked in the tests). Fitting the logarithm directly saves a
``log`` per measurement in the fitter's innermost loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.polynomial import Chebyshev
from scipy import special

#: Chebyshev degrees on [0, 2], [2, 8] and beyond (each ~1e-11 or better).
_DEGREES = (16, 20, 12)
_BREAKS = (2.0, 8.0)


def _log_i0e(z: np.ndarray) -> np.ndarray:
    return np.log(special.i0e(z))


def _ratio(z: np.ndarray) -> np.ndarray:
    return special.i1e(z) / special.i0e(z)


def _fit(function, far_function) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients on [0, 2], [2, 8] and, in ``t = 16/z - 1``, on (8, inf)."""
    low, mid = _BREAKS
    return (
        Chebyshev.interpolate(function, _DEGREES[0], domain=[0.0, low]).coef,
        Chebyshev.interpolate(function, _DEGREES[1], domain=[low, mid]).coef,
        Chebyshev.interpolate(lambda t: far_function(16.0 / (t + 1.0)), _DEGREES[2], [-1, 1]).coef,
    )


_LOG_I0E = _fit(_log_i0e, lambda z: _log_i0e(z) + 0.5 * np.log(z))
_RATIO = _fit(_ratio, _ratio)


@njit(cache=True, inline="always")
def chebyshev_value(coefficients, t):
    """Value of the Chebyshev series ``sum_k coefficients[k] T_k(t)`` (Clenshaw recurrence)."""
    b1 = 0.0
    b2 = 0.0
    for k in range(coefficients.shape[0] - 1, 0, -1):
        b1, b2 = coefficients[k] + 2.0 * t * b1 - b2, b1
    return coefficients[0] + t * b1 - b2


@njit(cache=True, inline="always")
def _piecewise(z, low, mid, far):
    if z <= _BREAKS[0]:
        return chebyshev_value(low, z - 1.0)
    if z <= _BREAKS[1]:
        return chebyshev_value(mid, (z - 5.0) / 3.0)
    return chebyshev_value(far, 16.0 / z - 1.0)


@njit(cache=True)
def log_i0(z):
    """``log(I0(z))`` for z >= 0, without overflow."""
    value = _piecewise(z, _LOG_I0E[0], _LOG_I0E[1], _LOG_I0E[2])
    if z > _BREAKS[1]:
        value -= 0.5 * np.log(z)
    return value + z


@njit(cache=True)
def bessel_ratio(z):
    """``I1(z) / I0(z)`` for z >= 0."""
    return _piecewise(z, _RATIO[0], _RATIO[1], _RATIO[2])
