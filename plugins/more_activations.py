"""More element-wise activations, each as its ``torch.nn.functional`` counterpart computes it.

Every formula is torch's own (forward and backward), evaluated without overflow warnings:
where an intermediate ``exp`` overflows to ``inf`` the result is the limit torch returns too
(``silu(-1e3) = -0.0``), and no intermediate ever becomes NaN.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

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


def _softplus(x: Array) -> Array:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), which never overflows."""
    out: Array = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    return out


ACTIVATIONS: list[type[Activation]] = [ELU, SELU, GELU, Softplus, SiLU, HardSigmoid, ReLU6, Mish]
