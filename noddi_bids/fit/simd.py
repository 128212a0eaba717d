"""Building blocks for compiled (numba) loops that LLVM turns into SIMD instructions.

Two things keep LLVM from vectorising a loop over the measurements: a call it has no vector
form of (``np.exp`` goes to the C library, one value at a time), and numba's support for
negative indices (an array index that may be negative is wrapped around with a select, and a
store through a selected address cannot be vectorised). :func:`exp` is written in arithmetic
and bit operations only, and :func:`index` makes a loop bound unsigned, so that numba drops
the wraparound.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from noddi_bids.fit.polynomial import CONTRACT, padded, polynomial_value

_LOG2E = 1.4426950408889634
# ln 2 split in two (Cody and Waite): n * _LN2_HIGH is exact for |n| < 2^11, so the reduced
# argument keeps full precision.
_LN2_HIGH = 6.93147180369123816490e-01
_LN2_LOW = 1.90821492927058770002e-10
# Adding 1.5 * 2^52 rounds a double of magnitude below 2^51 to an integer and leaves that
# integer in the low bits of the sum's mantissa.
_ROUNDING_SHIFT = 1.5 * 2.0**52
_EXPONENT_BIAS = 1023
_MANTISSA_BITS = 52
# exp(x) for x below this is subnormal (or 0); above _EXP_MAX it overflows.
_EXP_MIN, _EXP_MAX = -708.0, 709.0
#: Taylor degree of e^r on [-ln2 / 2, ln2 / 2] (truncation error below 2e-16).
_EXP_DEGREE = 12
_EXP_SERIES = padded(1.0 / np.cumprod(np.r_[1.0, np.arange(1.0, _EXP_DEGREE + 1)]))[None, :]


@intrinsic
def _float_bits(typingctx, value):
    """Reinterpret the bits of a float64 as an int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, bits):
    """Reinterpret the bits of an int64 as a float64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(cache=True, inline="always", fastmath=CONTRACT)
def exp(x):
    """``e^x`` to a relative 1e-15, branch-free (so that loops calling it vectorise).

    ``x`` is clamped to [-708, 709]: values below give ~3e-308 instead of a subnormal or 0.
    Range reduction ``x = n ln2 + r`` with ``|r| <= ln2 / 2``, the Taylor series of
    ``e^r`` and ``2^n`` built in the exponent bits.
    """
    x = min(max(x, _EXP_MIN), _EXP_MAX)
    shifted = x * _LOG2E + _ROUNDING_SHIFT
    n = shifted - _ROUNDING_SHIFT
    r = (x - n * _LN2_HIGH) - n * _LN2_LOW
    scale = _bits_float((_float_bits(shifted) + _EXPONENT_BIAS) << _MANTISSA_BITS)
    return polynomial_value(_EXP_SERIES, 0, _EXP_SERIES.shape[1], r) * scale


@njit(cache=True, inline="always")
def index(i):
    """``i`` (>= 0) as an unsigned loop bound: numba then skips negative-index wraparound."""
    return np.uint64(i)
