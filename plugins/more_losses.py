"""More losses: ``mse``, ``mae``, ``huber`` and ``sparse_categorical_crossentropy``.

``m`` is the number of samples, ``k`` the number of outputs, ``n = m k`` the number of
elements. Each value is torch's (``MSELoss``, ``L1Loss``, ``HuberLoss``, ``cross_entropy``
with class-index targets) with its default ``reduction="mean"``.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from microfw.core.interfaces import Array, Loss

from .losses import _ValueAndGrad
from .ops import logsumexp_rows

Eps = Annotated[float, Field(gt=0, lt=0.5)]


class MSE(_ValueAndGrad):
    """L = 1/n sum((y_pred - y_true)^2), the mean over every element (torch MSELoss, Keras)."""

    name = "mse"

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        n = y_pred.size
        g = np.subtract(y_pred, y_true, dtype=y_pred.dtype)
        value = float(np.vdot(g, g)) / n
        g *= 2 / n
        return value, g


class MAE(_ValueAndGrad):
    """L = 1/n sum(|y_pred - y_true|); gradient sign(y_pred - y_true) / n (0 where equal)."""

    name = "mae"

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        n = y_pred.size
        d = np.subtract(y_pred, y_true, dtype=y_pred.dtype)
        value = float(np.sum(np.abs(d))) / n
        g = np.sign(d)
        g /= n
        return value, g


class Huber(_ValueAndGrad):
    """L = 1/n sum(d^2/2 where |d| <= delta, else delta (|d| - delta/2)), d = y_pred - y_true.

    torch's HuberLoss; the gradient is clip(d, -delta, delta) / n.
    """

    name = "huber"

    delta: Annotated[float, Field(gt=0)] = 1.0

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        n = y_pred.size
        d = np.subtract(y_pred, y_true, dtype=y_pred.dtype)
        a = np.abs(d)
        terms = np.where(a <= self.delta, 0.5 * d * d, self.delta * (a - 0.5 * self.delta))
        value = float(np.sum(terms)) / n
        g = np.clip(d, -self.delta, self.delta)
        g /= n
        return value, g


class SparseCategoricalCrossentropy(_ValueAndGrad):
    """L = -1/m sum_i log p[i, y_i] for integer labels y_i, p clipped to [eps, 1 - eps].

    Targets are ``(m, 1)`` class labels ``0 .. k-1`` (a 1-D ``y`` is that column); predictions
    ``(m, k)`` probabilities. The gradient -1 / (p[i, y_i] m) at the label uses the clipped p.
    After the built-in ``softmax``, a fusion rule computes the loss from the logits z, without
    clipping: -1/m sum(z[i, y_i] - logsumexp(z_i)), gradient (p - onehot(y)) / m, as torch's
    ``cross_entropy`` with class indices.
    """

    name = "sparse_categorical_crossentropy"
    prediction_range = (0.0, 1.0)
    expects = "distribution"

    eps: Eps = 1e-7

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        m = y_pred.shape[0]
        rows, labels = np.arange(m), labels_of(y_true, y_pred.shape[1], self.name)
        p = np.clip(y_pred[rows, labels], self.eps, 1 - self.eps)
        value = -float(np.sum(np.log(p))) / m
        g = np.zeros_like(y_pred)
        g[rows, labels] = -1 / (p * m)
        return value, g

    def target_dim(self, n_outputs: int) -> int:
        return 1

    def check_output_dim(self, n_outputs: int) -> None:
        if n_outputs < 2:
            raise ValueError(
                f"{self.name} needs at least 2 outputs (one per class), got {n_outputs}; "
                "for two classes with a single sigmoid output use 'bce'"
            )

    def check_targets(self, y_true: Array) -> None:
        y = np.asarray(y_true)
        bad = ~((y >= 0) & (y == np.round(y)))  # also flags NaN
        if bad.any():
            examples = np.unique(y[bad])[:5].tolist()
            raise ValueError(
                f"{self.name} targets must be integer class labels 0, 1, ...; "
                f"{int(bad.sum())} value(s) are not, e.g. {examples}"
            )


def labels_of(y_true: Array, k: int, name: str) -> NDArray[np.intp]:
    """The integer labels of a ``(m, 1)`` (or ``(m,)``) target array, checked to be < ``k``."""
    labels = np.asarray(y_true).reshape(-1).astype(np.intp)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        bad = labels[(labels < 0) | (labels >= k)]
        raise ValueError(
            f"{name}: class labels must lie in 0 .. {k - 1} for a model with {k} outputs; "
            f"{bad.size} do not, e.g. {np.unique(bad)[:5].tolist()}"
        )
    return labels


def sparse_cce_from_logits(z: Array, p: Array, y: Array) -> tuple[float, Array]:
    """-1/m sum(z[i, y_i] - logsumexp(z_i)) and its gradient (p - onehot(y)) / m."""
    m = z.shape[0]
    rows, labels = np.arange(m), labels_of(y, z.shape[1], "sparse_categorical_crossentropy")
    value = (float(np.sum(logsumexp_rows(z))) - float(np.sum(z[rows, labels]))) / m
    g = np.array(p, dtype=p.dtype)
    g[rows, labels] -= 1
    g /= m
    return value, g


LOSSES: list[type[Loss]] = [MSE, MAE, Huber, SparseCategoricalCrossentropy]
