"""Callbacks: hooks into :meth:`~microfw.Sequential.fit`, Keras-style.

A callback overrides any of the ``on_*`` methods; ``logs`` holds the epoch's metrics
(``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``). Setting ``self.model.stop_training``
ends training after the current epoch. The per-batch and per-epoch hooks are only called on
callbacks that implement them (in their class, or set on the instance by ``on_train_begin`` at
the latest), so the training loop stays lean otherwise.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, Literal, TextIO

from microfw._extras import require

if TYPE_CHECKING:
    from microfw.nn.sequential import Sequential

Logs = dict[str, float]


class Callback:
    """Base class: every hook does nothing. ``model`` is set when training starts."""

    model: Sequential

    def set_model(self, model: Sequential) -> None:
        """Attach the model being trained."""
        self.model = model

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
        mode: ``"min"``, ``"max"``, or ``"auto"`` (max for accuracies and for the spec's
            metrics whose ``greater_is_better`` is true, min otherwise).
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
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.mode = mode
        self.sign = 1.0 if mode == "max" or (mode == "auto" and "acc" in monitor) else -1.0
        self.restore_best = restore_best

    def on_train_begin(self, logs: Logs) -> None:
        if self.mode == "auto" and getattr(self, "model", None) is not None:
            name = self.monitor.removeprefix("val_")
            chosen = [
                r if isinstance(r, str) else r.get("type")
                for r in (self.model.training.metrics or [])
            ]
            if name in chosen and self.model.registry.has("metric", name):
                better = getattr(self.model.registry.get("metric", name), "greater_is_better", True)
                self.sign = 1.0 if better else -1.0
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
