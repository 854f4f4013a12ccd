"""NumPy's functions as ONNX opset-17 operators that onnxruntime runs in float64 alike, for
the built-in plugins' ``to_onnx`` (see :mod:`microfw.onnx`).

onnxruntime's Elu, Selu, Softplus, HardSigmoid and Erf have no float64 kernel, and ONNX has no
Expm1 or Log1p: ``expm1``, ``log1p``, ``erf`` and (near -1) ``tanh`` are composed here from
Exp, Log and Tanh, to a few units in the last place of a double. In a float32 model each is
evaluated in float64 and rounded to float32 (:func:`in_float64`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

_ERF_SPLIT = 2.0
"""|z| below which erf is the series, above which 1 - erfc, erfc a continued fraction."""
_ERF_SERIES = [float(Fraction(1, math.prod(range(1, 2 * n + 2, 2)))) for n in range(33)]
"""1 / (2n + 1)!!: erf(z) = 2 / sqrt(pi) z exp(-z^2) sum_n (2 z^2)^n / (2n + 1)!! (all terms
positive; 33 reach 2^-60 of the sum at |z| = 2)."""
_ERFC_DEPTH = 32
"""Depth of the continued fraction of erfc (2^-53 of the value at z = 2, better beyond)."""
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def min0(ctx: Any, x: str) -> str:
    return str(ctx.node("Min", [x, ctx.constant(0.0, "zero")]))


def where_positive(ctx: Any, x: str, positive: str, other: str) -> str:
    """Where(x > 0, positive, other), as ``np.where(x > 0, ...)``."""
    return str(
        ctx.node("Where", [ctx.node("Greater", [x, ctx.constant(0.0, "zero")]), positive, other])
    )


def in_float64(ctx: Any, x: str, build: Callable[[str], str]) -> str:
    """``build(x)``, nodes in float64: in a float32 model ``x`` is cast to float64 and the
    result rounded to float32, a float32 function value as NumPy's (nearly correctly
    rounded; onnxruntime's own float32 Exp, Log and Tanh are a few units off)."""
    if ctx.dtype == np.float64:
        return build(x)
    from onnx import helper

    wide = ctx.node("Cast", [x], to=helper.np_dtype_to_tensor_dtype(np.dtype(np.float64)))
    return str(ctx.node("Cast", [build(wide)], to=helper.np_dtype_to_tensor_dtype(ctx.dtype)))


def _f64(ctx: Any, value: float, hint: str = "const") -> str:
    """A float64 constant (the helpers below build float64 nodes)."""
    return str(ctx.constant(value, hint, np.float64))


def exp(ctx: Any, x: str) -> str:
    """exp(x)."""
    return in_float64(ctx, x, lambda v: str(ctx.node("Exp", [v])))


def expm1(ctx: Any, x: str) -> str:
    """expm1(x) for x <= 0 (ONNX has no Expm1): (u - 1) x / log(u), u = exp(x), Kahan's
    formula (Higham, Accuracy and Stability of Numerical Algorithms, section 1.14.1): the rounding
    error of u cancels, where exp(x) - 1 would lose the digits of a small x; x where u is 1,
    and u - 1 below x = -1, where nothing cancels (and exp may underflow to 0)."""

    def build(v: str) -> str:
        u = ctx.node("Exp", [v])
        u_minus_1 = ctx.node("Sub", [u, _f64(ctx, 1.0, "one")])
        kahan = ctx.node("Div", [ctx.node("Mul", [u_minus_1, v]), ctx.node("Log", [u])])
        far = ctx.node("Less", [v, _f64(ctx, -1.0, "minus_one")])
        rest = ctx.node("Where", [far, u_minus_1, kahan])
        return str(ctx.node("Where", [ctx.node("Equal", [u, _f64(ctx, 1.0, "one")]), v, rest]))

    return in_float64(ctx, x, build)


def log1p(ctx: Any, x: str) -> str:
    """log1p(x) for x >= 0 (ONNX has no Log1p): log(w) x / (w - 1), w = 1 + x, Kahan's
    formula (Goldberg, What Every Computer Scientist Should Know About Floating-Point
    Arithmetic, theorem 4): the rounding of w cancels; x where w is 1, log(w) from w = 2
    (nothing cancels there, and w may be inf)."""

    def build(v: str) -> str:
        w = ctx.node("Add", [v, _f64(ctx, 1.0, "one")])
        log = ctx.node("Log", [w])
        w_minus_1 = ctx.node("Sub", [w, _f64(ctx, 1.0, "one")])
        kahan = ctx.node("Div", [ctx.node("Mul", [log, v]), w_minus_1])
        rest = ctx.node("Where", [ctx.node("Less", [w, _f64(ctx, 2.0, "two")]), kahan, log])
        return str(ctx.node("Where", [ctx.node("Equal", [w, _f64(ctx, 1.0, "one")]), v, rest]))

    return in_float64(ctx, x, build)


