"""Built-in element-wise activations."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from microfw import Activation, hookimpl
from microfw.interfaces import Array


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)) without overflow: exp(-|x|) is at most 1, the sign is folded back in."""
    e = np.exp(-np.abs(x))
    r = 1 / (1 + e)
    e *= r  # e / (1 + e), the value for x < 0
    return np.where(x >= 0, r, e)


class Sigmoid(Activation):
    """y = 1 / (1 + exp(-x)), computed without overflow; y' = y (1 - y)."""

    name = "sigmoid"

    def forward(self, x: Array) -> Array:
        return sigmoid(x)

    def derivative(self, x: Array, y: Array) -> Array:
        return y * (1 - y)


class Tanh(Activation):
    """y = tanh(x); y' = 1 - y^2."""

    name = "tanh"

    def forward(self, x: Array) -> Array:
        return np.tanh(x)

    def derivative(self, x: Array, y: Array) -> Array:
        return 1 - y * y


class ReLU(Activation):
    """y = max(x, 0); y' = 1 where x > 0, else 0 (0 at the kink x = 0)."""

    name = "relu"

    def forward(self, x: Array) -> Array:
        return np.maximum(x, 0)

    def derivative(self, x: Array, y: Array) -> Array:
        return (x > 0).astype(x.dtype)


class LeakyReLU(Activation):
    """y = x where x > 0, else alpha x; y' = 1 where x > 0, else alpha."""

    name = "leaky_relu"

    alpha: Annotated[float, Field(ge=0, lt=1)] = 0.01

    def forward(self, x: Array) -> Array:
        return np.where(x > 0, x, self.alpha * x)

    def derivative(self, x: Array, y: Array) -> Array:
        one, alpha = x.dtype.type(1), x.dtype.type(self.alpha)
        return np.where(x > 0, one, alpha)


class Identity(Activation):
    """y = x; y' = 1 (a linear output, e.g. for regression)."""

    name = "identity"

    def forward(self, x: Array) -> Array:
        return x

    def derivative(self, x: Array, y: Array) -> Array:
        return np.ones_like(x)


@hookimpl
def register_activations() -> list[type[Activation]]:
    return [Sigmoid, Tanh, ReLU, LeakyReLU, Identity]
