"""Built-in element-wise activations."""

from __future__ import annotations

import numpy as np

from microfw import Activation, hookimpl
from microfw.interfaces import Array


class Sigmoid(Activation):
    """y = 1 / (1 + exp(-x)), computed without overflow; y' = y (1 - y)."""

    name = "sigmoid"

    def forward(self, x: Array) -> Array:
        # exp(-|x|) never overflows; fold the sign back in.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))

    def derivative(self, x: Array, y: Array) -> Array:
        return y * (1 - y)


class ReLU(Activation):
    """y = max(x, 0); y' = 1 where x > 0, else 0."""

    name = "relu"

    def forward(self, x: Array) -> Array:
        return np.maximum(x, 0)

    def derivative(self, x: Array, y: Array) -> Array:
        return (x > 0).astype(x.dtype)


@hookimpl
def register_activations() -> list[type[Activation]]:
    return [Sigmoid, ReLU]
