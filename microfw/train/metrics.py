"""Accuracy, computed the same way for every loss.

Accuracy applies when every target is 0 or 1. With one output column, a prediction is class 1
when the output is ``>= loss.decision_threshold()`` (0.5 for probabilities; a loss computed
from logits returns 0.0). With several columns, one-hot targets (each row sums to 1) compare
the argmax of outputs and targets; other 0/1 targets (multi-label) are thresholded element by
element and accuracy is the fraction of correct elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from microfw.core.interfaces import Array, Loss

Targets = NDArray[Any]
"""Targets as :meth:`Accuracy.correct` compares them: integer class labels or booleans."""


@dataclass(frozen=True)
class Accuracy:
    """Counts correct predictions against targets prepared once by :meth:`targets`.

    ``threshold`` None means argmax over columns (one-hot targets).
    """

    threshold: float | None

    def targets(self, y_true: Array) -> Targets:
        """The targets in the form :meth:`correct` compares with: labels or booleans."""
        return y_true.argmax(axis=1) if self.threshold is None else y_true >= 0.5

    def correct(self, y_pred: Array, targets: Targets) -> int:
        """How many rows (argmax) or elements (threshold) of ``y_pred`` are right."""
        if self.threshold is None:
            return int(np.count_nonzero(y_pred.argmax(axis=1) == targets))
        return int(np.count_nonzero((y_pred >= self.threshold) == targets))

    def __call__(self, y_pred: Array, y_true: Array) -> float:
        """The fraction of correct predictions."""
        targets = self.targets(y_true)
        return self.correct(y_pred, targets) / targets.size


def accuracy_for(y_true: Array, loss: Loss) -> Accuracy | None:
    """The accuracy fitting targets ``y_true`` ``(n_samples, n_outputs)``, or None if not 0/1."""
    if y_true.size == 0 or not np.isin(y_true, (0, 1)).all():
        return None
    if y_true.shape[1] > 1 and (y_true.sum(axis=1) == 1).all():
        return Accuracy(None)
    return Accuracy(loss.decision_threshold())
