"""A third-party microfw plugin: the ``softsign`` activation.

Installed, it is found through the ``microfw`` entry-point group declared in this package's
``pyproject.toml``; microfw calls :func:`register_activations` the first time a name is looked up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import microfw
from microfw import Array

__version__ = "0.1.0"


class Softsign(microfw.Activation):
    """y = x / (1 + |x|); y' = 1 / (1 + |x|)^2."""

    name = "softsign"
    output_range = (-1.0, 1.0)  # metadata for microfw's spec linter (microfw validate)

    def forward(self, x: Array) -> Array:
        return x / (1 + np.abs(x))

    def derivative(self, x: Array, y: Array) -> Array:
        return 1 / np.square(1 + np.abs(x))

    def to_onnx(self, ctx: Any, x: str) -> str:
        """Optional ONNX mapping (microfw.onnx.export): Div(x, Add(Abs(x), 1))."""
        denominator = ctx.node("Add", [ctx.node("Abs", [x]), ctx.constant(1.0, "one")])
        return str(ctx.node("Div", [x, denominator]))


@microfw.hookimpl
def register_activations() -> list[type[microfw.Activation]]:
    return [Softsign]
