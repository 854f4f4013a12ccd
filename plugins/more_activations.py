"""More element-wise activations, each as its ``torch.nn.functional`` counterpart computes it.

Every formula is torch's own (forward and backward), evaluated without overflow warnings:
where an intermediate ``exp`` overflows to ``inf`` the result is the limit torch returns too
(``silu(-1e3) = -0.0``), and no intermediate ever becomes NaN.

Each maps itself to ONNX (``to_onnx``, see :mod:`microfw.onnx`) as the same arithmetic in the
same order, from opset-17 operators that onnxruntime runs in float32 and float64 alike: its
Elu, Selu, Softplus, HardSigmoid and Erf have no float64 kernel, their float attributes are
float32 (and HardSigmoid's ``x / 6 + 0.5`` rounds otherwise than ``(x + 3) / 6``); Mish and
Gelu are opsets 18 and 20. NumPy's ``expm1``, ``log1p``, ``erf`` and (near -1) ``tanh`` are
composed from Exp, Log and Tanh in ``onnx_ops``, to a few units in the last
place of a double. In a float32 model each such function is evaluated in float64 and rounded
to float32 (a Cast either side), the arithmetic around it staying in float32 as NumPy's: a
correctly rounded float32 value, which NumPy's own float32 functions nearly always give (its
float32 ``erf`` is the C library's ``erff`` with numba, ``math.erf`` rounded without).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from microfw import Activation
from microfw.core.interfaces import Array

from . import onnx_ops
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
        expm1 = onnx_ops.expm1(ctx, onnx_ops.min0(ctx, x))
        neg = ctx.node("Mul", [expm1, ctx.constant(self.alpha)])
        return onnx_ops.where_positive(ctx, x, x, neg)


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
        expm1 = onnx_ops.expm1(ctx, onnx_ops.min0(ctx, x))
        neg = ctx.node("Mul", [expm1, ctx.constant(SELU_ALPHA)])
        both = onnx_ops.where_positive(ctx, x, x, neg)
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
            return str(ctx.node("Mul", [left, ctx.node("Add", [onnx_ops.tanh(ctx, inner), one])]))
        z = ctx.node("Mul", [x, ctx.constant(_SQRT_HALF, "sqrt_half")])
        left = ctx.node("Mul", [x, half])
        return str(ctx.node("Mul", [left, ctx.node("Add", [onnx_ops.erf(ctx, z), one])]))


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
        exp = onnx_ops.exp(ctx, ctx.node("Min", [bx, threshold]))
        smooth = ctx.node("Div", [onnx_ops.log1p(ctx, exp), beta])
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
        exp = onnx_ops.exp(ctx, ctx.node("Neg", [x]))
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
        tail = onnx_ops.log1p(ctx, onnx_ops.exp(ctx, ctx.node("Neg", [ctx.node("Abs", [x])])))
        softplus = ctx.node("Add", [ctx.node("Max", [x, ctx.constant(0.0, "zero")]), tail])
        return str(ctx.node("Mul", [x, onnx_ops.tanh(ctx, softplus)]))


def _softplus(x: Array) -> Array:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), which never overflows."""
    out: Array = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    return out


ACTIVATIONS: list[type[Activation]] = [ELU, SELU, GELU, Softplus, SiLU, HardSigmoid, ReLU6, Mish]
