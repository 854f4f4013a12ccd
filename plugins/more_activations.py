"""More element-wise activations, each as its ``torch.nn.functional`` counterpart computes it.

Every formula is torch's own (forward and backward), evaluated without overflow warnings:
where an intermediate ``exp`` overflows to ``inf`` the result is the limit torch returns too
(``silu(-1e3) = -0.0``), and no intermediate ever becomes NaN.

Each maps itself to ONNX (``to_onnx``, see :mod:`microfw.onnx`) as the same arithmetic in the
same order, from opset-17 operators that onnxruntime runs in float32 and float64 alike: its
Elu, Selu, Softplus, HardSigmoid and Erf have no float64 kernel, their float attributes are
float32 (and HardSigmoid's ``x / 6 + 0.5`` rounds otherwise than ``(x + 3) / 6``); Mish and
Gelu are opsets 18 and 20. NumPy's ``expm1``, ``log1p``, ``erf`` and (near -1) ``tanh`` are
composed from Exp, Log and Tanh by the ``_onnx_*`` helpers below, to a few units in the last
place of a double. In a float32 model each such function is evaluated in float64 and rounded
to float32 (a Cast either side), the arithmetic around it staying in float32 as NumPy's: a
correctly rounded float32 value, which NumPy's own float32 functions nearly always give (its
float32 ``erf`` is the C library's ``erff`` with numba, ``math.erf`` rounded without).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from microfw import Activation
from microfw.core.interfaces import Array

from .ops import erf

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_GELU_BETA = math.sqrt(2) * (2 / math.sqrt(math.pi)) * 0.5  # sqrt(2 / pi), as torch writes it
_GELU_KAPPA = 0.044715

_RELU_INITS = ("he", "he_uniform")


def _logistic(x: Array) -> Array:
    """1 / (1 + exp(-x)) as torch computes it (exp(-x) may overflow to inf, giving 0)."""
    with np.errstate(over="ignore"):
        out: Array = 1 / (1 + np.exp(-x))
    return out


def _exp_min0(x: Array) -> Array:
    """exp(min(x, 0)): the negative branch's exp, never overflowing on the positive side."""
    out: Array = np.exp(np.minimum(x, 0))
    return out


class ELU(Activation):
    """y = x where x > 0, else alpha (exp(x) - 1); y' = 1 where x > 0, else alpha exp(x)."""

    name = "elu"
    output_range = (-math.inf, math.inf)
    recommended_init = _RELU_INITS

    alpha: Annotated[float, Field(gt=0)] = 1.0

    def forward(self, x: Array) -> Array:
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0)))

    def derivative(self, x: Array, y: Array) -> Array:
        return np.where(x > 0, x.dtype.type(1), self.alpha * _exp_min0(x))

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Where(x > 0, x, alpha expm1(Min(x, 0)))."""
        neg = ctx.node("Mul", [_onnx_expm1(ctx, _onnx_min0(ctx, x)), ctx.constant(self.alpha)])
        return _onnx_where_positive(ctx, x, x, neg)


class SELU(Activation):
    """y = scale (x where x > 0, else alpha (exp(x) - 1)), alpha 1.67326..., scale 1.05070....

    The constants are torch's (and the SELU paper's); y' = scale where x > 0, else scale alpha
    exp(x).
    """

    name = "selu"
    output_range = (-SELU_SCALE * SELU_ALPHA, math.inf)
    recommended_init = ("xavier", "lecun_uniform")  # LeCun: "xavier" is LeCun-normal here

    def forward(self, x: Array) -> Array:
        neg = SELU_ALPHA * np.expm1(np.minimum(x, 0))
        out: Array = SELU_SCALE * np.where(x > 0, x, neg)
        return out

    def derivative(self, x: Array, y: Array) -> Array:
        neg = (SELU_SCALE * SELU_ALPHA) * _exp_min0(x)
        return np.where(x > 0, x.dtype.type(SELU_SCALE), neg)

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): scale Where(x > 0, x, alpha expm1(Min(x, 0)))."""
        neg = ctx.node("Mul", [_onnx_expm1(ctx, _onnx_min0(ctx, x)), ctx.constant(SELU_ALPHA)])
        both = _onnx_where_positive(ctx, x, x, neg)
        return str(ctx.node("Mul", [both, ctx.constant(SELU_SCALE, "scale")]))