def tanh(ctx: Any, x: str) -> str:
    """tanh(x): onnxruntime's Tanh, but -1 + 2 e / (1 + e), e = exp(2x), below x = -1/2. Near
    -1, where gelu's 1 + tanh(x) cancels, onnxruntime's float64 Tanh is up to 8 units of 2^-53
    off NumPy's, this 2 (NumPy's own float64 tanh is not correctly rounded there)."""

    def build(v: str) -> str:
        e = ctx.node("Exp", [ctx.node("Add", [v, v])])
        ratio = ctx.node(
            "Div", [ctx.node("Add", [e, e]), ctx.node("Add", [e, _f64(ctx, 1.0, "one")])]
        )
        near_minus_1 = ctx.node("Add", [ratio, _f64(ctx, -1.0, "minus_one")])
        below = ctx.node("Less", [v, _f64(ctx, -0.5, "minus_half")])
        return str(ctx.node("Where", [below, near_minus_1, ctx.node("Tanh", [v])]))

    return in_float64(ctx, x, build)


def _gauss(ctx: Any, a: str) -> str:
    """exp(-a^2) for float64 0 <= a <= 6, without the rounding of a^2 (up to 2^-53 a^2
    relative, 4e-15 at 6): a = hi + lo with hi the leading 26 bits (Veltkamp's split), so that
    hi^2 is exact, and exp(-a^2) = exp(-hi^2) exp(-lo (a + hi))."""
    c = ctx.node("Mul", [a, _f64(ctx, 2.0**27 + 1, "veltkamp")])
    hi = ctx.node("Sub", [c, ctx.node("Sub", [c, a])])
    lo = ctx.node("Sub", [a, hi])
    head = ctx.node("Exp", [ctx.node("Neg", [ctx.node("Mul", [hi, hi])])])
    tail = ctx.node("Exp", [ctx.node("Neg", [ctx.node("Mul", [lo, ctx.node("Add", [a, hi])])])])
    return str(ctx.node("Mul", [head, tail]))


def erf(ctx: Any, x: str) -> str:
    """erf(x), as ``math.erf`` to about 2^-53 (ONNX's Erf has no float64 kernel in
    onnxruntime, its float32 one is approximate). |x| < 2: the series of ``_ERF_SERIES``;
    above, 1 - erfc(|x|) with the sign of x, erfc from the even part of Laplace's continued
    fraction, erfc(a) = 2 a exp(-a^2) / sqrt(pi) / (2a^2 + 1 - 1*2 / (2a^2 + 5 - 3*4 /
    (2a^2 + 9 - ...))), accurate relative to erfc, so that 1 + erf(x) for x < -2 (gelu's)
    rounds as ``math.erf``'s. |x| is clamped to 6 (erf rounds to +-1 beyond)."""

    def build(v: str) -> str:
        a = ctx.node("Min", [ctx.node("Abs", [v]), _f64(ctx, 6.0, "six")])
        gauss = _gauss(ctx, a)
        two_over_sqrt_pi = _f64(ctx, _TWO_OVER_SQRT_PI, "two_over_sqrt_pi")
        split = _f64(ctx, _ERF_SPLIT, "erf_split")
        two = _f64(ctx, 2.0, "two")
        # the series, on |x| < 2 (its input clamped there)
        near = ctx.node("Clip", [v, _f64(ctx, -_ERF_SPLIT), split])
        a_near = ctx.node("Min", [a, split])
        w = ctx.node("Mul", [ctx.node("Mul", [a_near, a_near]), two])
        total = _f64(ctx, _ERF_SERIES[-1], "erf_series")
        for coefficient in reversed(_ERF_SERIES[:-1]):
            total = ctx.node(
                "Add", [ctx.node("Mul", [total, w]), _f64(ctx, coefficient, "erf_series")]
            )
        series = ctx.node(
            "Mul", [ctx.node("Mul", [ctx.node("Mul", [near, gauss]), total]), two_over_sqrt_pi]
        )
        # 1 - erfc, on |x| >= 2 (its input clamped there)
        a_far = ctx.node("Max", [a, split])
        w = ctx.node("Mul", [ctx.node("Mul", [a_far, a_far]), two])
        fraction = ctx.node("Add", [w, _f64(ctx, 4 * _ERFC_DEPTH + 1, "erfc_cf")])
        for n in range(_ERFC_DEPTH, 0, -1):
            step = ctx.node("Div", [_f64(ctx, (2 * n - 1) * 2 * n, "erfc_cf"), fraction])
            fraction = ctx.node(
                "Sub", [ctx.node("Add", [w, _f64(ctx, 4 * n - 3, "erfc_cf")]), step]
            )
        scaled = ctx.node("Mul", [ctx.node("Mul", [a_far, gauss]), two_over_sqrt_pi])
        erfc = ctx.node("Div", [scaled, fraction])
        one = _f64(ctx, 1.0, "one")
        positive = ctx.node("Greater", [v, _f64(ctx, 0.0, "zero")])
        far = ctx.node(
            "Where", [positive, ctx.node("Sub", [one, erfc]), ctx.node("Sub", [erfc, one])]
        )
        return str(
            ctx.node("Where", [ctx.node("Less", [ctx.node("Abs", [v]), split]), series, far])
        )

    return in_float64(ctx, x, build)
