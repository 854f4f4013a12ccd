"""Built-in losses. ``m`` is the number of samples, ``k`` the number of outputs."""

from __future__ import annotations

import abc
from typing import Annotated

import numpy as np
from pydantic import Field

from microfw import ActivationLayer, Layer, Loss, hookimpl
from microfw.core.interfaces import Array

from . import kernels
from .activations import Sigmoid, sigmoid
from .layers import Softmax, row_sum

Eps = Annotated[float, Field(gt=0, lt=0.5)]


class _ValueAndGrad(Loss):
    """A loss written as one ``value_and_grad``, which shares work between the two."""

    def value(self, y_pred: Array, y_true: Array) -> float:
        return self.value_and_grad(y_pred, y_true)[0]

    def grad(self, y_pred: Array, y_true: Array) -> Array:
        return self.value_and_grad(y_pred, y_true)[1]

    @abc.abstractmethod
    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]: ...


class SquaredError(_ValueAndGrad):
    """L = 1/(2m) * sum((y_pred - y_true)^2) over samples and outputs (the seeds' cost)."""

    name = "squared_error"

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        m = y_pred.shape[0]
        g = np.subtract(y_pred, y_true, dtype=y_pred.dtype)
        value = float(np.vdot(g, g)) / (2 * m)
        g /= m
        return value, g


class BinaryCrossentropy(_ValueAndGrad):
    """L = -mean(y log p + (1-y) log(1-p)) over samples and outputs, p clipped to [eps, 1-eps].

    With ``from_logits`` the predictions are logits z and the stable form
    mean(max(z, 0) - z y + log1p(exp(-|z|))) is used, with gradient (sigmoid(z) - y) / (m k).
    From probabilities, the gradient (p - y) / (p (1 - p) m k) uses the clipped p, so saturated
    outputs still receive a finite gradient (exact inside the clip range).
    """

    name = "bce"

    eps: Eps = 1e-7
    from_logits: bool = False

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        n = y_pred.size
        if self.from_logits:
            z = y_pred
            terms = np.maximum(z, 0) - z * y_true + np.log1p(np.exp(-np.abs(z)))
            g = sigmoid(z)
            g -= y_true
            g /= n
            return float(np.sum(terms)) / n, g
        p = np.clip(y_pred, self.eps, 1 - self.eps)
        value = _bce_value(p, y_true)
        g = np.subtract(p, y_true, dtype=p.dtype)
        p *= 1 - p
        p *= n
        g /= p
        return value, g

    def fuses_with(self, layer: Layer) -> bool:
        """From probabilities, after the built-in sigmoid, with bce's own value and gradient
        (a subclass computing another loss is not fused)."""
        return (
            not self.from_logits
            and type(self).value_and_grad is BinaryCrossentropy.value_and_grad
            and isinstance(layer, ActivationLayer)
            and type(layer.activation) is Sigmoid
        )

    def fused_value_and_grad(
        self, layer: Layer, y_pred: Array, y_true: Array
    ) -> tuple[float, Array] | None:
        """With p = sigmoid(z): dL/dz = (p - y) / n, the two gradients' factors p (1 - p)
        cancelling. Declined when a p is clipped, where the unfused gradient differs."""
        p = y_pred
        # from_logits may be switched on after the model decided to fuse: decline then.
        if self.from_logits or p.min() < self.eps or p.max() > 1 - self.eps:
            return None
        g = np.subtract(p, y_true, dtype=p.dtype)
        g /= p.size
        return _bce_value(p, y_true), g

    def check_targets(self, y_true: Array) -> None:
        _check_in_range(self.name, y_true, 0.0, 1.0)

    def decision_threshold(self) -> float:
        return 0.0 if self.from_logits else 0.5


class CategoricalCrossentropy(_ValueAndGrad):
    """L = -1/m * sum(y log p) over samples and classes, p clipped to [eps, 1-eps].

    Targets are one-hot rows or class probabilities. The gradient -y / (p m) uses the clipped p.
    """

    name = "categorical_crossentropy"

    eps: Eps = 1e-7

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        m = y_pred.shape[0]
        p = np.clip(y_pred, self.eps, 1 - self.eps)
        value = _cce_value(p, y_true)
        p *= -m
        return value, np.divide(y_true, p, dtype=p.dtype)

    def fuses_with(self, layer: Layer) -> bool:
        """After the built-in softmax layer, with this loss's own value and gradient (a
        subclass computing another loss is not fused)."""
        return (
            type(self).value_and_grad is CategoricalCrossentropy.value_and_grad
            and type(layer) is Softmax
        )

    def fused_value_and_grad(
        self, layer: Layer, y_pred: Array, y_true: Array
    ) -> tuple[float, Array] | None:
        """With p = softmax(z): dL/dz = (p s - y) / m, s the row sums of y (1 for one-hot
        rows). Declined when a p facing a non-zero target is clipped (elsewhere clipping does
        not reach the gradient)."""
        p, eps = y_pred, self.eps
        if kernels.available():  # one compiled pass, a log per non-zero target
            grad = np.empty_like(p)
            value = kernels.softmax_crossentropy(p, y_true, eps, grad)
            return None if value is None else (value, grad)
        clipped = p.min() < eps or p.max() > 1 - eps
        if clipped and np.any((y_true != 0) & ((p < eps) | (p > 1 - eps))):
            return None
        m = p.shape[0]
        value = _cce_value(np.clip(p, eps, 1 - eps) if clipped else p, y_true)
        g = np.multiply(p, row_sum(y_true, np.empty(m, p.dtype))[:, None], dtype=p.dtype)
        g -= y_true
        g /= m
        return value, g

    def check_output_dim(self, n_outputs: int) -> None:
        if n_outputs < 2:
            raise ValueError(
                f"{self.name} needs at least 2 outputs (one per class), got {n_outputs}; "
                "for two classes with a single sigmoid output use 'bce'"
            )

    def check_targets(self, y_true: Array) -> None:
        _check_in_range(self.name, y_true, 0.0, 1.0)
        sums = np.sum(y_true, axis=-1)
        bad = np.flatnonzero(np.abs(sums - 1) > 1e-6)
        if bad.size:
            raise ValueError(
                f"{self.name} targets must be one-hot rows or probabilities summing to 1; "
                f"{bad.size} row(s) do not, e.g. row {bad[0]} sums to {sums.flat[bad[0]]:g} "
                f"({np.asarray(y_true)[bad[0]].tolist()})"
            )


def _bce_value(p: Array, y: Array) -> float:
    """-mean(y log p + (1 - y) log(1 - p)), for p already within the clip range."""
    return -float(np.vdot(y, np.log(p)) + np.vdot(1 - y, np.log1p(-p))) / p.size


def _cce_value(p: Array, y: Array) -> float:
    """-1/m sum(y log p), for p already within the clip range."""
    return -float(np.vdot(y, np.log(p))) / p.shape[0]


def _check_in_range(name: str, y: Array, low: float, high: float) -> None:
    y = np.asarray(y)
    bad = ~((y >= low) & (y <= high))  # also flags NaN
    if bad.any():
        examples = np.unique(y[bad])[:5].tolist()
        raise ValueError(
            f"{name} targets must lie in [{low:g}, {high:g}]; {int(bad.sum())} value(s) do not, "
            f"e.g. {examples}"
        )


@hookimpl
def register_losses() -> list[type[Loss]]:
    return [SquaredError, BinaryCrossentropy, CategoricalCrossentropy]
