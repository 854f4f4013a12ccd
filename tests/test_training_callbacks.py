"""ModelCheckpoint, ReduceLROnPlateau, CSVLogger, the lr in History and monitor checks."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import microfw as mf

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
Y = np.array([0.0, 1.0, 1.0, 0.0])


def xor_model(**optimizer: object) -> mf.Sequential:
    return mf.Sequential(
        [
            {"type": "linear", "units": 4, "activation": "tanh"},
            {"type": "linear", "units": 1},
            "sigmoid",
        ],
        input_dim=2,
        loss="bce",
        optimizer={"type": "sgd", "lr": 0.5, **optimizer},
        seed=1,
    )


class Epochs(mf.Callback):
    def __init__(self) -> None:
        self.begun: list[int] = []

    def on_epoch_begin(self, epoch, logs):
        self.begun.append(epoch)


@pytest.mark.parametrize(
    "callback",
    [
        lambda p: mf.EarlyStopping(monitor="val_loss"),
        lambda p: mf.ReduceLROnPlateau(monitor="val_accuracy"),
        lambda p: mf.ModelCheckpoint(p / "m.microfw", monitor="val_loss", save_best_only=True),
        lambda p: mf.EarlyStopping(monitor="los"),
    ],
)
def test_an_unreported_monitor_is_refused_before_the_first_epoch(tmp_path, callback):
    seen = Epochs()
    with pytest.raises(
        KeyError,
        match=r"which training does not report \(available: accuracy, "
        r"loss, lr\)",
    ):
        xor_model().fit(X, Y, epochs=3, callbacks=[seen, callback(tmp_path)])
    assert seen.begun == []


def test_history_records_the_rate_of_each_epoch():
    model = xor_model(schedule={"type": "step", "step_size": 2, "gamma": 0.5})
    history = model.fit(X, Y, epochs=6)
    assert history.history["lr"] == [0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    per_step = xor_model(schedule={"type": "exponential", "rate": 0.9, "per": "step"})
    history = per_step.fit(X, Y, epochs=3, batch_size=2, shuffle=False)
    # two updates per epoch: the last one of epoch e is step 2e + 1
    assert history.history["lr"] == pytest.approx([0.5 * 0.9 ** (2 * e + 1) for e in range(3)])


def test_model_checkpoint_saves_the_best_epochs_atomically_and_they_resume(tmp_path: Path):
    model = xor_model()
    checkpoint = mf.ModelCheckpoint(
        tmp_path / "best-{epoch:02d}.microfw", monitor="loss", save_best_only=True
    )
    history = model.fit(X, Y, epochs=5, callbacks=[checkpoint])
    losses = history.history["loss"]
    expected = [e + 1 for e in range(5) if losses[e] < min(losses[:e], default=np.inf)]
    assert [p.name for p in checkpoint.saved] == [f"best-{e:02d}.microfw" for e in expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in checkpoint.saved]
    last = mf.load(checkpoint.saved[-1])
    assert last.epochs_trained == expected[-1]
    every = mf.ModelCheckpoint(tmp_path / "all.microfw")
    model.fit(X, Y, epochs=2, callbacks=[every])
    assert every.saved == [tmp_path / "all.microfw"] * 2


def _drive(callback: mf.Callback, values: list[float], lr: float = 1.0, key: str = "loss"):
    """Feed a sequence of epoch logs to a callback over a stand-in model; return the rates."""
    optimizer = SimpleNamespace(lr=lr)
    callback.model = SimpleNamespace(optimizer=optimizer, stop_training=False)
    callback.metrics = [key, "lr"]
    callback.on_train_begin({})
    rates = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {key: value})
        rates.append(optimizer.lr)
        if callback.model.stop_training:
            break
    return rates


def test_reduce_lr_on_plateau_follows_keras():
    values = [1.0, 0.9, 0.95, 0.92, 0.91, 0.8, 0.85, 0.86, 0.87, 0.88]
    cb = mf.ReduceLROnPlateau("loss", factor=0.5, patience=2, min_delta=0.0, cooldown=1)
    rates = _drive(cb, values)
    # Keras's order: epochs 2, 3 do not beat 0.9: reduce at 3; epoch 4 ends the cooldown (wait
    # reset) and counts 1; 0.8 improves at 5; 6, 7 do not: reduce at 7; 8 ends the cooldown
    # and counts 1, 9 counts 2: reduce at 9.
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert cb.reductions == [3, 7, 9]
    floor = _drive(mf.ReduceLROnPlateau("loss", factor=0.1, patience=1, min_lr=0.05), [1.0] * 4)
    assert floor == [1.0, 0.1, 0.05, 0.05]


def sklearn_adaptive(losses: list[float], lr: float, tol: float, n_iter_no_change: int):
    """scikit-learn's MLP (``_fit_stochastic``, ``_update_no_improvement_count``,
    ``SGDOptimizer.trigger_stopping``) for learning_rate="adaptive", early_stopping=False:
    the rate after each epoch, and whether training stopped."""
    best, count, rates = np.inf, 0, []
    for loss in losses:
        if loss > best - tol:
            count += 1
        else:
            count = 0
        if loss < best:
            best = loss
        if count > n_iter_no_change:
            if lr <= 1e-6:
                rates.append(lr)
                return rates, True
            lr /= 5.0
            count = 0
        rates.append(lr)
    return rates, False


def test_reduce_lr_on_plateau_reproduces_scikit_learns_adaptive_rate():
    rng = np.random.default_rng(0)
    # A loss that falls, stalls with tiny improvements (below tol), falls again...
    losses = list(np.cumsum(-np.abs(rng.normal(0, 1e-4, 200)) * (rng.random(200) < 0.3)) + 1)
    tol, n = 1e-4, 3
    expected, stopped = sklearn_adaptive(losses, 1e-3, tol, n)
    cb = mf.ReduceLROnPlateau(
        "loss", factor=0.2, patience=n + 1, min_delta=tol, min_lr=1e-6, rule="sklearn"
    )
    rates = _drive(cb, losses, lr=1e-3)
    assert rates == pytest.approx(expected, rel=1e-12)
    assert stopped and len(rates) < len(losses)


def test_csv_logger_writes_each_epoch_as_it_ends(tmp_path: Path):
    path = tmp_path / "log.csv"
    logger = mf.CSVLogger(path)

    class Reader(mf.Callback):
        rows: list[int] = []

        def on_epoch_end(self, epoch, logs):
            self.rows.append(len(path.read_text().splitlines()))

    reader = Reader()
    history = xor_model().fit(X, Y, epochs=3, callbacks=[logger, reader])
    assert reader.rows == [2, 3, 4]  # the header and every finished epoch, on disk already
    with path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "accuracy", "loss", "lr"]
    assert [float(r[2]) for r in rows[1:]] == history.history["loss"]
    more = mf.CSVLogger(path, append=True)
    xor_model().fit(X, Y, epochs=2, callbacks=[more])
    rows = path.read_text().splitlines()
    assert len(rows) == 6 and rows.count(rows[0]) == 1
