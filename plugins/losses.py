"""Built-in losses."""

from __future__ import annotations

import numpy as np

from microfw import Loss, hookimpl
from microfw.interfaces import Array


class SquaredError(Loss):
    """L = 1/(2m) * sum((y_pred - y_true)^2) over samples and outputs (the seeds' cost)."""

    name = "squared_error"

    def value(self, y_pred: Array, y_true: Array) -> float:
        d = y_pred - y_true
        return float(np.vdot(d, d)) / (2 * y_pred.shape[0])

    def grad(self, y_pred: Array, y_true: Array) -> Array:
        return (y_pred - y_true) / y_pred.shape[0]


@hookimpl
def register_losses() -> list[type[Loss]]:
    return [SquaredError]
