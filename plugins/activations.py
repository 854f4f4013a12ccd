"""Built-in element-wise activations.

Each implements ``forward``/``derivative`` (the contract) and the optional fast paths
``forward_into``/``backward_into`` the training loop uses.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from microfw import Activation, hookimpl
from microfw.interfaces import Array

from . import kernels


def sigmoid_into(x: Array, out: Array) -> None:
    """out = 1 / (1 + exp(-x)), the seeds' formula, with -x capped so exp() cannot overflow.

    The cap, -log(tiny) (708.4 in float64, 87.3 in float32), makes the smallest result the
    dtype's smallest normal number (2.2e-308, 1.2e-38): below x = -708.4 the true value is
    smaller still, and denormal numbers, which slow every later operation, never appear.
    """
    np.negative(x, out=out)
    np.minimum(out, _exp_cap(out.dtype), out=out)
    np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)


@cache
def _exp_cap(dtype: np.dtype[Any]) -> Any:
    """-log of the smallest normal number of ``dtype``."""
    return -np.log(np.finfo(dtype).tiny)


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)) in a new array, without overflow."""
    out = np.empty_like(x)
    sigmoid_into(x, out)
    return out


class Sigmoid(Activation):
    """y = 1 / (1 + exp(-x)), computed without overflow; y' = y (1 - y)."""

    name = "sigmoid"
    derivative_from_output = True

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
        capped = ctx.node("Min", [ctx.node("Neg", [x]), ctx.constant(_exp_cap(ctx.dtype), "cap")])
        one = ctx.constant(1.0, "one")
        return str(ctx.node("Reciprocal", [ctx.node("Add", [ctx.node("Exp", [capped]), one])]))


class Tanh(Activation):
    """y = tanh(x); y' = 1 - y^2."""

    name = "tanh"
    derivative_from_output = True

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
    derivative_from_output = True
    backward_in_place = True

    def forward(self, x: Array) -> Array:
        return np.maximum(x, 0)

    def derivative(self, x: Array, y: Array) -> Array:
        return (x > 0).astype(x.dtype)

    def forward_into(self, x: Array, out: Array) -> None:
        np.maximum(x, 0, out=out)

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        np.multiply(dy, x > 0, out=out)  # reads dy before writing: out may be dy

    @property  # type: ignore[override]
    def fuses_bias(self) -> bool:
        """With numba, the bias of the linear layer before is added in the pass of the maximum
        (about 8% of an epoch of the moons network); not for a subclass computing another
        function, which the kernel would not."""
        own_maths = type(self).forward_into is ReLU.forward_into
        return own_maths and type(self).forward is ReLU.forward and kernels.available()

    def forward_bias_into(self, x: Array, bias: Array, out: Array) -> None:
        kernels.bias_relu(x, bias, out)

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Relu."""
        return str(ctx.node("Relu", [x]))


class LeakyReLU(Activation):
    """y = x where x > 0, else alpha x; y' = 1 where x > 0, else alpha."""

    name = "leaky_relu"
    derivative_from_output = True

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
    derivative_from_output = True
    backward_in_place = True

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
    return [Sigmoid, Tanh, ReLU, LeakyReLU, Identity]
