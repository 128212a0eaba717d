"""Rician-likelihood Bessel terms for compiled (numba) code.

numba cannot call ``scipy.special``, and a ctypes bridge would stop numba from caching the
compiled kernels, so the two functions the fitter needs are rebuilt from SciPy itself:
Chebyshev interpolants of ``log(i0e(z))`` and ``I1(z)/I0(z)`` on [0, 2], [2, 4], [4, 8] and
[8, 16], and of ``log(sqrt(z) i0e(z))`` and the ratio in ``32/z - 1`` beyond 16, fitted once at
import to SciPy's values (absolute error below 1e-10, checked in the tests; short intervals keep
the degrees, hence the work per measurement, low) and evaluated as power series
(:mod:`noddi_bids.fit.polynomial`; the conversion is well conditioned on these intervals).
Fitting the logarithm directly saves a ``log`` per measurement in the fitter's innermost loop.
A coarse ``log(I0)`` (error below 1e-6) ranks the starting grid, where only the order matters:
one interpolant on [0, 16] and one beyond, both evaluated and one selected without a branch, so
that the grid's loop over measurements runs in SIMD lanes.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.polynomial import Chebyshev, Polynomial
from scipy import special

from noddi_bids.fit.polynomial import CONTRACT, padded, padded_terms, polynomial_value

#: Interval ends: interpolants on [0, 2], [2, 4], [4, 8], [8, 16] and one beyond 16.
_BREAKS = np.array([0.0, 2.0, 4.0, 8.0, 16.0])
#: Chebyshev degrees per interval (each ~3e-12 or better): 16 terms, 8 for the far one.
_DEGREES = (15, 15, 15, 15, 7)
#: Degrees of the coarse log(I0) on [0, 16] and beyond (5e-7 and 2e-8).
_COARSE_NEAR_DEGREE, _COARSE_FAR_DEGREE = 23, 3
_CENTRES = (_BREAKS[1:] + _BREAKS[:-1]) / 2.0
_INVERSE_HALF_WIDTHS = 2.0 / (_BREAKS[1:] - _BREAKS[:-1])
_FAR = _BREAKS.size - 1


def _log_i0e(z: np.ndarray) -> np.ndarray:
    return np.log(special.i0e(z))


def _ratio(z: np.ndarray) -> np.ndarray:
    return special.i1e(z) / special.i0e(z)


def _fit(function, far_function, degrees) -> tuple[np.ndarray, np.ndarray]:
    """Power-series coefficients of ``function`` on each interval, one row each.

    The variable maps each finite interval to [-1, 1]; beyond the last break it is
    ``2 * 16 / z - 1`` (``far_function`` there). The series come from Chebyshev interpolants of
    the given degrees. Returns the zero-padded table and the terms to evaluate per row.
    """
    pieces = [
        Chebyshev.interpolate(function, degree, domain=[low, high])
        for degree, low, high in zip(degrees, _BREAKS[:-1], _BREAKS[1:], strict=False)
    ]
    pieces.append(_far_interpolant(far_function, degrees[-1]))
    terms = padded_terms(np.asarray(degrees) + 1)
    return np.concatenate([_as_row(piece, terms.max()) for piece in pieces]), terms


def _far_interpolant(far_function, degree: int) -> Chebyshev:
    """Chebyshev interpolant beyond the last break, in ``t = 2 * 16 / z - 1``."""
    far = 2.0 * _BREAKS[-1]
    return Chebyshev.interpolate(lambda t: far_function(far / (t + 1.0)), degree)


def _as_row(piece: Chebyshev, length: int | None = None) -> np.ndarray:
    """Power series of an interpolant in its window variable, as a zero-padded (1, K) table."""
    return padded(Chebyshev(piece.coef).convert(kind=Polynomial).coef, length)[None, :]


def _log_i0e_far(z: np.ndarray) -> np.ndarray:
    return _log_i0e(z) + 0.5 * np.log(z)


_LOG_I0E, _TERMS = _fit(_log_i0e, _log_i0e_far, _DEGREES)
_RATIO, _ = _fit(_ratio, _ratio, _DEGREES)
_NEAR_COARSE = _as_row(
    Chebyshev.interpolate(_log_i0e, _COARSE_NEAR_DEGREE, domain=[0.0, _BREAKS[-1]])
)
_FAR_COARSE = _as_row(_far_interpolant(_log_i0e_far, _COARSE_FAR_DEGREE))
#: Cap on the coarse logarithm argument, so that products of ``COARSE_BLOCK`` of them stay
#: finite. Beyond it (an SNR over ~3e9) the coarse ``log(I0)`` errs by ``log(z / cap) / 2``.
COARSE_CAP = 1e19
#: Arguments multiplied before one logarithm is taken (the largest count whose product of
#: capped arguments cannot overflow).
COARSE_BLOCK = int(np.log10(np.finfo(np.float64).max) // np.log10(COARSE_CAP))


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _piece(z):
    """Which interpolant covers ``z``, and the polynomial variable there."""
    for piece in range(_FAR):
        if z <= _BREAKS[piece + 1]:
            return piece, (z - _CENTRES[piece]) * _INVERSE_HALF_WIDTHS[piece]
    return _FAR, 2.0 * _BREAKS[_FAR] / z - 1.0


#: A running product of logarithm arguments is folded into its logarithm beyond this.
_FOLD = 1e150


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _log_i0_split(table, terms, piece, t, z):
    value = polynomial_value(table, piece, terms[piece], t) + z
    return value, (z if piece == _FAR else 1.0)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _bessel_ratio(piece, t):
    return polynomial_value(_RATIO, piece, _TERMS[piece], t)


@njit(cache=True, fastmath=CONTRACT)
def log_i0(z):
    """``log(I0(z))`` for z >= 0, without overflow."""
    value, argument = log_i0_split(z)
    return value - 0.5 * np.log(argument)


@njit(cache=True, fastmath=CONTRACT)
def bessel_ratio(z):
    """``I1(z) / I0(z)`` for z >= 0."""
    piece, t = _piece(z)
    return _bessel_ratio(piece, t)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def log_i0_split(z):
    """``log(I0(z))`` as ``value - log(argument) / 2``, returned as (value, argument).

    A sum of ``log(I0)`` over many ``z`` then needs one logarithm of the product of the
    arguments (:func:`multiply_folding`) instead of one per term.
    """
    piece, t = _piece(z)
    return _log_i0_split(_LOG_I0E, _TERMS, piece, t, z)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def log_i0_split_coarse(z):
    """:func:`log_i0_split` to better than 1e-6, without branches (for ranking candidates).

    The argument is capped at 1e19 (see ``COARSE_CAP``).
    """
    near = polynomial_value(_NEAR_COARSE, 0, _NEAR_COARSE.shape[1], z * (2.0 / _BREAKS[-1]) - 1.0)
    far_t = 2.0 * _BREAKS[-1] / max(z, _BREAKS[-1]) - 1.0
    far = polynomial_value(_FAR_COARSE, 0, _FAR_COARSE.shape[1], far_t)
    is_far = z > _BREAKS[-1]
    return (far if is_far else near) + z, (min(z, COARSE_CAP) if is_far else 1.0)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def log_i0_split_and_ratio(z):
    """:func:`log_i0_split` and ``I1(z) / I0(z)`` together (one branch)."""
    piece, t = _piece(z)
    value, argument = _log_i0_split(_LOG_I0E, _TERMS, piece, t, z)
    return value, argument, _bessel_ratio(piece, t)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def multiply_folding(product, log_sum, factor):
    """Multiply a running product by ``factor`` (>= 1) without overflow.

    The product is folded into ``log_sum`` (the sum of the logarithms already taken) before it
    can overflow; the logarithm of the whole product is ``log_sum + log(product)``.
    """
    product *= factor
    if product > _FOLD:
        return 1.0, log_sum + np.log(product)
    return product, log_sum
