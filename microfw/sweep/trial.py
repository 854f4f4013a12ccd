"""One trial: build a spec, train it on data loaded once, return plain results.

The same function runs in the sweep's own process, in a local worker process and in a Ray
task; it returns only plain data (numbers, strings, the model file's bytes).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import microfw as mf
from microfw.nn.modelfile import to_bytes

Reporter = Callable[[int, int, float], bool]
"""``report(trial_number, epoch, value) -> stop``: a value of the objective after an epoch;
True asks the trial to stop (pruned)."""


@dataclass(frozen=True)
class TrialData:
    """Training and (optional) validation rows, split once for the whole sweep."""

    X: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]
    X_val: np.ndarray[Any, Any] | None
    y_val: np.ndarray[Any, Any] | None
    source: str


def load_trial_data(
    path: str, target: str | None, validation_split: float | None, seed: int
) -> TrialData:
    """Read a data file (as ``microfw fit`` does) and hold out ``validation_split`` of its
    rows, drawn from ``seed``: the same rows in every worker and every trial."""
    from microfw.data import load_data

    data = load_data(path, target)
    assert data.y is not None
    if not validation_split:
        return TrialData(data.X, data.y, None, None, data.source)
    n = len(data.X)
    n_val = round(n * validation_split)
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"{path}: validation_split {validation_split} of {n} rows leaves no "
            "training or no validation rows"
        )
    order = np.random.default_rng(np.random.SeedSequence([seed, 1])).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return TrialData(data.X[train], data.y[train], data.X[val], data.y[val], data.source)


def shaped_targets(data: TrialData, model: mf.Sequential) -> tuple[Any, Any]:
    """The targets as the model needs them (one-hot for integer labels), checked."""
    from microfw.data import Dataset, check_features, targets_for

    names = tuple(f"x{i + 1}" for i in range(data.X.shape[1]))
    train = Dataset(data.X, data.y, data.source, names)
    check_features(train, model.input_dim)
    y = targets_for(train, model.output_dim, model.loss)
    if data.X_val is None:
        return y, None
    val = Dataset(data.X_val, data.y_val, data.source, names)
    return y, targets_for(val, model.output_dim, model.loss)


class _Report(mf.Callback):
    """Report the objective every ``every`` epochs; stop training when told to."""

    def __init__(self, number: int, metric: str, every: int, report: Reporter) -> None:
        self.number, self.metric, self.every, self.report = number, metric, every, report
        self.pruned = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if (epoch + 1) % self.every or self.metric not in logs:
            return
        if self.report(self.number, epoch, float(logs[self.metric])) and not self.pruned:
            self.pruned = True
            self.model.stop_training = True


def run_trial(
    task: Mapping[str, Any], data: TrialData, report: Reporter | None = None
) -> dict[str, Any]:
    """Train the spec of ``task`` (``number``, ``spec``, ``metric``, ``report_every``) on
    ``data``; return its state (``complete``, ``pruned`` or ``fail``), objective ``value``,
    last ``metrics``, ``duration``, ``epochs``, ``error`` and the ``model`` file's bytes."""
    start = time.perf_counter()
    number, metric = int(task["number"]), str(task["metric"])
    result: dict[str, Any] = {
        "number": number,
        "state": "fail",
        "value": None,
        "metrics": {},
        "epochs": 0,
        "error": None,
        "model": None,
        "node": f"{socket.gethostname()}:{os.getpid()}",
    }
    try:
        model = mf.build(task["spec"])
        y, y_val = shaped_targets(data, model)
        callbacks: list[mf.Callback] = []
        reporter = None
        if report is not None and task.get("report_every"):
            reporter = _Report(number, metric, int(task["report_every"]), report)
            callbacks.append(reporter)
        validation = None if y_val is None else (data.X_val, y_val)
        with np.errstate(all="ignore"):  # a diverging trial ends in a TrainingError instead
            history = model.fit(data.X, y, validation_data=validation, callbacks=callbacks)
        result["epochs"] = len(history.epoch)
        metrics = {key: float(values[-1]) for key, values in history.history.items() if values}
        result["metrics"] = metrics
        if metric not in metrics:
            result["error"] = (
                f"the objective {metric!r} was not recorded "
                f"(recorded: {', '.join(sorted(metrics)) or 'nothing'})"
            )
        elif not math.isfinite(metrics[metric]):
            result["error"] = f"the objective {metric!r} is {metrics[metric]}"
        else:
            result["value"] = metrics[metric]
            result["state"] = "pruned" if reporter is not None and reporter.pruned else "complete"
            if result["state"] == "complete":
                result["model"] = to_bytes(model)
    except (mf.MicrofwError, ValueError, LookupError) as exc:
        result["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    result["duration"] = time.perf_counter() - start
    return result
