"""Building blocks for compiled (numba) loops that LLVM turns into SIMD instructions.

Three things keep LLVM from vectorising a loop over the measurements: a call it has no vector
form of (``np.exp`` and ``np.log`` go to the C library, one value at a time); numba's support
for negative indices (an array index that may be negative is wrapped around with a select, and
a store through a selected address cannot be vectorised); and numba's check of every float
division for a zero divisor (Python's ``ZeroDivisionError``, a branch). :func:`exp` and
:func:`log` are written in arithmetic and bit operations only (the bits as unsigned integers,
whose shifts AVX2 has), :func:`index` makes a loop bound unsigned, so that numba drops the
wraparound, and kernels whose loops divide (:func:`log` does) compile with
``error_model="numpy"`` (without it they give the same results, only slower).

The functions are inlined into their callers and take the callers' fast-math flags: those must
not include ``reassoc`` or ``nsz`` (nor ``fastmath=True``), which let LLVM fold away the
rounding step of :func:`exp` (``x + 1.5 * 2^52 - 1.5 * 2^52``); the fitter's kernels only allow
fused multiply-adds (``CONTRACT``), and their tests against the exact model would fail otherwise.
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
# Bits of the double 2^52: or-ing an integer below 2^52 into them gives 2^52 + that integer.
_TWO_52 = 2.0**52
_TWO_52_BITS = np.uint64(0x4330000000000000)
_ONE_BITS = np.uint64(0x3FF0000000000000)
_MANTISSA_MASK = np.uint64((1 << 52) - 1)
_MANTISSA_BITS = np.uint64(52)
_EXPONENT_BIAS = 1023
# exp(x) for x below this is subnormal (or 0); above _EXP_MAX it overflows.
_EXP_MIN, _EXP_MAX = -708.0, 709.0
#: Taylor degree of e^r on [-ln2 / 2, ln2 / 2] (truncation error below 2e-16).
_EXP_DEGREE = 12
_EXP_SERIES = padded(1.0 / np.cumprod(np.r_[1.0, np.arange(1.0, _EXP_DEGREE + 1)]))[None, :]
#: Terms of ``log(m) = 2 atanh(s) = s sum_k 2 s^(2k) / (2k + 1)``, ``s = (m - 1) / (m + 1)``:
#: for m in [sqrt(1/2), sqrt(2)], s^2 <= 0.0295 and the 12th term is below 1e-18.
_LOG_SERIES = padded(2.0 / (2.0 * np.arange(12) + 1.0))[None, :]


@intrinsic
def _float_bits(typingctx, value):
    """Reinterpret the bits of a float64 as a uint64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.uint64(types.float64), codegen


@intrinsic
def _bits_float(typingctx, bits):
    """Reinterpret the bits of a uint64 as a float64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.uint64), codegen


@njit(cache=True, inline="always", fastmath=CONTRACT)
def exp(x):
    """``e^x`` to a relative 1e-15, branch-free (so that loops calling it vectorise).

    ``x`` is clamped to [-708, 709]: values below give ~3e-308 instead of a subnormal or 0.
    Range reduction ``x = n ln2 + r`` with ``|r| <= ln2 / 2``, the Taylor series of ``e^r``,
    and ``2^n`` built in the exponent bits.
    """
    x = min(max(x, _EXP_MIN), _EXP_MAX)
    shifted = x * _LOG2E + _ROUNDING_SHIFT
    n = shifted - _ROUNDING_SHIFT
    r = (x - n * _LN2_HIGH) - n * _LN2_LOW
    scale = _bits_float((_float_bits(shifted) + np.uint64(_EXPONENT_BIAS)) << _MANTISSA_BITS)
    return polynomial_value(_EXP_SERIES, 0, _EXP_SERIES.shape[1], r) * scale


@njit(cache=True, inline="always", fastmath=CONTRACT)
def log(x):
    """Natural logarithm of a positive normal double to a relative 1e-15, branch-free.

    ``x = 2^e m`` from the bits, with m moved into [sqrt(1/2), sqrt(2)], and ``log(m)`` from
    the series of ``2 atanh((m - 1) / (m + 1))``.
    """
    bits = _float_bits(x)
    mantissa = _bits_float((bits & _MANTISSA_MASK) | _ONE_BITS)
    biased = _bits_float((bits >> _MANTISSA_BITS) | _TWO_52_BITS) - _TWO_52
    high = mantissa > np.sqrt(2.0)
    mantissa = mantissa * 0.5 if high else mantissa
    exponent = biased - (_EXPONENT_BIAS - 1.0 if high else _EXPONENT_BIAS)
    s = (mantissa - 1.0) / (mantissa + 1.0)
    log_mantissa = s * polynomial_value(_LOG_SERIES, 0, _LOG_SERIES.shape[1], s * s)
    return exponent * _LN2_HIGH + (log_mantissa + exponent * _LN2_LOW)


@njit(cache=True, inline="always")
def index(i):
    """``i`` (>= 0) as an unsigned loop bound: numba then skips negative-index wraparound."""
    return np.uint64(i)
