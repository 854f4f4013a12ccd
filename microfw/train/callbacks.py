"""Callbacks: hooks into :meth:`~microfw.Sequential.fit`, Keras-style.

A callback overrides any of the ``on_*`` methods; ``logs`` holds the epoch's metrics
(``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``). Setting ``self.model.stop_training``
ends training after the current epoch. The per-batch and per-epoch hooks are only called on
callbacks that implement them (in their class, or set on the instance by ``on_train_begin`` at
the latest), so the training loop stays lean otherwise.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from microfw._extras import require

if TYPE_CHECKING:
    from microfw.nn.sequential import Sequential

Logs = dict[str, float]


class Callback:
    """Base class: every hook does nothing. ``model`` is set when training starts, and
    ``metrics``: the keys every epoch's logs will hold (``loss``, ``lr``, and ``accuracy``,
    ``val_loss``, ``val_accuracy`` when they apply)."""

    model: Sequential
    metrics: list[str]

    def check_monitor(self, monitor: str) -> None:
        """Raise ``KeyError`` (before the first epoch) if training will not report ``monitor``."""
        metrics = getattr(self, "metrics", None)
        if metrics and monitor not in metrics:
            raise KeyError(
                f"{type(self).__name__} monitors {monitor!r}, which training does not report "
                f"(available: {', '.join(sorted(metrics))})"
                + ("; pass validation_data or validation_split" if monitor[:4] == "val_" else "")
            )

    def set_model(self, model: Sequential) -> None:
        """Attach the model being trained."""
        self.model = model

    def monitor_sign(self, monitor: str, mode: str) -> float:
        """+1 when a larger ``monitor`` is better: ``mode`` ``max``; in ``auto``, the
        ``greater_is_better`` of the metric plugin it names (``val_f1``: f1), else an accuracy."""
        registry = getattr(getattr(self, "model", None), "registry", None)  # None: no model yet
        name = monitor.removeprefix("val_")
        if mode == "auto" and registry is not None and registry.has("metric", name):
            better = getattr(registry.get("metric", name), "greater_is_better", True)
            return 1.0 if better else -1.0
        return _sign(monitor, mode)

    def on_train_begin(self, logs: Logs) -> None:
        """Before the first epoch (``logs`` holds the number of ``epochs`` and ``batches``)."""

    def on_train_end(self, logs: Logs) -> None:
        """After the last epoch, with the last epoch's logs."""

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        """Before epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        """After epoch ``epoch``, with its metrics."""

    def on_batch_end(self, batch: int, logs: Logs) -> None:
        """After the update of batch ``batch``; ``logs`` holds its ``loss`` and ``size``."""


def overrides(callback: Callback, hook: str) -> bool:
    """Whether ``callback`` implements the hook ``hook`` (e.g. ``"on_batch_end"``), in its
    class or as an attribute of its own: the fit loop, once training has begun, calls a
    per-batch or per-epoch hook only on the callbacks that do."""
    method = getattr(callback, hook)
    return getattr(method, "__func__", method) is not getattr(Callback, hook)


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs in a row in which ``monitor`` did not improve (Keras's rule).

    An epoch improves when it beats the best value so far by more than ``min_delta``; with
    ``patience=0`` training stops at the first epoch that does not.

    Args:
        monitor: a key of the epoch logs, e.g. ``"val_loss"`` or ``"loss"``.
        patience: epochs without improvement tolerated before stopping.
        min_delta: the smallest change that counts as an improvement.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (max for accuracies and for the
            metric plugins whose ``greater_is_better`` is true, min otherwise).
        restore_best: at the end of training, put back the weights of the best epoch (and
            the model's state, such as batch_norm's running statistics, of that epoch).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: Literal["auto", "min", "max"] = "auto",
        restore_best: bool = False,
    ) -> None:
        if patience < 0 or min_delta < 0:
            raise ValueError(f"patience and min_delta must be >= 0, got {patience}, {min_delta}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.sign = _sign(monitor, mode)
        self.restore_best = restore_best

    def on_train_begin(self, logs: Logs) -> None:
        self.check_monitor(self.monitor)
        self.sign = self.monitor_sign(self.monitor, self.mode)
        self.best = -math.inf
        self.best_epoch: int | None = None
        self.best_weights: list[Any] | None = None
        self.best_state: Any = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if self.monitor not in logs:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which training does not report "
                f"(available: {', '.join(sorted(logs))})"
            )
        score = self.sign * logs[self.monitor]
        if score > self.best + self.min_delta:
            self.best, self.best_epoch, self.wait = score, epoch, 0
            if self.restore_best:
                self.best_weights = self.model.get_weights()
                self.best_state = self.model.store.state.copy()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Logs) -> None:
        if self.restore_best and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            self.model.store.state[...] = self.best_state


class CostLogger(Callback):
    """Print ``Cost at epoch#N: <loss>`` every ``every`` epochs, as the seed tutorials do."""

    def __init__(self, every: int = 100, stream: TextIO | None = None) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.stream = stream

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if epoch % self.every == 0:
            print(f"Cost at epoch#{epoch}: {logs['loss']}", file=self.stream or sys.stdout)


class ProgressBar(Callback):
    """A ``tqdm`` progress bar over epochs showing the latest metrics (``microfw[progress]``)."""

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self._tqdm = require("tqdm.auto", "progress", "ProgressBar").tqdm
        self.tqdm_kwargs = tqdm_kwargs

    def on_train_begin(self, logs: Logs) -> None:
        self.bar = self._tqdm(total=int(logs["epochs"]), unit="epoch", **self.tqdm_kwargs)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs: Logs) -> None:
        self.bar.close()


