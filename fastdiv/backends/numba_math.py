"""exp and log that LLVM vectorises, for the Numba kernels.

Numba 0.68 compiles ``math.exp`` and ``math.log`` to calls into the C
library, which a loop cannot vectorise: about 0.5 G evaluations/s on two
cores (see PERF-NOTES.md). The functions here are written from plain
arithmetic, bit casts and selects, so that once inlined into a kernel's
loop LLVM turns them into AVX2 (or AVX-512) code running several times as
fast, while keeping every IEEE special value exact:

==========  ==================================  ======================
function    special values                      max error measured
==========  ==================================  ======================
exp_f64     exp(-inf) = 0, exp(inf) = inf,      1.07 ulp
exp_f32     NaN -> NaN, overflow to inf,        1.05 ulp
            underflow through subnormals to 0
log_f64     log(0) = log(-0) = -inf,            0.73 ulp
log_f32     log(x < 0) = NaN, log(inf) = inf,   0.84 ulp
            NaN -> NaN, subnormals exact
==========  ==================================  ======================

(errors against a higher-precision reference over the whole range, see
tests/test_numba_math.py; subnormal results of exp are rounded once.)

``exp_f64`` and ``log_f64`` take and return float64, ``exp_f32`` and
``log_f32`` float32 (eight lanes per AVX2 vector instead of four). Call them
from an ``@njit`` loop; they are small enough for LLVM to inline.

How they work
-------------
exp: x = n ln 2 + r with n = round(x / ln 2), |r| <= ln 2 / 2. The rounding
adds and subtracts 1.5 * 2**52 (2**23 in float32), so no float-to-integer
conversion is needed (that conversion is not defined for NaN, and AVX2 has
no vector form of it for 64-bit integers). r comes from ln 2 split in two
parts with fused multiply-adds, which makes ``x - n * ln2_hi`` exact. Then
exp(r) = 1 + r + r**2 P(r) and the result is exp(r) * 2**n1 * 2**n2 with
n = n1 + n2 and n1 clamped to +-1000 (+-100): the first product stays a
normal number and is exact, the second rounds once, so results in the
subnormal range are rounded once and overflow gives inf. Clamping x first
keeps n in range; the clamps are written so that NaN passes through.

log: x = 2**e m with m in [sqrt(1/2), sqrt(2)), read from the bits of x
(subnormal x is first multiplied by 2**52, or 2**23). With f = m - 1 and
s = f / (2 + f), log(1 + f) = 2 atanh(s) = f - hfsq + s (hfsq + R(s**2))
where hfsq = f**2 / 2 and R(z) = z Q(z); the large terms f and e ln2_hi are
exact and the polynomial only corrects them. Selects at the end put in the
values for x <= 0, inf and NaN.

The coefficients of P and Q are weighted minimax (Remez exchange) fits
computed with mpmath at 60 digits for this module, then rounded to the
working precision:

* P (exp, float64): degree 9 on |r| <= 0.34664 (ln 2 / 2 with a margin),
  max error 1.0e-16 on P, i.e. under 1.3e-17 relative on exp(r);
* P (exp, float32): degree 4, max error 6.2e-8 on P (7.5e-9 on exp(r));
* Q (log, float64): degree 6 on 0 <= z <= 0.029449 (s <= 0.17160), max
  error 3.1e-16 on Q, i.e. under 5e-18 relative on log(1 + f);
* Q (log, float32): degree 2, max error 1.9e-7 on Q (2.8e-9 on log(1 + f)).

The log functions use ``error_model="numpy"``: with Numba's default, the
division would carry a ZeroDivisionError check, a branch that stops the
loop from vectorising (2 + f is never 0). Kernels that divide need the
same. No fast-math flag is used here: reassociation would fold the
two-part range reduction, and the finite-math flags would drop the NaN and
inf handling. Contraction is spelled out with explicit fused multiply-adds.
"""

from __future__ import annotations

import math

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

__all__ = [
    "exp_f64",
    "exp_f32",
    "exp_f32_of_f64",
    "exp_like",
    "exps_nonpositive_like",
    "exp_nonpositive_like",
    "exp_f64_nonpositive",
    "exp_f32_nonpositive",
    "log_f64",
    "log_f32",
    "log_of",
    "maxnum",
]

