"""Built-in element-wise activations.

Each implements ``forward``/``derivative`` (the contract) and the optional
``forward_into``/``backward_into`` (the same maths in the caller's buffers). How they run fused
with a linear layer, in place, is written as rules in :mod:`.fusions`.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from microfw import Activation, hookimpl
from microfw.core.interfaces import Array

from .ops import exp_cap, sigmoid, sigmoid_into


class Sigmoid(Activation):
    """y = 1 / (1 + exp(-x)), computed without overflow; y' = y (1 - y)."""

    name = "sigmoid"
    output_range = (0.0, 1.0)
    output_kind = "probability"

    def forward(self, x: Array) -> Array:
        return sigmoid(x)

    def derivative(self, x: Array, y: Array) -> Array:
        return y * (1 - y)

    def forward_into(self, x: Array, out: Array) -> None:
        sigmoid_into(x, out)

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        np.subtract(1, y, out=out)
        out *= y
        out *= dy

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): 1 / (1 + exp(min(-x, cap))), as sigmoid_into computes it
        (onnxruntime's own Sigmoid is approximate: 1e-8 relative in float64)."""
        capped = ctx.node("Min", [ctx.node("Neg", [x]), ctx.constant(exp_cap(ctx.dtype), "cap")])
        one = ctx.constant(1.0, "one")
        return str(ctx.node("Reciprocal", [ctx.node("Add", [ctx.node("Exp", [capped]), one])]))


class Tanh(Activation):
    """y = tanh(x); y' = 1 - y^2."""

    name = "tanh"
    output_range = (-1.0, 1.0)

    def forward(self, x: Array) -> Array:
        return np.tanh(x)

    def derivative(self, x: Array, y: Array) -> Array:
        return 1 - y * y

    def forward_into(self, x: Array, out: Array) -> None:
        np.tanh(x, out=out)

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        np.multiply(y, y, out=out)
        np.subtract(1, out, out=out)
        out *= dy

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Tanh."""
        return str(ctx.node("Tanh", [x]))


class ReLU(Activation):
    """y = max(x, 0); y' = 1 where x > 0, else 0 (0 at the kink x = 0)."""

    name = "relu"
    output_range = (0.0, np.inf)
    recommended_init = ("he", "he_uniform")

    def forward(self, x: Array) -> Array:
        return np.maximum(x, 0)

    def derivative(self, x: Array, y: Array) -> Array:
        return (x > 0).astype(x.dtype)

    def forward_into(self, x: Array, out: Array) -> None:
        np.maximum(x, 0, out=out)

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        np.multiply(dy, x > 0, out=out)

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Relu."""
        return str(ctx.node("Relu", [x]))


class LeakyReLU(Activation):
    """y = x where x > 0, else alpha x; y' = 1 where x > 0, else alpha."""

    name = "leaky_relu"
    output_range = (-np.inf, np.inf)
    recommended_init = ("he", "he_uniform")

    alpha: Annotated[float, Field(ge=0, lt=1)] = 0.01

    def forward(self, x: Array) -> Array:
        return np.where(x > 0, x, self.alpha * x)

    def derivative(self, x: Array, y: Array) -> Array:
        one, alpha = x.dtype.type(1), x.dtype.type(self.alpha)
        return np.where(x > 0, one, alpha)

    def forward_into(self, x: Array, out: Array) -> None:
        np.maximum(x, self.alpha * x, out=out)  # alpha < 1: the larger of x and alpha x

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        np.greater(x, 0, out=out)  # 1 where x > 0, else 0 ...
        out *= 1 - self.alpha
        out += self.alpha  # ... now 1 or alpha
        out *= dy

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Max(x, alpha x), alpha in the model's dtype (LeakyRelu's
        alpha attribute is a float32)."""
        return str(ctx.node("Max", [x, ctx.node("Mul", [x, ctx.constant(self.alpha, "alpha")])]))


class Identity(Activation):
    """y = x; y' = 1 (a linear output, e.g. for regression)."""

    name = "identity"
    output_range = (-np.inf, np.inf)

    def forward(self, x: Array) -> Array:
        return x.copy()  # a new array, as from any other function: never the caller's own

    def derivative(self, x: Array, y: Array) -> Array:
        return np.ones_like(x)

    def forward_into(self, x: Array, out: Array) -> None:
        np.copyto(out, x)

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        np.copyto(out, dy)

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Identity."""
        return str(ctx.node("Identity", [x]))


@hookimpl
def register_activations() -> list[type[Activation]]:
    from .more_activations import ACTIVATIONS

    return [Sigmoid, Tanh, ReLU, LeakyReLU, Identity, *ACTIVATIONS]
