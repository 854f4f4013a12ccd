"""A plugin that returns the wrong shape only for some batches is named, never trained through
silently (issue 11, item 11): the model boundary checks every output's rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import microfw as mf


class FirstRowForLargeBatches(mf.Activation):
    """y = x, but only the first row for batches of more than 4 rows."""

    name = "first_row_for_large_batches"

    def forward(self, x: Any) -> Any:
        return x[:1].copy() if x.shape[0] > 4 else x.copy()

    def derivative(self, x: Any, y: Any) -> Any:
        return np.ones_like(x)


class FirstRowLayer(mf.Layer):
    """y = x for small batches; only the first row for larger ones."""

    name = "first_row_layer"

    def forward(self, x: Any, training: bool = False) -> Any:
        return x[:1].copy() if x.shape[0] > 4 else x.copy()

    def backward(self, dy: Any) -> Any:
        return dy


def model(name: str, plan: Any = "fast") -> mf.Sequential:
    registry = mf.Registry()
    registry.register(FirstRowForLargeBatches)
    registry.register(FirstRowLayer)
    return mf.Sequential(
        [{"type": "linear", "units": 2}, name],
        input_dim=2,
        loss="squared_error",
        registry=registry,
        plan=plan,
    )


@pytest.mark.parametrize("name", ["first_row_for_large_batches", "first_row_layer"])
def test_predict_names_a_plugin_that_drops_rows_for_larger_batches(name: str) -> None:
    m = model(name)
    assert m.predict(np.zeros((2, 2))).shape == (2, 2)  # the first check passes
    with pytest.raises(mf.PluginError, match=rf"layers\[1\].*'{name}'.*for 8 row\(s\)"):
        m.predict(np.zeros((8, 2)))


@pytest.mark.parametrize("name", ["first_row_for_large_batches", "first_row_layer"])
@pytest.mark.parametrize("plan", ["fast", "plain"])
def test_fit_refuses_to_train_through_it(name: str, plan: str) -> None:
    m = model(name, plan)
    m.predict(np.zeros((2, 2)))
    with pytest.raises(mf.PluginError, match=name):
        m.fit(np.zeros((8, 2)), np.zeros((8, 2)), epochs=1)


class ScalarDerivative(mf.Activation):
    """y = x, with a derivative given as the scalar 1.0 (a broadcast, not an array of x's shape)."""

    name = "scalar_derivative"

    def forward(self, x: Any) -> Any:
        return x.copy()

    def derivative(self, x: Any, y: Any) -> Any:
        return 1.0


@pytest.mark.parametrize("plan", ["fast", "plain"])
def test_a_derivative_of_another_shape_is_refused_by_both_plans(plan: str) -> None:
    registry = mf.Registry()
    registry.register(ScalarDerivative)
    m = mf.Sequential(
        [{"type": "linear", "units": 3}, "scalar_derivative", {"type": "linear", "units": 1}],
        input_dim=2,
        loss="squared_error",
        registry=registry,
        plan=plan,
    )
    message = r"'scalar_derivative': derivative returned shape \(\) for an input of shape \(8, 3\)"
    with pytest.raises(mf.PluginError, match=message):
        m.fit(np.zeros((8, 2)), np.zeros((8, 1)), epochs=1)
