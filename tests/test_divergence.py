"""Training that goes wrong: divergence and failing callbacks leave a usable, finite model.

The loss or an update overflows, with plain SGD and momentum, in float32 and on the very last
step, and user callbacks raise at every hook. In each case the weights are finite and equal to
a state the model really passed through.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import microfw as mf

rng = np.random.default_rng(0)
X = rng.normal(size=(12, 2))
Y = X @ np.array([[2.0], [-1.0]]) + 0.5


class Recorder(mf.Callback):
    """The weights at the end of every epoch (and at the start of training)."""

    def on_train_begin(self, logs: Any) -> None:
        self.weights = [self.model.get_weights()]

    def on_epoch_end(self, epoch: int, logs: Any) -> None:
        self.weights.append(self.model.get_weights())


def regression(
    optimizer: dict[str, Any], dtype: str = "float64", activation: str = "tanh"
) -> mf.Sequential:
    return mf.Sequential(
        [{"type": "linear", "units": 4, "activation": activation}, {"type": "linear", "units": 1}],
        input_dim=2,
        loss="squared_error",
        optimizer=optimizer,
        seed=0,
        dtype=dtype,  # type: ignore[arg-type]
    )


def assert_weights(model: mf.Sequential, expected: list[np.ndarray]) -> None:
    for got, want in zip(model.get_weights(), expected, strict=True):
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, want)


def assert_usable(model: mf.Sequential, tmp_path: Any) -> None:
    """Saves and loads (which refuses non-finite weights) and predicts as before."""
    model.save(tmp_path / "model.microfw")
    loaded = mf.load(tmp_path / "model.microfw")
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def assert_trains_on(model: mf.Sequential) -> None:
    """Trains on from where it stopped, with a fresh optimizer."""
    before = model.evaluate(X, Y)["loss"]
    model.optimizer = model.registry.create("optimizer", {"type": "sgd", "lr": 1e-3})
    history = model.fit(X, Y, epochs=5, shuffle=False)
    assert np.isfinite(history.history["loss"]).all()
    assert model.evaluate(X, Y)["loss"] < before


DIVERGING = {
    "sgd": {"type": "sgd", "lr": 2.0},
    "momentum": {"type": "sgd", "lr": 0.5, "momentum": 0.9},
    "nesterov": {"type": "sgd", "lr": 0.5, "momentum": 0.9, "nesterov": True},
    "per-step schedule": {
        "type": "sgd",
        "lr": 0.3,
        "schedule": {"type": "exponential", "rate": 1.0, "per": "step"},
    },
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 4, 5])
@pytest.mark.parametrize("optimizer", DIVERGING.values(), ids=list(DIVERGING))
def test_divergence_keeps_the_weights_of_the_last_finite_epoch(
    optimizer: dict[str, Any], batch_size: int | None, dtype: str, tmp_path: Any
) -> None:
    model = regression(optimizer, dtype, activation="identity")
    recorder = Recorder()
    with np.errstate(all="ignore"), pytest.raises(mf.TrainingError) as info:
        model.fit(X * 3, Y, epochs=500, batch_size=batch_size, callbacks=[recorder])
    error = info.value
    assert f"at epoch {error.epoch}, batch {error.batch}" in str(error)
    assert error.epoch == len(error.history.epoch) == len(recorder.weights) - 1 > 0
    assert np.isfinite(error.history.history["loss"]).all()
    # recorder.weights[k] are the weights at the start of epoch k. A non-finite first loss of
    # an epoch condemns its starting weights too: back to those of the epoch before.
    kept = error.epoch - 1 if error.batch == 0 and "loss became" in str(error) else error.epoch
    which = f"those at the start of epoch {kept}" if kept else "the initial ones"
    assert f"the weights are {which}, the last measured with a finite loss" in str(error)
    assert_weights(model, recorder.weights[kept])
    if batch_size is None:  # the loss of these weights was measured on all the data
        assert np.isfinite(model.evaluate(X * 3, Y)["loss"])
    assert_usable(model, tmp_path)


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("nesterov", [False, True])
def test_divergence_resets_the_optimizer_state(batch_size: int | None, nesterov: bool) -> None:
    """The velocities hold the diverging updates; kept, they would go on moving the weights."""
    optimizer = {"type": "sgd", "lr": 0.5, "momentum": 0.9, "nesterov": nesterov}
    model = regression(optimizer, activation="identity")
    with np.errstate(all="ignore"), pytest.raises(mf.TrainingError, match="state is reset"):
        model.fit(X * 3, Y, epochs=500, batch_size=batch_size, shuffle=False)
    params, grads = model.optimizer_arrays()
    before = [p.copy() for p in params]
    for g in grads:
        g[...] = 0
    model.optimizer.step(params, grads)  # zero gradients and no velocity: nothing moves
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p, b)


@pytest.mark.parametrize("batch_size", [None, 4])
@pytest.mark.parametrize("epochs", [1, 3])
def test_an_update_that_overflows_is_caught_even_on_the_last_step(
    batch_size: int | None, epochs: int, tmp_path: Any
) -> None:
    # The first loss is finite; lr * gradient is not. With one batch (and one epoch) no later
    # loss would reveal it: the weights themselves are checked.
    model = regression({"type": "sgd", "lr": 1e308})
    initial = model.get_weights()
    with np.errstate(all="ignore"), pytest.raises(mf.TrainingError) as info:
        model.fit(X * 10, Y + 100, epochs=epochs, batch_size=batch_size)
    assert info.value.epoch == 0 and "the initial ones" in str(info.value)
    if batch_size is None:
        assert "an update made the weights non-finite at epoch 0, batch 0" in str(info.value)
    assert_weights(model, initial)
    assert_usable(model, tmp_path)
    assert_trains_on(model)


# -- callbacks that raise ----------------------------------------------------------------------


class Boom(Exception):
    """The user's own error, raised from inside a callback."""