_F64 = ir.DoubleType()
_F32 = ir.FloatType()
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


# ==========================================================================
# LLVM-level helpers: fused multiply-add and the bit manipulations.
# ==========================================================================
#
# Written as intrinsics so that they compile to a single instruction each
# (vfmadd, vpaddq, vpsllq, ...) in the integer width of the float type;
# Numba's own integer arithmetic would widen 32-bit integers to 64 bits.


def _fma_intrinsic(nbtype, lltype):
    @intrinsic
    def fma(typingctx, a, b, c):
        if not (a == nbtype and b == nbtype and c == nbtype):
            return None

        def codegen(context, builder, signature, args):
            fnty = ir.FunctionType(lltype, [lltype, lltype, lltype])
            fn = builder.module.declare_intrinsic("llvm.fma", [lltype], fnty)
            return builder.call(fn, args)

        return nbtype(nbtype, nbtype, nbtype), codegen

    return fma


@intrinsic
def maxnum(typingctx, a, b):
    """max(a, b) of two floats of one type, ignoring NaN (llvm.maxnum).

    NaN only if both are NaN. LLVM vectorises a reduction of it without
    any fast-math flag, which it does not do for ``a if a > b else b``.
    """
    if not (a == b and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        lltype = context.get_value_type(signature.args[0])
        fnty = ir.FunctionType(lltype, [lltype, lltype])
        fn = builder.module.declare_intrinsic("llvm.maxnum", [lltype], fnty)
        return builder.call(fn, args)

    return a(a, a), codegen


_fma64 = _fma_intrinsic(types.float64, _F64)
_fma32 = _fma_intrinsic(types.float32, _F32)


def _pow2_intrinsic(nbtype, lltype, itype, magic, bias, mant_bits):
    """2**n for an integer-valued float n whose 2**n is a normal number.

    n + magic puts n in the low bits of the significand (magic is
    1.5 * 2**mant_bits, whose own low bits are zero); adding the exponent
    bias and shifting those bits into the exponent field gives 2**n. The
    bits of magic above the field are shifted out.
    """

    @intrinsic
    def pow2(typingctx, n):
        if n != nbtype:
            return None

        def codegen(context, builder, signature, args):
            t = builder.fadd(args[0], ir.Constant(lltype, magic))
            bits = builder.bitcast(t, itype)
            bits = builder.add(bits, ir.Constant(itype, bias))
            bits = builder.shl(bits, ir.Constant(itype, mant_bits))
            return builder.bitcast(bits, lltype)

        return nbtype(nbtype), codegen

    return pow2


_pow2_f64 = _pow2_intrinsic(types.float64, _F64, _I64, 6755399441055744.0, 1023, 52)
_pow2_f32 = _pow2_intrinsic(types.float32, _F32, _I32, 12582912.0, 127, 23)


def _split_intrinsics(nbtype, lltype, itype, sqrt_half_bits, one_bits, bias, mant_bits):
    """(mantissa, exponent) of a positive normal x = 2**e * m, m in
    [sqrt(1/2), sqrt(2)), both as floats.

    Adding bits(1) - bits(sqrt(1/2)) to the bits of x carries into the
    exponent field exactly when the significand of x is at least sqrt(2),
    so the shifted sum is the biased e. The exponent is turned into a float
    by or-ing it into the significand of 2**mant_bits and subtracting,
    which needs no integer-to-float conversion. For x <= 0, inf or NaN the
    results are meaningless and the callers replace them.
    """
    delta = one_bits - sqrt_half_bits
    two_p = (bias + mant_bits) << mant_bits  # bits of 2**mant_bits

    def biased_exponent(builder, x):
        bits = builder.bitcast(x, itype)
        shifted = builder.add(bits, ir.Constant(itype, delta))
        return bits, builder.lshr(shifted, ir.Constant(itype, mant_bits))

    @intrinsic
    def mantissa(typingctx, x):
        if x != nbtype:
            return None

        def codegen(context, builder, signature, args):
            bits, eb = biased_exponent(builder, args[0])
            scale = builder.shl(eb, ir.Constant(itype, mant_bits))
            m = builder.sub(bits, scale)
            m = builder.add(m, ir.Constant(itype, bias << mant_bits))
            return builder.bitcast(m, lltype)

        return nbtype(nbtype), codegen

    @intrinsic
    def exponent(typingctx, x):
        if x != nbtype:
            return None

        def codegen(context, builder, signature, args):
            _, eb = biased_exponent(builder, args[0])
            # eb < 2**mant_bits, so it fits the significand of 2**mant_bits.
            f = builder.bitcast(builder.or_(eb, ir.Constant(itype, two_p)), lltype)
            offset = float(2**mant_bits + bias)
            return builder.fsub(f, ir.Constant(lltype, offset))

        return nbtype(nbtype), codegen

    return mantissa, exponent


_mantissa_f64, _exponent_f64 = _split_intrinsics(
    types.float64, _F64, _I64, 0x3FE6A09E667F3BCD, 0x3FF0000000000000, 1023, 52
)
_mantissa_f32, _exponent_f32 = _split_intrinsics(
    types.float32, _F32, _I32, 0x3F3504F3, 0x3F800000, 127, 23
)


# ==========================================================================
# exp
# ==========================================================================

# The float literals are written in hexadecimal so that they are the exact
# values the fit produced.
_LOG2E = float.fromhex("0x1.71547652b82fep+0")
_LN2_HI = float.fromhex("0x1.62e42fefa39efp-1")  # ln 2 rounded to double
_LN2_LO = float.fromhex("0x1.abc9e3b39803fp-56")  # ln 2 - _LN2_HI
_ROUND64 = 6755399441055744.0  # 1.5 * 2**52: x + it - it rounds x

_EP0 = float.fromhex("0x1.0000000000001p-1")
_EP1 = float.fromhex("0x1.5555555555558p-3")
_EP2 = float.fromhex("0x1.5555555553d5dp-5")
_EP3 = float.fromhex("0x1.111111110f7fdp-7")
_EP4 = float.fromhex("0x1.6c16c1788df49p-10")
_EP5 = float.fromhex("0x1.a01a01b00f00ap-13")
_EP6 = float.fromhex("0x1.a019b90516c06p-16")
_EP7 = float.fromhex("0x1.71ddf6abfcf99p-19")
_EP8 = float.fromhex("0x1.28918ee3d4a72p-22")
_EP9 = float.fromhex("0x1.af6339bf6e0c8p-26")

# Past these x, exp is inf or 0 anyway; clamping keeps n in range.
_EXP_HI = 710.0
_EXP_LO = -746.0
_SPLIT = 1000.0
_TWO_M64 = float.fromhex("0x1p-64")


@numba.njit(types.UniTuple(types.float64, 2)(types.float64), cache=True, nogil=True)
def _exp_reduced_f64(x):
    """(e, n) with exp(x) = e 2**n, e = exp(r) for |r| <= ln 2 / 2; x is
    clamped to [_EXP_LO, _EXP_HI] or NaN."""
    n = _fma64(x, _LOG2E, _ROUND64) - _ROUND64
    r = _fma64(-n, _LN2_HI, x)
    r = _fma64(-n, _LN2_LO, r)

    r2 = r * r
    p = _fma64(r, _EP9, _EP8)
    p = _fma64(r, p, _EP7)
    p = _fma64(r, p, _EP6)
    p = _fma64(r, p, _EP5)
    p = _fma64(r, p, _EP4)
    p = _fma64(r, p, _EP3)
    p = _fma64(r, p, _EP2)
    p = _fma64(r, p, _EP1)
    p = _fma64(r, p, _EP0)
    return 1.0 + _fma64(r2, p, r), n


@numba.njit(types.float64(types.float64), cache=True, nogil=True)
def exp_f64(x):
    """exp(x) in float64, vectorisable; about 1 ulp, exact special values.

    exp(x) = 2**n exp(r), x = n ln 2 + r (see the module docstring).

    Examples
    --------
    >>> from fastdiv.backends.numba_math import exp_f64
    >>> exp_f64(0.0), exp_f64(-float("inf")), exp_f64(800.0)
    (1.0, 0.0, inf)
    >>> abs(exp_f64(1.0) - 2.718281828459045) <= 5e-16
    True
    """
    # NaN fails both comparisons and passes through.
    x = _EXP_HI if x > _EXP_HI else x
    x = _EXP_LO if x < _EXP_LO else x
    e, n = _exp_reduced_f64(x)
    # 2**n in two normal factors: exact first product, one rounding after.
    n1 = _SPLIT if n > _SPLIT else n
    n1 = -_SPLIT if n1 < -_SPLIT else n1
    return (e * _pow2_f64(n1)) * _pow2_f64(n - n1)


@numba.njit(types.float64(types.float64), cache=True, nogil=True)
def exp_f64_nonpositive(x):
    """exp(x) for x <= 0 or NaN: the bits of :func:`exp_f64`, with less work.

    The exp passes of softmax only see shifted logits, never above 0. Then
    n <= 0, and 2**n needs no split that depends on n: (e 2**(n + 64))
    2**-64 is exact where exp_f64's two factors are, and rounds once into
    the subnormals where they do (n >= -1077, so n + 64 is a normal
    exponent). Two clamps and a power of two fewer: float64 softmax over
    rows of 1000 took 0.90 instead of 1.2 ns per entry on a core. For
    x > 0 the result is wrong; the callers never pass one.

    Examples
    --------
    >>> from fastdiv.backends.numba_math import exp_f64, exp_f64_nonpositive
    >>> [exp_f64_nonpositive(v) == exp_f64(v) for v in (0.0, -1.0, -745.0)]
    [True, True, True]
    """
    x = _EXP_LO if x < _EXP_LO else x
    e, n = _exp_reduced_f64(x)
    return (e * _pow2_f64(n + 64.0)) * _TWO_M64


_LOG2E_32 = numba.float32(float.fromhex("0x1.715476p+0"))
_LN2_HI_32 = numba.float32(float.fromhex("0x1.62e430p-1"))
_LN2_LO_32 = numba.float32(float.fromhex("-0x1.05c61p-29"))
_ROUND32 = numba.float32(12582912.0)  # 1.5 * 2**23

_EP0_32 = numba.float32(0.5)
_EP1_32 = numba.float32(float.fromhex("0x1.5554dcp-3"))
_EP2_32 = numba.float32(float.fromhex("0x1.5554b8p-5"))
_EP3_32 = numba.float32(float.fromhex("0x1.120b8p-7"))
_EP4_32 = numba.float32(float.fromhex("0x1.6d755ep-10"))

_EXP_HI_32 = numba.float32(89.0)
_EXP_LO_32 = numba.float32(-104.0)
_SPLIT_32 = numba.float32(100.0)
_TWO_M32_32 = numba.float32(float.fromhex("0x1p-32"))
_32_32 = numba.float32(32.0)
_ONE_32 = numba.float32(1.0)


@numba.njit(types.float32(types.float32), cache=True, nogil=True)
def _exp_poly_f32(r):
    """exp(r) in float32 for |r| <= ln 2 / 2."""
    r2 = r * r
    p = _fma32(r, _EP4_32, _EP3_32)
    p = _fma32(r, p, _EP2_32)
    p = _fma32(r, p, _EP1_32)
    p = _fma32(r, p, _EP0_32)
    return _ONE_32 + _fma32(r2, p, r)


@numba.njit(types.float32(types.float32, types.float32), cache=True, nogil=True)
def _exp_f32_reduced_nonpositive(r, n):
    """:func:`_exp_f32_reduced` for n <= 0 (the exps of shifted logits), with
    the same bits: (e 2**(n + 32)) 2**-32, n >= -151 after the clamps of
    the callers, as :func:`exp_f64_nonpositive` has it."""
    return (_exp_poly_f32(r) * _pow2_f32(n + _32_32)) * _TWO_M32_32


@numba.njit(types.float32(types.float32, types.float32), cache=True, nogil=True)
def _exp_f32_reduced(r, n):
    """exp(r) 2**n in float32 for |r| <= ln 2 / 2 and an integer-valued n:
    the polynomial and the two-factor scaling of :func:`exp_f32`."""
    e = _exp_poly_f32(r)
    n1 = _SPLIT_32 if n > _SPLIT_32 else n
    n1 = -_SPLIT_32 if n1 < -_SPLIT_32 else n1
    return (e * _pow2_f32(n1)) * _pow2_f32(n - n1)


@numba.njit(types.UniTuple(types.float32, 2)(types.float32), cache=True, nogil=True)
def _reduce_f32(x):
    """(r, n) with x = n ln 2 + r, |r| <= ln 2 / 2, for a clamped x (or
    NaN): the range reduction of :func:`exp_f32`."""
    n = _fma32(x, _LOG2E_32, _ROUND32) - _ROUND32
    r = _fma32(-n, _LN2_HI_32, x)
    return _fma32(-n, _LN2_LO_32, r), n


@numba.njit(types.float32(types.float32), cache=True, nogil=True)
def exp_f32(x):
    """exp(x) in float32, vectorisable; about 1 ulp, exact special values.

    The float32 twin of :func:`exp_f64` with a degree-6 polynomial.

    Examples
    --------
    >>> import numpy as np
    >>> from fastdiv.backends.numba_math import exp_f32
    >>> float(exp_f32(np.float32(1.0)))
    2.7182817459106445
    """
    x = _EXP_HI_32 if x > _EXP_HI_32 else x
    x = _EXP_LO_32 if x < _EXP_LO_32 else x
    r, n = _reduce_f32(x)
    return _exp_f32_reduced(r, n)


@numba.njit(types.float32(types.float32), cache=True, nogil=True)
def exp_f32_nonpositive(x):
    """:func:`exp_f32` for x <= 0 or NaN, with the same bits (see
    :func:`exp_f64_nonpositive`); wrong for x > 0, which no caller passes."""
    x = _EXP_LO_32 if x < _EXP_LO_32 else x
    r, n = _reduce_f32(x)
    return _exp_f32_reduced_nonpositive(r, n)


# A float64 argument rounded to float32 would lose |x| * 2**-24 of relative
# accuracy in exp (5e-6 at x = -80). Here the range reduction runs in
# float64, where r = x - n ln 2 is exact to far below float32's precision,
# and only the polynomial and the scaling run in float32. One fused
# multiply-add with ln 2 rounded to double is enough: n ln 2 is at most
# 104 ln 2, so the error of the constant stays under 2**-45 in r.
_EXP_HI_MIXED = 89.0
_EXP_LO_MIXED = -104.0


@numba.njit(types.UniTuple(types.float32, 2)(types.float64), cache=True, nogil=True)
def _reduce_f32_of_f64(x):
    """(r, n) with exp(x) ~ _exp_f32_reduced(r, n): the float64 range
    reduction of :func:`exp_f32_of_f64`, r and n rounded to float32.

    The first half of exp_f32_of_f64, for loops that run the halves apart:
    in one loop LLVM gives the float32 polynomial the lanes of the float64
    reduction (half a vector); in a loop of its own it gets a full one.

    Examples
    --------
    >>> from fastdiv.backends.numba_math import _exp_f32_reduced, _reduce_f32_of_f64
    >>> r, n = _reduce_f32_of_f64(1.0)
    >>> float(_exp_f32_reduced(r, n)) == float(exp_f32_of_f64(1.0))
    True
    """
    x = _EXP_HI_MIXED if x > _EXP_HI_MIXED else x
    x = _EXP_LO_MIXED if x < _EXP_LO_MIXED else x
    n64 = _fma64(x, _LOG2E, _ROUND64) - _ROUND64
    return numba.float32(_fma64(-n64, _LN2_HI, x)), numba.float32(n64)


@numba.njit(types.float32(types.float64), cache=True, nogil=True)
def exp_f32_of_f64(x):
    """exp(x) of a float64 x, rounded to float32; about 1 float32 ulp.

    For kernels that form their exponents in float64 (a shift that must
    not cancel digits) and want a float32 result: the range reduction of
    :func:`exp_f64`, then the polynomial and scaling of :func:`exp_f32`,
    twice as many lanes per vector as :func:`exp_f64`.

    Examples
    --------
    >>> from fastdiv.backends.numba_math import exp_f32_of_f64
    >>> float(exp_f32_of_f64(1.0))
    2.7182817459106445
    >>> float(exp_f32_of_f64(-1e300)), float(exp_f32_of_f64(1e300))
    (0.0, inf)
    """
    r, n = _reduce_f32_of_f64(x)
    return _exp_f32_reduced(r, n)


def exp_nonpositive_like(s, like):
    """exp(s) of a float64 s <= 0 (or NaN) in the dtype of ``like``: the
    bits of :func:`exp_like` through :func:`exp_f64_nonpositive` and
    :func:`_exp_f32_reduced_nonpositive`, for the exp passes of softmax."""
    return like.dtype.type(math.exp(s))


@overload(exp_nonpositive_like, jit_options=dict(nogil=True, fastmath=False))
def _exp_nonpositive_like_impl(s, like):
    if like.dtype == types.float32:

        def exp32(s, like):
            r, n = _reduce_f32_of_f64(s)
            return _exp_f32_reduced_nonpositive(r, n)

        return exp32
    return lambda s, like: exp_f64_nonpositive(s)


def exp_like(s, like):
    """exp(s) of a float64 s in the dtype of the array ``like``.

    In compiled code the choice is made once per dtype: float32 arrays get
    :func:`exp_f32_of_f64` (float64 range reduction, float32 polynomial),
    float64 ones :func:`exp_f64`. This Python body gives the same to
    rounding, for code run without the JIT.
    """
    return like.dtype.type(math.exp(s))


@overload(exp_like, jit_options=dict(nogil=True, fastmath=False))
def _exp_like_impl(s, like):
    if like.dtype == types.float32:
        return lambda s, like: exp_f32_of_f64(s)
    return lambda s, like: exp_f64(s)


def exps_nonpositive_like(s, e, work):
    """e[u] = exp(s[u]) for a float64 array s <= 0 (or NaN), in the dtype
    of e, with the bits of :func:`exp_nonpositive_like`.

    float32 scratch ``work`` as long as s (unused for float64 e). In
    compiled code a float32 e gets the float64 range reduction and then the
    float32 polynomial in two loops, with the same bits as one loop: in one
    loop LLVM runs the polynomial at the lanes of the float64 half (8 to a
    512-bit vector), alone at 16. This Python body gives the same to
    rounding, for code run without the JIT.
    """
    for u in range(s.shape[0]):
        e[u] = exp_like(s[u], e)


@overload(exps_nonpositive_like, jit_options=dict(nogil=True, fastmath=False))
def _exps_nonpositive_like_impl(s, e, work):
    if e.dtype != types.float32:

        def exps_f64(s, e, work):
            for u in range(s.shape[0]):
                e[u] = exp_f64_nonpositive(s[u])

        return exps_f64

    def exps_f32(s, e, work):
        # r goes to e and n to work, then e[u] = exp(r) 2**n in place.
        for u in range(s.shape[0]):
            e[u], work[u] = _reduce_f32_of_f64(s[u])
        for u in range(s.shape[0]):
            e[u] = _exp_f32_reduced_nonpositive(e[u], work[u])

    return exps_f32


# ==========================================================================
# log
# ==========================================================================

# e * _LOGLN2_HI is exact for |e| < 2**11: the constant has 42 bits.
_LOGLN2_HI = float.fromhex("0x1.62e42fefa3800p-1")
_LOGLN2_LO = float.fromhex("0x1.ef35793c76730p-45")
_TINY64 = float.fromhex("0x1p-1022")  # smallest normal float64
_TWO52 = float.fromhex("0x1p52")

_LQ0 = float.fromhex("0x1.5555555555558p-1")
_LQ1 = float.fromhex("0x1.9999999995201p-2")
_LQ2 = float.fromhex("0x1.2492492e07a00p-2")
_LQ3 = float.fromhex("0x1.c71c62cb80662p-3")
_LQ4 = float.fromhex("0x1.7462bb803b980p-3")
_LQ5 = float.fromhex("0x1.39fd8cb505406p-3")
_LQ6 = float.fromhex("0x1.2b61e48d64d2ap-3")

_INF = float("inf")
_NAN = float("nan")


@numba.njit(types.float64(types.float64), cache=True, nogil=True, error_model="numpy")
def log_f64(x):
    """Natural log in float64, vectorisable; < 1 ulp, exact special values.

    log(x) = e ln 2 + log(1 + f), x = 2**e (1 + f) (see the module
    docstring); log(0) = -inf, log(x < 0) = NaN, log(inf) = inf.

    Examples
    --------
    >>> from fastdiv.backends.numba_math import log_f64
    >>> log_f64(10.0)
    2.302585092994046
    """
    # Subnormals are scaled into the normal range first.
    sub = x < _TINY64
    xs = x * _TWO52 if sub else x
    m = _mantissa_f64(xs)
    e = _exponent_f64(xs)
    e = e - 52.0 if sub else e

    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    q = _fma64(z, _LQ6, _LQ5)
    q = _fma64(z, q, _LQ4)
    q = _fma64(z, q, _LQ3)
    q = _fma64(z, q, _LQ2)
    q = _fma64(z, q, _LQ1)
    q = _fma64(z, q, _LQ0)
    hfsq = 0.5 * f * f
    corr = _fma64(s, _fma64(z, q, hfsq), e * _LOGLN2_LO)
    res = _fma64(e, _LOGLN2_HI, -((hfsq - corr) - f))

    # inf -> inf, NaN -> NaN; then 0 -> -inf and negative -> NaN.
    res = res if x < _INF else x
    return res if x > 0.0 else (-_INF if x == 0.0 else _NAN)


_LOGLN2_HI_32 = numba.float32(float.fromhex("0x1.62e4p-1"))
_LOGLN2_LO_32 = numba.float32(float.fromhex("0x1.7f7d1cp-20"))
_TINY32 = numba.float32(float.fromhex("0x1p-126"))
_TWO23_32 = numba.float32(float.fromhex("0x1p23"))
_23_32 = numba.float32(23.0)
_HALF_32 = numba.float32(0.5)
_TWO_32 = numba.float32(2.0)
_ZERO_32 = numba.float32(0.0)
_INF_32 = numba.float32(_INF)
_NAN_32 = numba.float32(_NAN)

_LQ0_32 = numba.float32(float.fromhex("0x1.55555cp-1"))
_LQ1_32 = numba.float32(float.fromhex("0x1.997cp-2"))
_LQ2_32 = numba.float32(float.fromhex("0x1.2eeca8p-2"))


@numba.njit(types.float32(types.float32), cache=True, nogil=True, error_model="numpy")
def log_f32(x):
    """Natural log in float32, vectorisable; < 1 ulp, exact special values.

    The float32 twin of :func:`log_f64` with a degree-2 polynomial in s**2.

    Examples
    --------
    >>> import numpy as np
    >>> from fastdiv.backends.numba_math import log_f32
    >>> float(log_f32(np.float32(10.0)))
    2.3025851249694824
    """
    sub = x < _TINY32
    xs = x * _TWO23_32 if sub else x
    m = _mantissa_f32(xs)
    e = _exponent_f32(xs)
    e = e - _23_32 if sub else e

    f = m - _ONE_32
    s = f / (_TWO_32 + f)
    z = s * s
    q = _fma32(z, _LQ2_32, _LQ1_32)
    q = _fma32(z, q, _LQ0_32)
    hfsq = _HALF_32 * f * f
    corr = _fma32(s, _fma32(z, q, hfsq), e * _LOGLN2_LO_32)
    res = _fma32(e, _LOGLN2_HI_32, -((hfsq - corr) - f))

    res = res if x < _INF_32 else x
    return res if x > _ZERO_32 else (-_INF_32 if x == _ZERO_32 else _NAN_32)


def log_of(v):
    """float64 log of an array entry, taken in the entry's own precision.

    In compiled code the choice is made once per dtype: a float32 entry gets
    :func:`log_f32` (16 lanes to a vector where float64 has 8), a float64
    one :func:`log_f64`; the result is float64 either way. For sums whose
    terms all have one sign (entropy, cross-entropy), where each term's
    relative error carries over to the sum; never where terms cancel. This
    Python body gives the same to rounding, for code run without the JIT.
    """
    return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)


@overload(log_of, jit_options=dict(nogil=True, fastmath=False))
def _log_of_impl(v):
    if v == types.float32:
        return lambda v: numba.float64(log_f32(v))
    return lambda v: log_f64(numba.float64(v))
