"""Fusion rules of the built-in plugins: how they run faster together than one by one.

Keyed on exact classes (a subclass with its own maths is never fused). The planner reads them;
``microfw.testing.check_fusion`` compares each with the plain methods of its classes.

* ``linear`` followed by ``sigmoid``, ``tanh``, ``relu``, ``leaky_relu``, ``identity`` or
  ``relu6``: one step computes ``f(x W + b)`` in the linear layer's output buffer (with
  numba, ``relu`` adds the bias in its own pass), its gradient over the incoming one where
  the activation allows, and skips the input gradient of the first layer.
* ``linear`` on its own (before a softmax, a normalisation, dropout...): the same without
  an activation, so a first such layer skips its input gradient too.
* ``sigmoid`` + ``bce``, ``softmax`` + ``categorical_crossentropy`` and ``softmax`` +
  ``sparse_categorical_crossentropy``: the loss is computed from the logits, without
  clipping, with the exact gradient ``(p - y) / m``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from microfw import Activation, WorkBuffer, hookimpl
from microfw.core.fusions import Fusion, LossFusion, Rule, Step
from microfw.core.interfaces import Array

from . import kernels
from .activations import Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from .layers import Linear, Softmax
from .losses import BinaryCrossentropy, CategoricalCrossentropy, bce_from_logits, cce_from_logits
from .more_activations import ReLU6
from .more_losses import SparseCategoricalCrossentropy, sparse_cce_from_logits
from .ops import dense_backward, sigmoid, sigmoid_into, softmax_into


@dataclass(frozen=True)
class InPlace:
    """An activation computed over its input, its gradient from its output ``y``.

    ``forward(act, z)`` writes ``f(z)`` over ``z``; ``backward(act, y, dy, out)`` writes
    ``dy * f'`` into ``out``, which may be ``dy`` itself only when ``over_dy``;
    ``bias_forward(z, b)``, where given, writes ``f(z + b)`` over ``z`` in one pass.
    """

    forward: Callable[[Any, Array], object]
    backward: Callable[[Any, Array, Array, Array], object]
    over_dy: bool = False
    bias_forward: Callable[[Array, Array], object] | None = None


def _sigmoid_backward(act: Any, y: Array, dy: Array, out: Array) -> None:
    np.subtract(1, y, out=out)
    out *= y
    out *= dy


def _tanh_backward(act: Any, y: Array, dy: Array, out: Array) -> None:
    np.multiply(y, y, out=out)
    np.subtract(1, out, out=out)
    out *= dy


def _leaky_forward(act: Any, z: Array) -> None:
    np.maximum(z, act.alpha * z, out=z)  # alpha < 1: the larger of z and alpha z


def _leaky_backward(act: Any, y: Array, dy: Array, out: Array) -> None:
    np.greater(y, 0, out=out)  # y > 0 exactly where x > 0 (alpha >= 0)
    out *= 1 - act.alpha
    out += act.alpha
    out *= dy


def _relu_bias(z: Array, b: Array) -> None:
    kernels.bias_relu(z, b, z)


def _copy(act: Any, y: Array, dy: Array, out: Array) -> None:
    if out is not dy:
        np.copyto(out, dy)


def _relu6_forward(act: Any, z: Array) -> None:
    np.clip(z, 0, 6, out=z)


def _relu6_backward(act: Any, y: Array, dy: Array, out: Array) -> None:
    # 0 < y < 6 exactly where 0 < x < 6: the derivative follows from the output.
    np.multiply(dy, (y > 0) & (y < 6), out=out)


IN_PLACE: dict[type[Activation], InPlace] = {
    Sigmoid: InPlace(lambda a, z: sigmoid_into(z, z), _sigmoid_backward),
    Tanh: InPlace(lambda a, z: np.tanh(z, out=z), _tanh_backward),
    ReLU: InPlace(
        lambda a, z: np.maximum(z, 0, out=z),
        lambda a, y, dy, out: np.multiply(dy, y > 0, out=out),
        over_dy=True,
        bias_forward=_relu_bias,
    ),
    LeakyReLU: InPlace(_leaky_forward, _leaky_backward),
    Identity: InPlace(lambda a, z: None, _copy, over_dy=True),
    ReLU6: InPlace(_relu6_forward, _relu6_backward, over_dy=True),
}
"""The built-in activations whose derivative follows from their output, run in place."""


class DenseActivation(Step):
    """``y = f(x W + b)`` in the linear layer's buffer; backward writes ``dW``, ``db``, ``dx``."""

    grad_is_scratch = True  # dx is a buffer this step never reads

    def __init__(self, linear: Linear, activation: Activation, ops: InPlace) -> None:
        self.linear, self.activation, self.ops = linear, activation, ops
        self._bias_forward = ops.bias_forward if kernels.available() else None
        self._z, self._dz, self._dx = WorkBuffer(), WorkBuffer(), WorkBuffer()

    def forward(self, x: Array) -> Array:
        layer = self.linear
        z = self._z.get((x.shape[0], layer.units), layer.W.dtype)
        np.matmul(x, layer.W, out=z)
        if layer.b is not None and self._bias_forward is not None:
            self._bias_forward(z, layer.b)
        else:
            if layer.b is not None:
                z += layer.b
            self.ops.forward(self.activation, z)
        self._x, self._y = x, z
        return z

    def backward(self, dy: Array) -> Array:
        layer = self.linear
        over = self.dy_is_scratch and self.ops.over_dy
        dz = dy if over else self._dz.get(dy.shape, dy.dtype)
        self.ops.backward(self.activation, self._y, dy, dz)
        dx = dense_backward(
            self._x, dz, layer.W, layer.dW, layer.db, self._dx if self.needs_input_grad else None
        )
        return dy if dx is None else dx


