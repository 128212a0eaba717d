"""Rician-likelihood Bessel terms for compiled (numba) code.

numba cannot call ``scipy.special``, and a ctypes bridge would stop numba from caching the
compiled kernels, so the two functions the fitter needs, ``log(I0(z))`` and ``I1(z) / I0(z)``,
are rebuilt here, branch-free, so that the likelihood's loop over the measurements runs in SIMD
lanes (:mod:`noddi_bids.fit.simd`). Up to z = 16 they come from the power series of ``I0`` and
``I1`` in ``z^2 / 4``, whose terms are all positive (no cancellation: relative error ~1e-15);
beyond, from Chebyshev interpolants of ``log(sqrt(z) i0e(z))`` and the ratio in ``32 / z - 1``,
fitted once at import to SciPy's values (error below 1e-11). Both are evaluated and one is
selected. A coarse ``log(I0)`` (error below 1e-6) ranks the starting grid: one interpolant on
[0, 16] and one beyond, with one logarithm per block of measurements.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.polynomial import Chebyshev, Polynomial
from scipy import special

from noddi_bids.fit.polynomial import CONTRACT, padded, polynomial_value
from noddi_bids.fit.simd import log

#: Where the power series hand over to the interpolants in ``32 / z - 1``.
_NEAR_LIMIT = 16.0
#: Power-series terms up to the limit (error ~5e-15) and degree of the far interpolants.
_SERIES_TERMS, _FAR_DEGREE = 28, 7
#: Degrees of the coarse log(I0) on [0, 16] and beyond (5e-7 and 2e-8).
_COARSE_NEAR_DEGREE, _COARSE_FAR_DEGREE = 23, 3


def _log_i0e(z: np.ndarray) -> np.ndarray:
    return np.log(special.i0e(z))


def _log_i0e_far(z: np.ndarray) -> np.ndarray:
    return _log_i0e(z) + 0.5 * np.log(z)


def _ratio(z: np.ndarray) -> np.ndarray:
    return special.i1e(z) / special.i0e(z)


def _far_interpolant(far_function, degree: int) -> Chebyshev:
    """Chebyshev interpolant beyond the near limit, in ``t = 2 * 16 / z - 1``."""
    far = 2.0 * _NEAR_LIMIT
    return Chebyshev.interpolate(lambda t: far_function(far / (t + 1.0)), degree)


def _as_row(piece: Chebyshev) -> np.ndarray:
    """Power series of an interpolant in its window variable, as a zero-padded (1, K) table."""
    return padded(Chebyshev(piece.coef).convert(kind=Polynomial).coef)[None, :]


def _bessel_series(order: int) -> np.ndarray:
    """Coefficients of ``I_order(z) / (z / 2)^order`` in ``y = z^2 / 4``, as a (1, K) table."""
    terms = [1.0 / (math.factorial(k) * math.factorial(k + order)) for k in range(_SERIES_TERMS)]
    return padded(np.array(terms))[None, :]


_I0_SERIES = _bessel_series(0)
_I1_SERIES = _bessel_series(1)
_LOG_I0_FAR = _as_row(_far_interpolant(_log_i0e_far, _FAR_DEGREE))
_RATIO_FAR = _as_row(_far_interpolant(_ratio, _FAR_DEGREE))
_NEAR_COARSE = _as_row(
    Chebyshev.interpolate(_log_i0e, _COARSE_NEAR_DEGREE, domain=[0.0, _NEAR_LIMIT])
)
_FAR_COARSE = _as_row(_far_interpolant(_log_i0e_far, _COARSE_FAR_DEGREE))
#: Cap on the coarse logarithm argument, so that products of ``COARSE_BLOCK`` of them stay
#: finite. Beyond it (an SNR over ~3e9) the coarse ``log(I0)`` errs by ``log(z / cap) / 2``.
COARSE_CAP = 1e19
#: Arguments multiplied before one logarithm is taken (the largest count whose product of
#: capped arguments cannot overflow).
COARSE_BLOCK = int(np.log10(np.finfo(np.float64).max) // np.log10(COARSE_CAP))


@njit(cache=True, inline="always", fastmath=CONTRACT)
def log_i0_and_ratio(z):
    """``log(I0(z))`` and ``I1(z) / (z I0(z))``, branch-free.

    The second is the ratio ``I1 / I0`` over z (finite at z = 0, where it is 1/2), which the
    Rician curvature needs. Both are even in z (a trial step may make the model signal, hence z,
    negative). Callers whose loops should vectorise compile with ``error_model="numpy"`` (see
    :mod:`noddi_bids.fit.simd`).
    """
    z = abs(z)
    near = z <= _NEAR_LIMIT
    y = 0.25 * min(z, _NEAR_LIMIT) ** 2
    i0 = polynomial_value(_I0_SERIES, 0, _SERIES_TERMS, y)
    half_i1_over_z = 0.5 * polynomial_value(_I1_SERIES, 0, _SERIES_TERMS, y)
    z_far = max(z, _NEAR_LIMIT)
    t = 2.0 * _NEAR_LIMIT / z_far - 1.0
    log_far = polynomial_value(_LOG_I0_FAR, 0, _LOG_I0_FAR.shape[1], t)
    ratio_far = polynomial_value(_RATIO_FAR, 0, _RATIO_FAR.shape[1], t)
    logarithm = log(i0 if near else z_far)
    log_i0_z = logarithm if near else z_far + log_far - 0.5 * logarithm
    ratio_over_z = (half_i1_over_z if near else ratio_far) / (i0 if near else z_far)
    return log_i0_z, ratio_over_z


@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def log_i0(z):
    """``log(I0(z))`` for z >= 0, without overflow."""
    return log_i0_and_ratio(z)[0]


@njit(cache=True, fastmath=CONTRACT, error_model="numpy")
def bessel_ratio(z):
    """``I1(z) / I0(z)`` for z >= 0."""
    return z * log_i0_and_ratio(z)[1]


@njit(cache=True, inline="always", fastmath=CONTRACT)
def log_i0_split_coarse(z):
    """``log(I0(z))`` to better than 1e-6, as ``value - log(argument) / 2``: (value, argument).

    For ranking candidates: without branches, and a sum of them needs one logarithm per block
    of arguments multiplied together. The argument is capped at 1e19 (see ``COARSE_CAP``).
    """
    near = polynomial_value(_NEAR_COARSE, 0, _NEAR_COARSE.shape[1], z * (2.0 / _NEAR_LIMIT) - 1.0)
    far_t = 2.0 * _NEAR_LIMIT / max(z, _NEAR_LIMIT) - 1.0
    far = polynomial_value(_FAR_COARSE, 0, _FAR_COARSE.shape[1], far_t)
    is_far = z > _NEAR_LIMIT
    return (far if is_far else near) + z, (min(z, COARSE_CAP) if is_far else 1.0)