class GELU(Activation):
    """y = x (1 + erf(x / sqrt(2))) / 2; tanh: x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2.

    As torch's gelu (``approximate`` "none" or "tanh"); y' = Phi(x) + x phi(x) (none).
    """

    name = "gelu"
    output_range = (-0.17, math.inf)

    approximate: Literal["none", "tanh"] = "none"

    def forward(self, x: Array) -> Array:
        if self.approximate == "tanh":
            inner = _GELU_BETA * (x + _GELU_KAPPA * (x * x * x))
            tanh_out: Array = 0.5 * x * (1 + np.tanh(inner))
            return tanh_out
        out: Array = x * 0.5 * (1 + erf(x * _SQRT_HALF))
        return out

    def derivative(self, x: Array, y: Array) -> Array:
        if self.approximate == "tanh":
            x_sq = x * x
            t = np.tanh(_GELU_BETA * (x + _GELU_KAPPA * x_sq * x))
            left_derivative = 0.5 * (1 + t)
            right_derivative = 0.5 * x * (1 - t * t) * _GELU_BETA * (1 + 3 * _GELU_KAPPA * x_sq)
            tanh_d: Array = left_derivative + right_derivative
            return tanh_d
        cdf = 0.5 * (1 + erf(x * _SQRT_HALF))
        pdf = np.exp(-0.5 * (x * x)) * _INV_SQRT_2PI
        out: Array = cdf + x * pdf
        return out

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): either form, in the order of ``forward``, erf and tanh
        composed (``_onnx_erf``, ``_onnx_tanh``): ONNX's Gelu is opset 20, and onnxruntime's
        Erf has no float64 kernel (its float32 one is approximate, which 1 + erf(x) near -1
        magnifies)."""
        one, half = ctx.constant(1.0, "one"), ctx.constant(0.5, "half")
        if self.approximate == "tanh":
            cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
            inner = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.constant(_GELU_KAPPA)])])
            inner = ctx.node("Mul", [inner, ctx.constant(_GELU_BETA, "beta")])
            left = ctx.node("Mul", [x, half])
            return str(ctx.node("Mul", [left, ctx.node("Add", [_onnx_tanh(ctx, inner), one])]))
        z = ctx.node("Mul", [x, ctx.constant(_SQRT_HALF, "sqrt_half")])
        left = ctx.node("Mul", [x, half])
        return str(ctx.node("Mul", [left, ctx.node("Add", [_onnx_erf(ctx, z), one])]))


class Softplus(Activation):
    """y = log(1 + exp(beta x)) / beta, and y = x where beta x > threshold; y' = sigmoid(beta x).

    torch's softplus (defaults beta 1, threshold 20); the derivative is 1 above the threshold.
    """

    name = "softplus"
    output_range = (0.0, math.inf)

    beta: Annotated[float, Field(gt=0)] = 1.0
    threshold: Annotated[float, Field(gt=0)] = 20.0

    def forward(self, x: Array) -> Array:
        bx = self.beta * x
        smooth = np.log1p(np.exp(np.minimum(bx, self.threshold))) / self.beta
        return np.where(bx > self.threshold, x, smooth)

    def derivative(self, x: Array, y: Array) -> Array:
        bx = self.beta * x
        z = np.exp(np.minimum(bx, self.threshold))
        return np.where(bx > self.threshold, x.dtype.type(1), z / (z + 1))

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Where(beta x > threshold, x, log1p(exp(Min(beta x,
        threshold))) / beta) (onnxruntime's Softplus has neither beta nor threshold)."""
        beta, threshold = ctx.constant(self.beta, "beta"), ctx.constant(self.threshold)
        bx = ctx.node("Mul", [x, beta])
        exp = _onnx_exp(ctx, ctx.node("Min", [bx, threshold]))
        smooth = ctx.node("Div", [_onnx_log1p(ctx, exp), beta])
        return str(ctx.node("Where", [ctx.node("Greater", [bx, threshold]), x, smooth]))


