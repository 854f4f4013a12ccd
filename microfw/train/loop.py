"""The generic fit loop: batching, validation, metrics, history and callbacks.

It knows only the interfaces: the model's layers, its loss and its optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from microfw.core.buffers import WorkBuffer
from microfw.core.interfaces import Array
from microfw.errors import TrainingError
from microfw.train.blas import BlasPolicy, batch_rows, batch_work
from microfw.train.callbacks import Callback, Logs, overrides
from microfw.train.interrupts import Deferred, deferred
from microfw.train.metrics import Accuracy, accuracy_for, create_metrics, scores

if TYPE_CHECKING:
    from microfw.nn.sequential import Sequential
    from microfw.spec.models import TrainingSpec


@dataclass
class History:
    """What :meth:`~microfw.Sequential.fit` recorded, as in Keras.

    ``history[key]`` has one value per completed epoch for ``loss`` (the mean training loss
    of the epoch's batches, weighted by batch size, each measured before its update, with the
    regularizers' penalties), ``lr`` (the learning rate of the epoch's last update) and, when
    they apply, ``accuracy``, ``val_loss`` and ``val_accuracy``; ``epoch`` lists the epochs.
    With ``metrics`` in the training section, each metric's ``name`` (over the epoch's
    training batches, in training mode, as ``loss``) and ``val_<name>`` replace the accuracies.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def append(self, epoch: int, logs: Logs) -> None:
        """Record the logs of one epoch."""
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


