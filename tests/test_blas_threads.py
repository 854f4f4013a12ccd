"""``training.blas_threads``: BLAS limited while fitting and restored after; clear without it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import microfw as mf

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([0.0, 1.0, 1.0, 0.0])


def blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def model(**training: object) -> mf.Sequential:
    layers = [
        {"type": "linear", "units": 3, "activation": "tanh"},
        {"type": "linear", "units": 1, "activation": "sigmoid"},
    ]
    return mf.Sequential(layers, input_dim=2, loss="bce", seed=0, training=training)


class Seen(mf.Callback):
    def __init__(self) -> None:
        self.threads: list[list[int]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.threads.append(blas_threads())


def visible_blas_threads() -> list[int]:
    """:func:`blas_threads`, skipping the test where threadpoolctl sees no BLAS to limit."""
    threads = blas_threads()
    if not threads:
        pytest.skip("numpy's BLAS is not visible to threadpoolctl here")
    return threads


def test_blas_is_limited_during_fit_and_restored_after() -> None:
    before = visible_blas_threads()
    seen = Seen()
    model(epochs=2, blas_threads=1).fit(X, Y, callbacks=[seen])
    assert seen.threads == [[1] * len(before)] * 2
    assert blas_threads() == before


def test_null_leaves_blas_alone_and_overrides_apply_per_call() -> None:
    before = visible_blas_threads()
    seen = Seen()
    m = model(epochs=1, blas_threads=None)
    m.fit(X, Y, callbacks=[seen])
    assert seen.threads == [before]
    m.fit(X, Y, callbacks=[seen], blas_threads=1)
    assert seen.threads[1] == [1] * len(before)


def test_without_threadpoolctl_a_set_limit_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails as if not installed
    m = model(epochs=1, blas_threads=1)
    weights = m.get_weights()
    with pytest.raises(
        mf.MicrofwError, match=r"blas_threads=1 needs threadpoolctl: pip install threadpoolctl"
    ):
        m.fit(X, Y)
    for before, after in zip(weights, m.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    m.fit(X, Y, blas_threads=None)  # null needs nothing


def test_the_limit_is_validated_with_the_spec() -> None:
    with pytest.raises(mf.SpecError, match=r"training.blas_threads"):
        mf.load_spec(
            {
                "spec_version": 1,
                "input_dim": 2,
                "layers": ["sigmoid"],
                "loss": "bce",
                "training": {"blas_threads": 0},
            }
        )