class SiLU(Activation):
    """y = x sigmoid(x) = x / (1 + exp(-x)) (swish); y' = s (1 + x (1 - s)), s = sigmoid(x)."""

    name = "silu"
    output_range = (-0.28, math.inf)
    recommended_init = _RELU_INITS

    def forward(self, x: Array) -> Array:
        with np.errstate(over="ignore"):
            out: Array = x / (1 + np.exp(-x))
        return out

    def derivative(self, x: Array, y: Array) -> Array:
        s = _logistic(x)
        out: Array = s * (1 + x * (1 - s))
        return out

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): x / (1 + exp(-x)) (exp may overflow to inf: -0.0)."""
        exp = _onnx_exp(ctx, ctx.node("Neg", [x]))
        return str(ctx.node("Div", [x, ctx.node("Add", [exp, ctx.constant(1.0, "one")])]))


class HardSigmoid(Activation):
    """y = relu6(x + 3) / 6 = min(max(x + 3, 0), 6) / 6; y' = 1/6 where -3 < x < 3, else 0.

    torch's and Keras 3's hard sigmoid.
    """

    name = "hard_sigmoid"
    output_range = (0.0, 1.0)
    output_kind = "probability"

    def forward(self, x: Array) -> Array:
        out: Array = np.minimum(np.maximum(x + 3, 0), 6) / 6
        return out

    def derivative(self, x: Array, y: Array) -> Array:
        inside = (x > -3) & (x < 3)
        return np.where(inside, x.dtype.type(1 / 6), x.dtype.type(0))

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Clip(x + 3, 0, 6) / 6, exactly as ``forward`` rounds
        (HardSigmoid(alpha=1/6, beta=1/2) computes x / 6 + 1/2, in float32 constants)."""
        shifted = ctx.node("Add", [x, ctx.constant(3.0, "three")])
        six = ctx.constant(6.0, "six")
        clipped = ctx.node("Clip", [shifted, ctx.constant(0.0, "zero"), six])
        return str(ctx.node("Div", [clipped, six]))


class ReLU6(Activation):
    """y = min(max(x, 0), 6); y' = 1 where 0 < x < 6, else 0."""

    name = "relu6"
    output_range = (0.0, 6.0)
    recommended_init = _RELU_INITS

    def forward(self, x: Array) -> Array:
        out: Array = np.minimum(np.maximum(x, 0), 6)
        return out

    def derivative(self, x: Array, y: Array) -> Array:
        return ((x > 0) & (x < 6)).astype(x.dtype)

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Clip(x, 0, 6)."""
        zero, six = ctx.constant(0.0, "zero"), ctx.constant(6.0, "six")
        return str(ctx.node("Clip", [x, zero, six]))


class Mish(Activation):
    """y = x tanh(log(1 + exp(x))); y' = t + x sigmoid(x) (1 - t^2), t = tanh(softplus(x))."""

    name = "mish"
    output_range = (-0.31, math.inf)
    recommended_init = _RELU_INITS

    def forward(self, x: Array) -> Array:
        out: Array = x * np.tanh(_softplus(x))
        return out

    def derivative(self, x: Array, y: Array) -> Array:
        t = np.tanh(_softplus(x))
        out: Array = t + x * _logistic(x) * (1 - t * t)
        return out

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): x tanh(Max(x, 0) + log1p(exp(-|x|))), as ``_softplus``
        (ONNX's Mish is opset 18; onnxruntime's Softplus has no float64 kernel)."""
        tail = _onnx_log1p(ctx, _onnx_exp(ctx, ctx.node("Neg", [ctx.node("Abs", [x])])))
        softplus = ctx.node("Add", [ctx.node("Max", [x, ctx.constant(0.0, "zero")]), tail])
        return str(ctx.node("Mul", [x, _onnx_tanh(ctx, softplus)]))


def _softplus(x: Array) -> Array:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), which never overflows."""
    out: Array = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    return out


