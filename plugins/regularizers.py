"""Built-in regularizers: Keras's penalties on a parameter array, added to the training loss.

Attach them per layer (``{"type": "linear", "units": 64, "kernel_regularizer": {"type": "l2",
"factor": 1e-4}}``). The model adds the penalty to every batch's loss and its gradient to the
array's gradient, so ``History``'s ``loss`` includes it, as in Keras.

scikit-learn's ``MLPClassifier(alpha=a)`` adds ``a / (2 n) * sum(W**2)`` over the weights (not
the biases) to a loss averaged over the ``n`` samples of the batch; with full batches
(``batch_size`` of the whole data set) ``l2`` with ``factor = a / (2 n)`` on every
``kernel_regularizer`` reproduces it exactly.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from microfw import Regularizer, hookimpl
from microfw.core.interfaces import Array

Factor = Annotated[float, Field(ge=0)]


class L1(Regularizer):
    """penalty = factor * sum(|w|); gradient factor * sign(w) (0 at w = 0)."""

    name = "l1"

    factor: Factor = 0.01

    def value(self, w: Array) -> float:
        return self.factor * float(np.abs(w).sum())

    def grad(self, w: Array) -> Array:
        return np.sign(w) * w.dtype.type(self.factor)


class L2(Regularizer):
    """penalty = factor * sum(w**2); gradient 2 factor w."""

    name = "l2"

    factor: Factor = 0.01

    def value(self, w: Array) -> float:
        flat = w.reshape(-1)
        return self.factor * float(np.dot(flat, flat))

    def grad(self, w: Array) -> Array:
        return w * w.dtype.type(2 * self.factor)


class L1L2(Regularizer):
    """penalty = l1 * sum(|w|) + l2 * sum(w**2); gradient l1 sign(w) + 2 l2 w."""

    name = "l1_l2"
    example_params = {"l1": 0.01, "l2": 0.01}

    l1: Factor = 0.0
    l2: Factor = 0.0

    def value(self, w: Array) -> float:
        flat = w.reshape(-1)
        return self.l1 * float(np.abs(flat).sum()) + self.l2 * float(np.dot(flat, flat))

    def grad(self, w: Array) -> Array:
        t = w.dtype.type
        return np.sign(w) * t(self.l1) + w * t(2 * self.l2)


@hookimpl
def register_regularizers() -> list[type[Regularizer]]:
    return [L1, L2, L1L2]
