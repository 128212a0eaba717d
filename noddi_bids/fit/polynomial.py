"""Fast evaluation of power series in compiled (numba) code.

The fitter's innermost loop evaluates short polynomials (the stick signal per b-value, the
Bessel terms of the Rician likelihood) for every measurement. Horner's rule and Clenshaw's
recurrence are one long chain of dependent operations, so the processor waits on each step;
splitting the series four ways (``p(x) = P0(x^4) + x P1(x^4) + x^2 P2(x^4) + x^3 P3(x^4)``)
gives four independent chains a quarter as long, which measured 2-3 times faster here. The
coefficients are stored padded with zeros to a multiple of four (:func:`padded`), one series
per row of a table: the functions take the table and a row index rather than a row, because a
row view costs reference counting (atomic operations) in the innermost loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Ways the series is split (coefficient arrays are padded to a multiple of this).
WAYS = 4
#: numba fast-math flags of the fitter's kernels: only fusing a multiply and an add into one
#: instruction (one rounding instead of two; no reordering), which shortens every dependency
#: chain of the polynomial evaluations.
CONTRACT = {"contract"}


def padded(coefficients: np.ndarray, length: int | None = None) -> np.ndarray:
    """Zero-pad power-series coefficients (last axis, lowest order first).

    To ``length``, by default the next multiple of 4.
    """
    coefficients = np.asarray(coefficients, dtype=np.float64)
    size = coefficients.shape[-1]
    length = int(padded_terms(size)) if length is None else length
    pad = [(0, 0)] * (coefficients.ndim - 1) + [(0, length - size)]
    return np.ascontiguousarray(np.pad(coefficients, pad))


def padded_terms(n_terms: np.ndarray) -> np.ndarray:
    """Term counts rounded up to a multiple of 4."""
    n_terms = np.asarray(n_terms, dtype=np.int64)
    return n_terms + (-n_terms % WAYS)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def polynomial_value(table, row, n_terms, x):
    """``sum_k table[row, k] x^k`` over the first ``n_terms`` (a multiple of 4) terms."""
    x2 = x * x
    x4 = x2 * x2
    p0 = 0.0
    p1 = 0.0
    p2 = 0.0
    p3 = 0.0
    for base in range(n_terms - WAYS, -1, -WAYS):
        p0 = p0 * x4 + table[row, base]
        p1 = p1 * x4 + table[row, base + 1]
        p2 = p2 * x4 + table[row, base + 2]
        p3 = p3 * x4 + table[row, base + 3]
    return (p0 + p1 * x) + (p2 + p3 * x) * x2