class Failing(mf.Callback):
    """Raises ``error`` from hook ``hook`` at epoch ``epoch`` (and batch ``batch``).

    Records the weights at that moment: the state the model must be left in.
    """

    def __init__(
        self, hook: str, epoch: int = 1, batch: int = 1, error: BaseException | None = None
    ) -> None:
        self.hook, self.at_epoch, self.at_batch = hook, epoch, batch
        self.error = error or Boom(hook)
        self.epoch = 0
        self.weights: list[np.ndarray] = []

    def fail(self, hook: str, batch: int | None = None) -> None:
        now = "train" in hook or (self.epoch == self.at_epoch and batch in (None, self.at_batch))
        if hook == self.hook and now:
            self.weights = self.model.get_weights()
            raise self.error

    def on_train_begin(self, logs: Any) -> None:
        self.fail("on_train_begin")

    def on_epoch_begin(self, epoch: int, logs: Any) -> None:
        self.epoch = epoch
        self.fail("on_epoch_begin")

    def on_batch_end(self, batch: int, logs: Any) -> None:
        self.fail("on_batch_end", batch)

    def on_epoch_end(self, epoch: int, logs: Any) -> None:
        self.fail("on_epoch_end")

    def on_train_end(self, logs: Any) -> None:
        self.fail("on_train_end")


def reference_weights(updates: int, batch_size: int) -> list[np.ndarray]:
    """The weights after ``updates`` batches of an undisturbed, unshuffled run."""
    model = regression({"type": "sgd", "lr": 0.05, "momentum": 0.5})
    counter = Counter(updates)
    model.fit(X, Y, epochs=10, batch_size=batch_size, shuffle=False, callbacks=[counter])
    return counter.weights


class Counter(mf.Callback):
    def __init__(self, updates: int) -> None:
        self.updates = updates
        self.seen = 0
        self.weights: list[np.ndarray] = []

    def on_train_begin(self, logs: Any) -> None:
        if self.updates == 0:
            self.weights = self.model.get_weights()

    def on_batch_end(self, batch: int, logs: Any) -> None:
        self.seen += 1
        if self.seen == self.updates:
            self.weights = self.model.get_weights()


BATCH = 4  # 12 rows: 3 updates per epoch


@pytest.mark.parametrize(
    ("hook", "updates"),
    [
        ("on_train_begin", 0),
        ("on_epoch_begin", 3),  # epoch 1 begins after epoch 0's 3 updates
        ("on_batch_end", 5),  # epoch 1, batch 1: after the 5th update
        ("on_epoch_end", 6),
        ("on_train_end", 30),
    ],
)
@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_failing_callback_propagates_and_leaves_a_consistent_model(
    hook: str, updates: int, error: type[BaseException], tmp_path: Any
) -> None:
    model = regression({"type": "sgd", "lr": 0.05, "momentum": 0.5})
    failing = Failing(hook, error=error(hook))
    with pytest.raises(error, match=hook):
        model.fit(X, Y, epochs=10, batch_size=BATCH, shuffle=False, callbacks=[failing])
    # Exactly the state after the last completed update, which the callback saw.
    assert_weights(model, failing.weights)
    assert_weights(model, reference_weights(updates, BATCH))
    assert_usable(model, tmp_path)
    assert_trains_on(model)


def test_after_a_failing_callback_fit_starts_cleanly() -> None:
    model = regression({"type": "sgd", "lr": 0.05})
    with pytest.raises(Boom):
        model.fit(X, Y, epochs=5, callbacks=[Failing("on_epoch_end", epoch=2)])
    stopper = Failing("none")
    history = model.fit(X, Y, epochs=4, callbacks=[stopper])
    assert history.epoch == [0, 1, 2, 3] and not model.stop_training
