"""Accuracy, computed the same way for every loss, and the metrics a spec chooses.

Accuracy applies when every target is 0 or 1. With one output column, a prediction is class 1
when the output is ``>= loss.decision_threshold()`` (0.5 for probabilities; a loss computed
from logits returns 0.0). With several columns, one-hot targets (each row sums to 1) compare
the argmax of outputs and targets; other 0/1 targets (multi-label) are thresholded element by
element and accuracy is the fraction of correct elements. A loss on integer class labels
(:meth:`~microfw.Loss.target_dim` 1) compares the argmax of the outputs with the labels.

Without ``metrics`` in the spec's training section, ``fit`` and ``evaluate`` report this
accuracy where it applies; with ``metrics``, exactly the :class:`~microfw.Metric` plugins
listed (:func:`create_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from microfw.core.interfaces import Array, Loss, Metric
from microfw.core.registry import Registry

Targets = NDArray[Any]
"""Targets as :meth:`Accuracy.correct` compares them: integer class labels or booleans."""


@dataclass(frozen=True)
class Accuracy:
    """Counts correct predictions against targets prepared once by :meth:`targets`.

    ``threshold`` None means argmax over columns (one-hot targets).
    """

    threshold: float | None
    labels: bool = False
    """Targets are one column of integer class labels (argmax of the outputs compared)."""

    def targets(self, y_true: Array) -> Targets:
        """The targets in the form :meth:`correct` compares with: labels or booleans."""
        if self.labels:
            return y_true[:, 0].astype(np.intp)
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
    """The accuracy fitting targets ``y_true`` ``(n_samples, n_outputs)``, or None if not 0/1
    (nor class labels of a loss taking them)."""
    if y_true.size and is_label_loss(loss) and y_true.shape[1] == 1:
        labels = y_true[:, 0]
        if (labels >= 0).all() and (labels == np.round(labels)).all():
            return Accuracy(None, labels=True)
        return None
    if y_true.size == 0 or not np.isin(y_true, (0, 1)).all():
        return None
    if y_true.shape[1] > 1 and (y_true.sum(axis=1) == 1).all():
        return Accuracy(None)
    return Accuracy(loss.decision_threshold())


def is_label_loss(loss: Loss) -> bool:
    """Whether ``loss`` takes one column of class labels for several outputs."""
    return loss.target_dim(2) == 1


def create_metrics(registry: Registry, refs: list[Any]) -> list[Metric]:
    """The :class:`~microfw.Metric` plugins named by ``refs`` (names or ``{"type": ...}``)."""
    return [cast(Metric, registry.create("metric", ref)) for ref in refs]


def scores(metrics: list[Metric], prefix: str = "") -> dict[str, float]:
    """``{prefix + name: result}`` of every metric."""
    return {prefix + m.name: float(m.result()) for m in metrics}
