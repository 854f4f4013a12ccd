"""Built-in metrics, each equal to its ``sklearn.metrics`` function on the same predictions.

How predictions become classes (for ``accuracy``, ``precision``, ``recall``, ``f1``,
``roc_auc``) follows :mod:`microfw.train.metrics`: one output is class 1 at and above the
loss's decision threshold; one-hot targets (or class labels) compare the argmax, and the
positive class of the binary metrics is class 1; other 0/1 targets with several columns
(multi-label) are judged element by element (scikit-learn's ``average="micro"`` for
precision, recall and f1, ``average="macro"`` over the columns for roc_auc).
Every metric but ``roc_auc`` keeps counts and sums only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from microfw import Loss, Metric, hookimpl
from microfw.core.interfaces import Array
from microfw.train.metrics import Accuracy as _Rule
from microfw.train.metrics import accuracy_for

Bools = NDArray[np.bool_]


def _rule(name: str, loss: Loss, y_true: Array) -> _Rule:
    rule = accuracy_for(y_true, loss)
    if rule is None:
        raise ValueError(
            f"metric {name!r} scores classes: the targets must be 0/1 (one-hot rows, 0/1 "
            f"columns) or class labels, got values such as {np.unique(y_true)[:5].tolist()}"
        )
    return rule


def _positives(rule: _Rule, y_pred: Array, y_true: Array) -> tuple[Bools, Bools]:
    """(predicted positive, truly positive) booleans: class 1 of argmax, or each element."""
    if rule.threshold is None:
        return y_pred.argmax(axis=1) == 1, rule.targets(y_true) == 1
    return y_pred >= rule.threshold, y_true >= 0.5


class Accuracy(Metric):
    """correct / total: rows by argmax (one-hot targets, labels), else elements thresholded."""

    name = "accuracy"

    def start(self, loss: Loss, y_true: Array) -> None:
        self._rule = _rule(self.name, loss, y_true)
        self._correct = self._total = 0

    def update(self, y_pred: Array, y_true: Array) -> None:
        targets = self._rule.targets(y_true)
        self._correct += self._rule.correct(y_pred, targets)
        self._total += int(targets.size)

    def result(self) -> float:
        return self._correct / self._total if self._total else 0.0


class _Counts(Metric):
    """True positives, false positives and false negatives of class 1."""

    def start(self, loss: Loss, y_true: Array) -> None:
        self._rule = _rule(self.name, loss, y_true)
        self.tp = self.fp = self.fn = 0

    def update(self, y_pred: Array, y_true: Array) -> None:
        pred, true = _positives(self._rule, y_pred, y_true)
        self.tp += int(np.count_nonzero(pred & true))
        self.fp += int(np.count_nonzero(pred & ~true))
        self.fn += int(np.count_nonzero(~pred & true))


class Precision(_Counts):
    """tp / (tp + fp) of class 1 (0 when nothing is predicted positive, as scikit-learn)."""

    name = "precision"

    def result(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0


class Recall(_Counts):
    """tp / (tp + fn) of class 1 (0 when nothing is truly positive, as scikit-learn)."""

    name = "recall"

    def result(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


class F1(_Counts):
    """2 tp / (2 tp + fp + fn) of class 1, the harmonic mean of precision and recall."""

    name = "f1"

    def result(self) -> float:
        total = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / total if total else 0.0


class RocAuc(Metric):
    """P(score of a positive > score of a negative), ties counting 1/2: the ROC curve's area.

    Computed as Mann-Whitney U / (n_pos n_neg) over class 1's score.

    The exact area needs every score: this metric keeps the scores and targets it is shown.
    The score of one output is that output; of one-hot (or label) targets, output column 1
    (two classes only); multi-label columns are averaged (``average="macro"``).
    """

    name = "roc_auc"

    def start(self, loss: Loss, y_true: Array) -> None:
        self._rule = _rule(self.name, loss, y_true)
        self._scores: list[Array] = []
        self._truth: list[Array] = []

    def update(self, y_pred: Array, y_true: Array) -> None:
        if self._rule.threshold is None:
            if y_pred.shape[1] != 2:
                raise ValueError(
                    f"roc_auc scores two classes; the model has {y_pred.shape[1]} outputs"
                )
            scores, truth = y_pred[:, 1:2], (self._rule.targets(y_true) == 1)[:, None]
        else:
            scores, truth = y_pred, y_true >= 0.5
        self._scores.append(np.array(scores, dtype=np.float64))  # copies: batches are reused
        self._truth.append(np.array(truth))

    def result(self) -> float:
        scores, truth = np.concatenate(self._scores), np.concatenate(self._truth)
        return float(np.mean([_auc(scores[:, j], truth[:, j]) for j in range(scores.shape[1])]))


def _auc(scores: Array, positive: Any) -> float:
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "roc_auc is undefined when the targets hold one class only "
            f"({n_pos} positive, {n_neg} negative)"
        )
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2)[inverse]  # 1-based, ties share their mean rank
    u = float(np.sum(ranks[positive])) - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


class R2(Metric):
    """1 - sum((y - y_pred)^2) / sum((y - mean(y))^2) per output, averaged over outputs.

    ``r2_score``'s ``uniform_average``; an output with constant targets scores 1 if predicted
    exactly, else 0. Accumulated as counts, means and squared deviations, merged exactly.
    """

    name = "r2"

    def start(self, loss: Loss, y_true: Array) -> None:
        self._n = 0
        self._mean: Array = np.zeros(0)
        self._m2: Array = np.zeros(0)
        self._ss_res: Array = np.zeros(0)

    def update(self, y_pred: Array, y_true: Array) -> None:
        y = np.asarray(y_true, dtype=np.float64)
        m = y.shape[0]
        if m == 0:
            return
        mean = y.mean(axis=0)
        m2 = np.sum((y - mean) ** 2, axis=0)
        res = np.sum((y - y_pred) ** 2, axis=0)
        if self._n == 0:
            self._n, self._mean, self._m2, self._ss_res = m, mean, m2, res
            return
        n = self._n + m  # Chan et al.'s merge of two groups' squared deviations
        delta = mean - self._mean
        self._m2 = self._m2 + m2 + delta**2 * (self._n * m / n)
        self._mean = self._mean + delta * (m / n)
        self._ss_res = self._ss_res + res
        self._n = n

    def result(self) -> float:
        if self._n == 0:
            raise ValueError("r2 of no samples")
        safe = np.where(self._m2 > 0, self._m2, 1.0)
        r2 = np.where(self._m2 > 0, 1 - self._ss_res / safe, np.where(self._ss_res == 0, 1.0, 0.0))
        return float(np.mean(r2))


class MeanAbsoluteError(Metric):
    """mean(|y - y_pred|) over samples and outputs (``mean_absolute_error``)."""

    name = "mae"
    greater_is_better = False

    def start(self, loss: Loss, y_true: Array) -> None:
        self._sum = 0.0
        self._count = 0

    def update(self, y_pred: Array, y_true: Array) -> None:
        self._sum += float(np.sum(np.abs(np.subtract(y_true, y_pred, dtype=np.float64))))
        self._count += int(y_pred.size)

    def result(self) -> float:
        if not self._count:
            raise ValueError("mae of no samples")
        return self._sum / self._count


@hookimpl
def register_metrics() -> list[type[Metric]]:
    return [Accuracy, Precision, Recall, F1, RocAuc, R2, MeanAbsoluteError]