def _sign(monitor: str, mode: str) -> float:
    """+1 when larger is better (``max``, or ``auto`` on an accuracy), else -1."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return 1.0 if mode == "max" or (mode == "auto" and "acc" in monitor) else -1.0


class ModelCheckpoint(Callback):
    """Save the model after every epoch (or only when ``monitor`` improves), atomically.

    Args:
        filepath: where to write; ``{epoch}`` (1-based, as in Keras) and the log keys may be
            formatted in, e.g. ``"ckpt-{epoch:03d}-{val_loss:.3f}.microfw"``.
        monitor: the log key judged with ``save_best_only``.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (max for accuracies and for the
            metric plugins whose ``greater_is_better`` is true, min otherwise).
        save_best_only: write only when ``monitor`` beats the best value so far.

    Each file is a full model file (:func:`microfw.io.save`: written to a temporary file, then
    renamed), with the optimizer's state, so training resumes from it bit-identically.
    """

    def __init__(
        self,
        filepath: str | os.PathLike[str],
        monitor: str = "val_loss",
        mode: Literal["auto", "min", "max"] = "auto",
        save_best_only: bool = False,
    ) -> None:
        self.filepath = str(filepath)
        self.monitor = monitor
        self.mode = mode
        self.sign = _sign(monitor, mode)
        self.save_best_only = save_best_only
        self.best = -math.inf
        self.saved: list[Path] = []

    def on_train_begin(self, logs: Logs) -> None:
        if self.save_best_only or "{" + self.monitor in self.filepath:
            self.check_monitor(self.monitor)
        self.sign = self.monitor_sign(self.monitor, self.mode)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if self.save_best_only:
            score = self.sign * logs[self.monitor]
            if not score > self.best:
                return
            self.best = score
        path = Path(self.filepath.format(epoch=epoch + 1, **logs))
        self.model.save(path)
        self.saved.append(path)


class ReduceLROnPlateau(Callback):
    """Multiply the optimizer's ``lr`` by ``factor`` when ``monitor`` stops improving (Keras).

    An epoch improves when it beats the best value by more than ``min_delta``; after
    ``patience`` epochs in a row without improvement the rate is reduced (never below
    ``min_lr``), then ``cooldown`` epochs pass before counting again. The reduced rate is the
    optimizer's ``lr``, the base its schedule scales; it is saved with the model.

    ``rule="sklearn"`` is scikit-learn's ``learning_rate="adaptive"`` (``MLPClassifier`` with
    ``solver="sgd"``): ``ReduceLROnPlateau("loss", factor=0.2, patience=n_iter_no_change + 1,
    min_delta=tol, min_lr=1e-6, rule="sklearn")``. There the best value follows every lower
    loss (not only improvements by ``min_delta``), and when the rate is already at most
    ``min_lr`` training stops instead of reducing it (the rate is not clamped at ``min_lr``).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        mode: Literal["auto", "min", "max"] = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        rule: Literal["keras", "sklearn"] = "keras",
    ) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if patience < 0 or cooldown < 0 or min_delta < 0 or min_lr < 0:
            raise ValueError(
                f"patience, cooldown, min_delta and min_lr must be >= 0, got {patience}, "
                f"{cooldown}, {min_delta}, {min_lr}"
            )
        if rule not in ("keras", "sklearn"):
            raise ValueError(f"rule must be 'keras' or 'sklearn', got {rule!r}")
        self.monitor = monitor
        self.factor = factor
        self.patience = patience
        self.mode = mode
        self.sign = _sign(monitor, mode)
        self.min_delta = min_delta
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.rule = rule

    def on_train_begin(self, logs: Logs) -> None:
        self.check_monitor(self.monitor)
        self.sign = self.monitor_sign(self.monitor, self.mode)
        self.best = -math.inf
        self.wait = 0
        self.cooldown_left = 0
        self.reductions: list[int] = []

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        score = self.sign * logs[self.monitor]
        improved = score > self.best + self.min_delta
        if improved or (self.rule == "sklearn" and score > self.best):
            self.best = score
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if improved:
            self.wait = 0
            return
        if self.cooldown_left > 0:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        optimizer = self.model.optimizer
        self.wait = 0
        if self.rule == "sklearn" and optimizer.lr <= self.min_lr:
            self.model.stop_training = True
            return
        new = optimizer.lr * self.factor
        if self.rule == "keras":
            new = max(new, self.min_lr)
        if new < optimizer.lr:
            optimizer.lr = new
            self.reductions.append(epoch)
            self.cooldown_left = self.cooldown


class CSVLogger(Callback):
    """Write each epoch's logs to a CSV file as the epoch ends (a killed run keeps its rows).

    Columns: ``epoch`` then the log keys in sorted order (``accuracy``, ``loss``, ``lr``...).
    With ``append``, rows are added to an existing file (its header kept), as when resuming.
    Every row is flushed to the operating system at once.
    """

    def __init__(
        self, filename: str | os.PathLike[str], separator: str = ",", append: bool = False
    ) -> None:
        self.filename = Path(filename)
        self.separator = separator
        self.append = append
        self._file: TextIO | None = None

    def on_train_begin(self, logs: Logs) -> None:
        keep = self.append and self.filename.exists() and self.filename.stat().st_size > 0
        self._file = self.filename.open("a" if keep else "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, delimiter=self.separator, lineterminator="\n")
        self._keys: list[str] | None = None
        self._header_written = keep

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        assert self._file is not None, "on_train_begin was not called"
        if self._keys is None:
            self._keys = sorted(logs)
            if not self._header_written:
                self._writer.writerow(["epoch", *self._keys])
        self._writer.writerow([epoch, *(repr(float(logs.get(k, math.nan))) for k in self._keys)])
        self._file.flush()

    def on_train_end(self, logs: Logs) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
