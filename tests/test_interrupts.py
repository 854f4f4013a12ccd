"""Ctrl-C during fit stops between two updates, never inside one (issue 11, item 12)."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import numpy as np
import pytest

import microfw as mf
from microfw.train.interrupts import deferred

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
Y = np.array([0, 1, 1, 0], dtype=float)


class HalfThenInterrupted(mf.Optimizer):
    """p -= lr g, applied in two halves with a Ctrl-C between them on the third step."""

    name = "half_then_interrupted"

    def update(self, params: list[Any], grads: list[Any], lr: float) -> None:
        for p, g in zip(params, grads, strict=True):
            half = p.size // 2
            p.reshape(-1)[:half] -= lr * g.reshape(-1)[:half]
            if self.steps == 2:
                os.kill(os.getpid(), signal.SIGINT)  # lands in the middle of this update
            p.reshape(-1)[half:] -= lr * g.reshape(-1)[half:]


def model(optimizer: Any) -> mf.Sequential:
    registry = mf.Registry()
    registry.register(HalfThenInterrupted)
    return mf.Sequential(
        [{"type": "linear", "units": 3, "activation": "tanh"}, {"type": "linear", "units": 1}],
        input_dim=2,
        loss="squared_error",
        optimizer=optimizer,
        seed=3,
        registry=registry,
    )


def test_an_interrupt_inside_an_update_lets_the_update_finish_then_stops() -> None:
    interrupted = model({"type": "half_then_interrupted", "lr": 0.1})
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(X, Y, epochs=10)
    assert interrupted.optimizer.steps == 3  # stopped right after the third update
    # The same three updates, uninterrupted, through plain SGD: the very same weights.
    reference = model({"type": "sgd", "lr": 0.1})
    reference.fit(X, Y, epochs=3)
    for a, b in zip(interrupted.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ctrl_c_is_handled_as_before_outside_fit() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    model({"type": "sgd"}).fit(X, Y, epochs=2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    with pytest.raises(KeyboardInterrupt), deferred() as state:
        os.kill(os.getpid(), signal.SIGINT)
        assert state.pending
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second interrupt did not raise")  # pragma: no cover


def test_outside_the_main_thread_nothing_is_deferred() -> None:
    seen: list[bool] = []

    def run() -> None:
        with deferred() as state:
            seen.append(state.pending)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [False]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