def fit(
    model: Sequential,
    X: Any,
    y: Any,
    *,
    validation_data: tuple[Any, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> History:
    """Train ``model`` on ``X`` ``(n_samples, input_dim)`` and ``y`` ``(n_samples[, n_outputs])``.

    ``overrides`` replace fields of ``model.training`` (``epochs``, ``batch_size``,
    ``shuffle``, ``validation_split``) for this call. Mini-batches are consecutive rows of
    an order reshuffled every epoch from the model's shuffle stream; with one batch the
    rows are not shuffled (only rounding would change). ``validation_split`` holds out a random
    fraction of the rows (the split stream); ``validation_data`` gives the held-out set
    directly. The optimizer steps once per batch and ends an epoch after each epoch, so its
    schedule anneals per step or per epoch as it declares.

    ``blas_threads`` sets BLAS's threads for the duration of the call: a count, None (left as
    it is) or ``"auto"`` (one thread for small batches, else the fastest count as timed during
    the fit; see :mod:`microfw.train.blas`).

    Raises :class:`TrainingError` if a batch loss is NaN or infinite, if an update raises an
    ``ArithmeticError`` (a schedule's rate overflowing), or if an epoch's updates leave a
    weight non-finite or their norm beyond ``sqrt(max float)`` (checked after every epoch, with
    :func:`bounded`): training stops, the weights are
    those at the start of the latest epoch whose first loss was finite (or the initial ones),
    and the optimizer's state (momentum...) is reset (:meth:`Optimizer.reset_state`).
    An exception from a callback propagates and leaves the weights of the last update.
    Ctrl-C (``KeyboardInterrupt``) stops training between two updates, never inside one:
    the weights are those after the last complete update (see
    :mod:`microfw.train.interrupts`).
    """
    config = model.training.updated(**overrides)
    work = batch_work(model, batch_rows(X, config.batch_size))
    with BlasPolicy(config.blas_threads, work) as blas, deferred() as interrupts:
        callbacks = [*callbacks, *blas.callbacks]
        return _fit(model, config, X, y, validation_data, callbacks, interrupts)


def _fit(
    model: Sequential,
    config: TrainingSpec,
    X: Any,
    y: Any,
    validation_data: tuple[Any, Any] | None,
    callbacks: Sequence[Callback],
    interrupts: Deferred,
) -> History:
    X, y, X_val, y_val = _holdout(model, X, y, validation_data, config.validation_split)
    chosen = config.metrics is not None
    metrics = create_metrics(model.registry, config.metrics) if config.metrics else []
    val_metrics = create_metrics(model.registry, config.metrics) if config.metrics else []
    for metric in metrics:  # a metric that cannot score these targets says so before training
        metric.start(model.loss, y)
    accuracy = None if chosen else accuracy_for(y, model.loss)
    data = _Batches(X, y, accuracy, config.batch_size, config.shuffle, model.streams.shuffle)
    n = X.shape[0]
    val_accuracy = None if y_val is None or chosen else accuracy_for(y_val, model.loss)
    val_targets = None if val_accuracy is None or y_val is None else val_accuracy.targets(y_val)

    callbacks = list(callbacks)
    reported = ["loss", *(["accuracy"] if accuracy is not None else [])]
    reported += [m.name for m in metrics]
    if X_val is not None:
        reported += ["val_loss", *(["val_accuracy"] if val_accuracy is not None else [])]
        reported += [f"val_{m.name}" for m in val_metrics]
    reported.append("lr")
    for callback in callbacks:
        callback.set_model(model)
        callback.metrics = list(reported)
    history = History(params={**dict(config), "samples": n, "batches": len(data)})
    params, grads = model.optimizer_arrays()
    # The state (running statistics) goes back with the weights after a divergence.
    kept = params + ([model.store.state] if model.store.state.size else [])
    mirrored = model.store.mirrored
    # What to restore if a loss or an update is not finite: the weights at the start of the
    # latest epoch whose first loss was finite (good_epoch), else the initial weights.
    last_good = [p.copy() for p in kept]
    snapshot = list(zip(last_good, kept, strict=True))
    good_epoch: int | None = None
    train_batch, step = model.train_batch, model.optimizer.step
    model.stop_training = False

    logs: Logs = {}
    for callback in callbacks:
        callback.on_train_begin({"epochs": config.epochs, "batches": len(data)})
    epoch_begin, epoch_end, batch_end = (
        [c for c in callbacks if overrides(c, hook)]
        for hook in ("on_epoch_begin", "on_epoch_end", "on_batch_end")
    )
    for epoch in range(config.epochs):
        for callback in epoch_begin:
            callback.on_epoch_begin(epoch, {})
        total = 0.0
        correct = 0
        for metric in metrics:
            metric.start(model.loss, y)
        for b, (xb, yb, tb) in enumerate(data.epoch()):
            value, out = train_batch(xb, yb)
            if not math.isfinite(value):
                _restore(model, kept, last_good)
                what = f"the training loss became {value}"
                raise _diverged(what, epoch, b, good_epoch, history)
            if b == 0:  # weights with a finite loss: the ones to go back to
                for keep, p in snapshot:
                    keep[...] = p
                good_epoch = epoch
            try:
                step(params, grads)
            except ArithmeticError as exc:  # e.g. a schedule's rate overflowing a float
                _restore(model, kept, last_good)
                what = f"the update raised {type(exc).__name__} ({exc})"
                raise _diverged(what, epoch, b, good_epoch, history) from None
            if mirrored:
                model.parameters_changed()
            if interrupts.pending:  # Ctrl-C came during this update: stop now
                interrupts.check()
            m = xb.shape[0]
            total += value * m
            if accuracy is not None:
                correct += accuracy.correct(out, tb)
            if metrics:
                for metric in metrics:
                    metric.update(out, yb)
            for callback in batch_end:
                callback.on_batch_end(b, {"loss": value, "size": m})
        rate = model.optimizer.last_rate()
        model.optimizer.end_epoch()
        # A finite loss can still give an update that overflows; the next batch's loss would
        # show it, but after the last batch of the last epoch nothing else would. A clipped
        # loss (bce) stays finite while weights grow without bound: past sqrt(max float) a
        # product of two weights overflows, so that is where training stops too.
        if not all(map(bounded, params)):
            if all(map(all_finite, params)):
                limit = math.sqrt(np.finfo(params[0].dtype).max)
                what = f"an update made the weights absurdly large (norm beyond {limit:.2g})"
            else:
                what = "an update made the weights non-finite"
            _restore(model, kept, last_good)
            raise _diverged(what, epoch, len(data) - 1, good_epoch, history)

        logs = {"loss": total / n}
        if accuracy is not None:
            logs["accuracy"] = correct / data.units
        if metrics:
            logs.update(scores(metrics))
        if X_val is not None and y_val is not None:
            out = model.forward(X_val)
            logs["val_loss"] = model.loss.value(out, y_val) + model.store.penalty()
            if val_accuracy is not None and val_targets is not None:
                logs["val_accuracy"] = val_accuracy.correct(out, val_targets) / val_targets.size
            for metric in val_metrics:
                metric.start(model.loss, y_val)
                metric.update(out, y_val)
            logs.update(scores(val_metrics, "val_"))
        logs["lr"] = rate
        history.append(epoch, logs)
        model.epochs_trained += 1
        for callback in epoch_end:
            callback.on_epoch_end(epoch, logs)
        interrupts.check()
        if model.stop_training:
            break
    for callback in callbacks:
        callback.on_train_end(logs)
    return history


class _Batches:
    """The training rows as mini-batches ``(x, y, accuracy targets)``, one epoch at a time.

    Without shuffling (or with a single batch, where only the rounding of sums would change)
    the batches are views of the data, made once. With shuffling, each batch is gathered in
    the new row order into buffers reused for every batch: no copy of the data set is made.
    """

    def __init__(
        self,
        X: Array,
        y: Array,
        accuracy: Accuracy | None,
        batch_size: int | None,
        shuffle: bool,
        rng: np.random.Generator,
    ) -> None:
        n = X.shape[0]
        self.size = min(batch_size or n, n)
        self.starts = range(0, n, self.size)
        # Targets in the form accuracy compares with (booleans or labels), prepared once; an
        # empty column when accuracy does not apply.
        t = accuracy.targets(y) if accuracy is not None else y[:, :0]
        self.units = t.size
        self.shuffle = shuffle and len(self.starts) > 1
        self.sources = (X, y, t)
        self.rng = rng
        if self.shuffle:  # batches gathered per epoch into buffers reused for every batch
            self.buffers = [WorkBuffer() for _ in self.sources]
        else:  # views, made once
            self.views = [tuple(a[i : i + self.size] for a in self.sources) for i in self.starts]

    def __len__(self) -> int:
        return len(self.starts)

    def epoch(self) -> Iterable[tuple[Array, ...]]:
        """The batches of one epoch, in a new row order when shuffling."""
        return self._shuffled() if self.shuffle else self.views

    def _shuffled(self) -> Iterator[tuple[Array, ...]]:
        n = self.sources[0].shape[0]
        order = self.rng.permutation(n)
        for start in self.starts:
            rows = order[start : start + self.size]
            batch = []
            for source, buffer in zip(self.sources, self.buffers, strict=True):
                out = buffer.get((rows.size, *source.shape[1:]), source.dtype)
                # mode="clip" (the rows are valid anyway) lets take() write straight into out.
                np.take(source, rows, axis=0, out=out, mode="clip")
                batch.append(out)
            yield tuple(batch)


def _holdout(
    model: Sequential,
    X: Any,
    y: Any,
    validation_data: tuple[Any, Any] | None,
    validation_split: float,
) -> tuple[Array, Array, Array | None, Array | None]:
    """Checked ``(X, y, X_val, y_val)`` from the validation data or a random split."""
    X, y = model.check_data(X, y)
    if validation_data is not None:
        if validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        return X, y, *model.check_data(*validation_data)
    if validation_split:
        return _split(X, y, validation_split, model.streams.split)
    return X, y, None, None


def _restore(model: Sequential, params: list[Array], saved: list[Array]) -> None:
    """Back to the saved weights, with the optimizer's state (built by the diverging updates)
    reset."""
    for p, keep in zip(params, saved, strict=True):
        np.copyto(p, keep)
    model.parameters_changed()
    model.optimizer.reset_state()


def all_finite(a: Array) -> bool:
    """Whether every element of ``a`` is finite.

    A finite sum proves it in one pass without a temporary; only a non-finite sum (a NaN or
    an inf, or large values overflowing it, which NumPy warns about) needs the element-wise
    look.
    """
    return math.isfinite(np.add.reduce(a, axis=None)) or bool(np.isfinite(a).all())


def bounded(a: Array) -> bool:
    """Whether ``a`` is finite with a Euclidean norm below ``sqrt(max float)`` (1.3e154 in
    float64, 1.8e19 in float32): one pass, the sum of squares overflows (or is NaN) exactly
    then. Past it a product of two such weights may overflow."""
    return math.isfinite(np.vdot(a, a))


def _diverged(
    what: str, epoch: int, batch: int, good_epoch: int | None, history: History
) -> TrainingError:
    kept = f"those at the start of epoch {good_epoch}" if good_epoch else "the initial ones"
    if good_epoch is not None:
        kept += ", the last measured with a finite loss"
    return TrainingError(
        f"{what} at epoch {epoch}, batch {batch}: training stopped; the weights are {kept}, "
        "and the optimizer's state is reset (a lower learning rate may help)",
        epoch=epoch,
        batch=batch,
        history=history,
    )


def _split(
    X: Array, y: Array, fraction: float, rng: np.random.Generator
) -> tuple[Array, Array, Array, Array]:
    """Hold out ``int(n * fraction)`` random rows; both parts keep the original row order."""
    n = X.shape[0]
    n_val = int(n * fraction)
    if n_val == 0 or n_val == n:
        raise ValueError(
            f"validation_split={fraction} of {n} rows leaves {n_val} validation and "
            f"{n - n_val} training rows; both must be non-empty"
        )
    held = np.zeros(n, dtype=bool)
    held[rng.choice(n, n_val, replace=False)] = True
    return X[~held], y[~held], X[held], y[held]
