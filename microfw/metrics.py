"""Accuracy, computed the same way for every loss.

Accuracy applies when every target is 0 or 1. With one output column, a prediction is class 1
when the output is ``>= loss.decision_threshold()`` (0.5 for probabilities; a loss computed
from logits returns 0.0). With several columns, one-hot targets (each row sums to 1) compare
the argmax of outputs and targets; other 0/1 targets (multi-label) are thresholded element by
element and accuracy is the fraction of correct elements.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from microfw.interfaces import Array, Loss

Accuracy = Callable[[Array, Array], float]
"""``accuracy(y_pred, y_true)``: the fraction of correct predictions in a batch."""


def accuracy_function(y_true: Array, loss: Loss) -> Accuracy | None:
    """The accuracy fitting targets ``y_true`` ``(n_samples, n_outputs)``, or None if not 0/1."""
    if y_true.size == 0 or not np.isin(y_true, (0, 1)).all():
        return None
    threshold = loss.decision_threshold()
    if y_true.shape[1] > 1 and (y_true.sum(axis=1) == 1).all():
        return _argmax_accuracy

    def thresholded(y_pred: Array, y: Array) -> float:
        return np.count_nonzero((y_pred >= threshold) == y) / y.size

    return thresholded


def _argmax_accuracy(y_pred: Array, y: Array) -> float:
    return np.count_nonzero(y_pred.argmax(axis=1) == y.argmax(axis=1)) / y.shape[0]