class Dense(Step):
    """``y = x W + b``, as :class:`Linear` computes it; backward skips ``dx`` where unread."""

    grad_is_scratch = True  # dx is a buffer this step never reads

    def __init__(self, linear: Linear) -> None:
        self.linear = linear
        self._y, self._dx = WorkBuffer(), WorkBuffer()

    def forward(self, x: Array) -> Array:
        layer = self.linear
        y = self._y.get((x.shape[0], layer.units), layer.W.dtype)
        np.matmul(x, layer.W, out=y)
        if layer.b is not None:
            y += layer.b
        self._x = x
        return y

    def backward(self, dy: Array) -> Array:
        layer = self.linear
        dx = dense_backward(
            self._x, dy, layer.W, layer.dW, layer.db, self._dx if self.needs_input_grad else None
        )
        return dy if dx is None else dx


def _dense(ops: InPlace) -> Callable[[Sequence[Any]], Step]:
    def step(plugins: Sequence[Any]) -> Step:
        linear, activation = plugins
        return DenseActivation(linear, activation, ops)

    return step


def _softmax(layer: Softmax, z: Array) -> Array:
    p = np.empty_like(z)
    softmax_into(z, p, WorkBuffer())
    return p


def _bce_from_logits(loss: BinaryCrossentropy, z: Array, p: Array, y: Array) -> tuple[float, Array]:
    """sigmoid + bce from the logits ``z``; ``from_logits`` switched on after the model planned
    would make this differ from the plain plan, so it is refused."""
    if loss.from_logits:
        raise ValueError(
            "bce's from_logits was switched on after the model planned its fusions; "
            "assign model.loss again to plan anew"
        )
    return bce_from_logits(z, p, y, z.size if loss.reduction == "mean" else z.shape[0])


@hookimpl
def register_fusions() -> list[Rule]:
    rules: list[Rule] = [
        Fusion((Linear, activation), _dense(ops)) for activation, ops in IN_PLACE.items()
    ]
    rules.append(Fusion((Linear,), lambda plugins: Dense(plugins[0])))
    rules.append(
        LossFusion(
            Sigmoid,
            BinaryCrossentropy,
            forward=lambda act, z: sigmoid(z),
            value_and_grad=_bce_from_logits,
            applies=lambda act, loss: not loss.from_logits,
        )
    )
    rules.append(
        LossFusion(
            Softmax,
            CategoricalCrossentropy,
            forward=_softmax,
            value_and_grad=lambda loss, z, p, y: cce_from_logits(z, p, y),
        )
    )
    rules.append(
        LossFusion(
            Softmax,
            SparseCategoricalCrossentropy,
            forward=_softmax,
            value_and_grad=lambda loss, z, p, y: sparse_cce_from_logits(z, p, y),
        )
    )
    return rules
