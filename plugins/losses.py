"""Built-in losses. ``m`` is the number of samples, ``k`` the number of outputs."""

from __future__ import annotations

import abc
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from microfw import Loss, hookimpl
from microfw.core.interfaces import Array

from .ops import logsumexp_rows, row_sum, sigmoid

Eps = Annotated[float, Field(gt=0, lt=0.5)]
Reduction = Literal["mean", "sum_over_outputs"]
"""How a loss reduces its element terms: ``mean`` over every element (``1/(m k)``), or
``sum_over_outputs`` (a sum over the ``k`` outputs, a mean over the ``m`` samples: ``1/m``),
scikit-learn's multi-output definition in its MLPs."""


def _divisor(y_pred: Array, reduction: str) -> int:
    """``m k`` for ``mean``, ``m`` for ``sum_over_outputs``."""
    return int(y_pred.size) if reduction == "mean" else int(y_pred.shape[0])


class _ValueAndGrad(Loss):
    """A loss written as one ``value_and_grad``, which shares work between the two."""

    def value(self, y_pred: Array, y_true: Array) -> float:
        return self.value_and_grad(y_pred, y_true)[0]

    def grad(self, y_pred: Array, y_true: Array) -> Array:
        return self.value_and_grad(y_pred, y_true)[1]

    @abc.abstractmethod
    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]: ...


class SquaredError(_ValueAndGrad):
    """L = 1/(2m) * sum((y_pred - y_true)^2) over samples and outputs (the seeds' cost).

    ``reduction="sum_over_outputs"`` (the default) is that formula: a sum over outputs, a
    mean over samples, whose gradient ``(y_pred - y_true) / m`` is the one scikit-learn's
    ``MLPRegressor`` steps with (its reported ``loss_`` divides by ``k`` once more).
    ``reduction="mean"``: 1/(2 m k) * sum, the mean over every element.
    """

    name = "squared_error"

    reduction: Reduction = "sum_over_outputs"

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        m = _divisor(y_pred, self.reduction)
        g = np.subtract(y_pred, y_true, dtype=y_pred.dtype)
        value = float(np.vdot(g, g)) / (2 * m)
        g /= m
        return value, g


class BinaryCrossentropy(_ValueAndGrad):
    """L = -mean(y log p + (1-y) log(1-p)) over samples and outputs, p clipped to [eps, 1-eps].

    With ``from_logits`` the predictions are logits z and the stable form
    mean(max(z, 0) - z y + log1p(exp(-|z|))) is used, with gradient (sigmoid(z) - y) / (m k).
    From probabilities, the gradient (p - y) / (p (1 - p) m k) uses the clipped p, so saturated
    outputs still receive a finite gradient (exact inside the clip range). After the built-in
    ``sigmoid``, a fusion rule computes the loss from the sigmoid's input instead, without
    clipping: the value and gradient (p - y) / (m k) of ``from_logits``, exact however wrong a
    sample is (PyTorch's ``binary_cross_entropy_with_logits``, Keras's ``from_logits=True``).

    ``reduction="sum_over_outputs"`` divides by ``m`` instead of ``m k`` (a sum over outputs,
    a mean over samples): scikit-learn's ``MLPClassifier`` loss on multilabel targets.
    """

    name = "bce"
    prediction_range = (0.0, 1.0)
    expects = "probability"

    eps: Eps = 1e-7
    from_logits: bool = False
    reduction: Reduction = "mean"

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        n = _divisor(y_pred, self.reduction)
        if self.from_logits:
            return bce_from_logits(y_pred, sigmoid(y_pred), y_true, n)
        p = np.clip(y_pred, self.eps, 1 - self.eps)
        value = _bce_value(p, y_true, n)
        g = np.subtract(p, y_true, dtype=p.dtype)
        p *= 1 - p
        p *= n
        g /= p
        return value, g

    def check_targets(self, y_true: Array) -> None:
        _check_in_range(self.name, y_true, 0.0, 1.0)

    def decision_threshold(self) -> float:
        return 0.0 if self.from_logits else 0.5

    def expected_range(self) -> tuple[float, float] | None:
        return None if self.from_logits else self.prediction_range


class CategoricalCrossentropy(_ValueAndGrad):
    """L = -1/m * sum(y log p) over samples and classes, p clipped to [eps, 1-eps].

    Targets are one-hot rows or class probabilities. The gradient -y / (p m) uses the clipped p.
    After the built-in ``softmax``, a fusion rule computes the loss from the logits z instead,
    without clipping: -1/m sum(y (z - logsumexp(z))) with gradient (p sum(y) - y) / m, as
    PyTorch's ``cross_entropy`` on logits (with probability targets) computes it.
    """

    name = "categorical_crossentropy"
    prediction_range = (0.0, 1.0)
    expects = "distribution"

    eps: Eps = 1e-7

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        m = y_pred.shape[0]
        p = np.clip(y_pred, self.eps, 1 - self.eps)
        value = _cce_value(p, y_true)
        p *= -m
        return value, np.divide(y_true, p, dtype=p.dtype)

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


def bce_from_logits(z: Array, p: Array, y: Array, n: int) -> tuple[float, Array]:
    """sum(max(z, 0) - z y + log1p(exp(-|z|))) / n and its gradient (p - y) / n, p =
    sigmoid(z); ``n`` is ``z.size`` for the mean."""
    terms = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    g = np.subtract(p, y, dtype=p.dtype)
    g /= n
    return float(np.sum(terms)) / n, g


def cce_from_logits(z: Array, p: Array, y: Array) -> tuple[float, Array]:
    """-1/m sum(y (z - logsumexp(z))) and its gradient (p sum(y) - y) / m, p = softmax(z)."""
    m = z.shape[0]
    totals = row_sum(y, np.empty(m, p.dtype))
    value = (float(np.vdot(totals, logsumexp_rows(z))) - float(np.vdot(y, z))) / m
    g = np.multiply(p, totals[:, None], dtype=p.dtype)
    g -= y
    g /= m
    return value, g


def _bce_value(p: Array, y: Array, n: int) -> float:
    """-sum(y log p + (1 - y) log(1 - p)) / n, for p already within the clip range."""
    return -float(np.vdot(y, np.log(p)) + np.vdot(1 - y, np.log1p(-p))) / n


def _cce_value(p: Array, y: Array) -> float:
    """-1/m sum(y log p), for p already within the clip range."""
    return -float(np.vdot(y, np.log(p))) / int(p.shape[0])


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
    from .more_losses import LOSSES

    return [SquaredError, BinaryCrossentropy, CategoricalCrossentropy, *LOSSES]