# ONNX: NumPy's functions as opset-17 operators onnxruntime runs in float64 (see to_onnx).

_ERF_SPLIT = 2.0
"""|z| below which erf is the series, above which 1 - erfc, erfc a continued fraction."""
_ERF_SERIES = [float(Fraction(1, math.prod(range(1, 2 * n + 2, 2)))) for n in range(33)]
"""1 / (2n + 1)!!: erf(z) = 2 / sqrt(pi) z exp(-z^2) sum_n (2 z^2)^n / (2n + 1)!! (all terms
positive; 33 reach 2^-60 of the sum at |z| = 2)."""
_ERFC_DEPTH = 32
"""Depth of the continued fraction of erfc (2^-53 of the value at z = 2, better beyond)."""
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def _onnx_min0(ctx: Any, x: str) -> str:
    return str(ctx.node("Min", [x, ctx.constant(0.0, "zero")]))


def _onnx_where_positive(ctx: Any, x: str, positive: str, other: str) -> str:
    """Where(x > 0, positive, other), as ``np.where(x > 0, ...)``."""
    return str(
        ctx.node("Where", [ctx.node("Greater", [x, ctx.constant(0.0, "zero")]), positive, other])
    )


def _onnx_float64(ctx: Any, x: str, build: Callable[[str], str]) -> str:
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


def _onnx_exp(ctx: Any, x: str) -> str:
    """exp(x)."""
    return _onnx_float64(ctx, x, lambda v: str(ctx.node("Exp", [v])))


def _onnx_expm1(ctx: Any, x: str) -> str:
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

    return _onnx_float64(ctx, x, build)


def _onnx_log1p(ctx: Any, x: str) -> str:
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

    return _onnx_float64(ctx, x, build)


def _onnx_tanh(ctx: Any, x: str) -> str:
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

    return _onnx_float64(ctx, x, build)


def _onnx_gauss(ctx: Any, a: str) -> str:
    """exp(-a^2) for float64 0 <= a <= 6, without the rounding of a^2 (up to 2^-53 a^2
    relative, 4e-15 at 6): a = hi + lo with hi the leading 26 bits (Veltkamp's split), so that
    hi^2 is exact, and exp(-a^2) = exp(-hi^2) exp(-lo (a + hi))."""
    c = ctx.node("Mul", [a, _f64(ctx, 2.0**27 + 1, "veltkamp")])
    hi = ctx.node("Sub", [c, ctx.node("Sub", [c, a])])
    lo = ctx.node("Sub", [a, hi])
    head = ctx.node("Exp", [ctx.node("Neg", [ctx.node("Mul", [hi, hi])])])
    tail = ctx.node("Exp", [ctx.node("Neg", [ctx.node("Mul", [lo, ctx.node("Add", [a, hi])])])])
    return str(ctx.node("Mul", [head, tail]))


def _onnx_erf(ctx: Any, x: str) -> str:
    """erf(x), as ``math.erf`` to about 2^-53 (ONNX's Erf has no float64 kernel in
    onnxruntime, its float32 one is approximate). |x| < 2: the series of ``_ERF_SERIES``;
    above, 1 - erfc(|x|) with the sign of x, erfc from the even part of Laplace's continued
    fraction, erfc(a) = 2 a exp(-a^2) / sqrt(pi) / (2a^2 + 1 - 1*2 / (2a^2 + 5 - 3*4 /
    (2a^2 + 9 - ...))), accurate relative to erfc, so that 1 + erf(x) for x < -2 (gelu's)
    rounds as ``math.erf``'s. |x| is clamped to 6 (erf rounds to +-1 beyond)."""

    def build(v: str) -> str:
        a = ctx.node("Min", [ctx.node("Abs", [v]), _f64(ctx, 6.0, "six")])
        gauss = _onnx_gauss(ctx, a)
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

    return _onnx_float64(ctx, x, build)


ACTIVATIONS: list[type[Activation]] = [ELU, SELU, GELU, Softplus, SiLU, HardSigmoid, ReLU6, Mish]
