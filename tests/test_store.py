"""The model owns every array: one flat parameter array, one of gradients, one of state.

A third-party layer written with only the plain methods gets its arrays in the store, trains,
saves and loads; a microfw 0.1 layer keeps training (mirrored, with a DeprecationWarning); bad
declarations are refused saying where.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zip_members import members

import microfw as mf

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0.0, 1.0, 1.0, 0.0])


class Dense(mf.Layer):
    """y = x W + b: a third-party dense layer with only the plain methods."""

    name = "third_party_dense"
    example_params = {"units": 3}
    units: int

    def output_dim(self, n_in: int) -> int:
        return self.units

    def build(self, n_in: int, store: Any) -> None:
        self.W = store.add("W", (n_in, self.units), lambda s, rng: rng.standard_normal(s))
        self.b = store.add("b", (self.units,), 0.0)
        self.dW, self.db = store.grad("W"), store.grad("b")

    def forward(self, x: Any, training: bool = False) -> Any:
        if training:
            self.x = x
        return x @ self.W + self.b

    def backward(self, dy: Any) -> Any:
        self.dW[...] = self.x.T @ dy
        self.db[...] = dy.sum(axis=0)
        return dy @ self.W.T


class RecordingSGD(mf.Optimizer):
    """p -= lr g, recording the arrays of every update."""

    name = "recording_sgd"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.calls: list[tuple[list[Any], list[Any]]] = []

    def update(self, params: list[Any], grads: list[Any], lr: float) -> None:
        self.calls.append((list(params), list(grads)))
        for p, g in zip(params, grads, strict=True):
            p -= lr * g


@pytest.fixture
def registry() -> mf.Registry:
    """The built-ins (no third-party entry points) plus the classes of this module."""
    registry = mf.Registry(autoload=False)
    for cls in (Dense, RecordingSGD, RunningMean, LegacyDense):
        registry.register(cls)
    return registry


def dense_model(registry: mf.Registry, **kwargs: Any) -> mf.Sequential:
    options: dict[str, Any] = {
        "input_dim": 2,
        "loss": "bce",
        "optimizer": {"type": "sgd", "lr": 1.0},
        "seed": 0,
        "registry": registry,
    }
    options.update(kwargs)
    return mf.Sequential(
        [
            {"type": "third_party_dense", "units": 4},
            "tanh",
            {"type": "third_party_dense", "units": 1},
            "sigmoid",
        ],
        **options,
    )


def test_the_checks_pass_for_the_third_party_layer(registry: mf.Registry) -> None:
    mf.testing.check_plugin(Dense, registry=registry)


def test_a_third_party_layers_arrays_are_views_of_the_models_flat_arrays(
    registry: mf.Registry,
) -> None:
    model = dense_model(registry)
    store = model.store
    assert model.weight_names() == ["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"]
    assert store.params.shape == store.grads.shape == (2 * 4 + 4 + 4 * 1 + 1,)
    assert store.params.dtype == store.grads.dtype == np.float64
    first, second = model.layers[0], model.layers[2]
    for layer in (first, second):
        assert isinstance(layer, Dense)
        assert np.shares_memory(layer.W, store.params) and np.shares_memory(layer.b, store.params)
        assert np.shares_memory(layer.dW, store.grads) and np.shares_memory(layer.db, store.grads)
    np.testing.assert_array_equal(
        np.concatenate([w.ravel() for w in model.get_weights()]), store.params
    )
    params, grads = model.optimizer_arrays()
    assert len(params) == 1 and len(grads) == 1
    assert params[0] is store.params and grads[0] is store.grads
    assert model.count_parameters() == 17 and model.count_parameters(2) == 5
    _, (dW0, db0, dW2, db2) = model.compute_gradients(XOR_X, XOR_Y)
    np.testing.assert_array_equal(
        np.concatenate([g.ravel() for g in (dW0, db0, dW2, db2)]), store.grads
    )


def test_the_third_party_layer_trains_with_one_optimizer_pass_per_step(
    registry: mf.Registry,
) -> None:
    model = dense_model(registry, optimizer={"type": "recording_sgd", "lr": 1.0})
    X, y = np.tile(XOR_X, (5, 1)), np.tile(XOR_Y, 5)  # 20 rows: 3 batches of 8, 8 and 4
    history = model.fit(X, y, epochs=300, batch_size=8)
    loss = history.history["loss"]
    assert loss[-1] < 0.1 * loss[0]
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0
    calls = model.optimizer.calls
    assert len(calls) == 300 * 3  # one update per mini-batch
    for params, grads in calls:  # each over the whole model at once
        assert len(params) == 1 and params[0] is model.store.params
        assert len(grads) == 1 and grads[0] is model.store.grads


def test_the_third_party_layer_saves_and_loads(registry: mf.Registry, tmp_path: Path) -> None:
    model = dense_model(registry)
    model.fit(XOR_X, XOR_Y, epochs=50)
    path = tmp_path / "dense.microfw"
    model.save(path)
    with np.load(io.BytesIO(members(path)["weights.npz"]), allow_pickle=False) as saved:
        assert saved.files == model.weight_names()  # the store's names, in its order
    loaded = mf.load(path, registry)
    assert isinstance(loaded.layers[0], Dense)
    assert loaded.weight_names() == model.weight_names()
    np.testing.assert_array_equal(loaded.store.params, model.store.params)
    np.testing.assert_array_equal(loaded.predict(XOR_X), model.predict(XOR_X))
    assert np.shares_memory(loaded.layers[0].W, loaded.store.params)
    loaded.fit(XOR_X, XOR_Y, epochs=5)  # the loaded model trains on, in its own store
    assert not np.array_equal(loaded.store.params, model.store.params)


def test_weight_names_are_stable(registry: mf.Registry) -> None:
    model = mf.Sequential(
        [
            {"type": "linear", "units": 3, "activation": "relu"},
            {"type": "linear", "units": 2, "use_bias": False},
            "softmax",
        ],
        input_dim=2,
        loss="categorical_crossentropy",
        registry=registry,
    )
    assert model.weight_names() == ["layers.0.W", "layers.0.b", "layers.2.W"]
    assert [w.shape for w in model.get_weights()] == [(2, 3), (3,), (3, 2)]
    assert model.store.names() == model.weight_names()  # no state


def test_float32_models_keep_float32_stores(registry: mf.Registry) -> None:
    model = dense_model(registry, dtype="float32")
    assert model.store.params.dtype == model.store.grads.dtype == np.float32
    assert model.layers[0].W.dtype == np.float32
    model.fit(XOR_X, XOR_Y, epochs=3)
    assert model.store.params.dtype == np.float32


# -- non-trainable state ------------------------------------------------------------------------


class RunningMean(mf.Layer):
    """y = x - mean, the mean a running average of the training batches' column means."""

    name = "running_mean"
    momentum: float = 0.5

    def build(self, n_in: int, store: Any) -> None:
        self.mean = store.add_state("mean", (n_in,), 0.0)
        self.count = store.add_state("count", (1,), 0.0)

    def forward(self, x: Any, training: bool = False) -> Any:
        if training:
            self.mean *= self.momentum
            self.mean += (1 - self.momentum) * x.mean(axis=0)
            self.count += 1
        return x - self.mean

    def backward(self, dy: Any) -> Any:
        return dy


def test_state_arrays_are_saved_but_never_trained(registry: mf.Registry, tmp_path: Path) -> None:
    model = mf.Sequential(
        [{"type": "running_mean"}, {"type": "third_party_dense", "units": 1}, "sigmoid"],
        input_dim=2,
        loss="bce",
        optimizer={"type": "recording_sgd", "lr": 0.5},
        registry=registry,
        seed=0,
    )
    store = model.store
    assert model.weight_names() == ["layers.1.W", "layers.1.b"]
    assert store.names(trainable=False) == ["layers.0.mean", "layers.0.count"]
    assert store.state.shape == (3,) and store.params.shape == (3,)
    assert np.shares_memory(model.layers[0].mean, store.state)
    assert [w.shape for w in model.get_weights()] == [(2, 1), (1,)]
    X = XOR_X + 3.0
    model.fit(X, XOR_Y, epochs=4)
    np.testing.assert_allclose(model.layers[0].mean, 3.5 * (1 - 0.5**4), rtol=1e-14)
    assert model.layers[0].count[0] == 4
    for params, _ in model.optimizer.calls:  # the state never reaches the optimizer
        assert len(params) == 1 and params[0] is store.params
        assert not np.shares_memory(params[0], store.state)
    path = tmp_path / "state.microfw"
    model.save(path)
    loaded = mf.load(path, registry)
    np.testing.assert_array_equal(loaded.store.state, store.state)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


# -- microfw 0.1 layers -------------------------------------------------------------------------


class LegacyDense(mf.Layer):
    """y = x W + b written for microfw 0.1: its own arrays, parameters() and gradients()."""

    name = "legacy_dense"
    units: int = 1

    def output_dim(self, n_in: int) -> int:
        return self.units

    def build(self, n_in: int, rng: Any, dtype: Any) -> None:  # type: ignore[override]
        self.W = (rng.standard_normal((n_in, self.units)) / np.sqrt(n_in)).astype(dtype)
        self.b = np.zeros(self.units, dtype)
        self.dW, self.db = np.zeros_like(self.W), np.zeros_like(self.b)

    def parameters(self) -> list[Any]:
        return [self.W, self.b]

    def gradients(self) -> list[Any]:
        return [self.dW, self.db]

    def forward(self, x: Any, training: bool = False) -> Any:
        if training:
            self.x = x
        return x @ self.W + self.b

    def backward(self, dy: Any) -> Any:
        self.dW[...] = self.x.T @ dy
        self.db[...] = dy.sum(axis=0)
        return dy @ self.W.T


def test_a_legacy_layer_still_trains_with_a_deprecation_warning(
    registry: mf.Registry, tmp_path: Path
) -> None:
    with pytest.warns(
        DeprecationWarning, match=r"layers\.0: layer 'legacy_dense' uses the microfw 0\.1 contract"
    ):
        model = mf.Sequential(
            [
                {"type": "legacy_dense", "units": 4},
                "tanh",
                {"type": "linear", "units": 1},
                "sigmoid",
            ],
            input_dim=2,
            loss="bce",
            optimizer={"type": "recording_sgd", "lr": 1.0},
            registry=registry,
            seed=0,
        )
    assert model.weight_names() == ["layers.0.0", "layers.0.1", "layers.2.W", "layers.2.b"]
    history = model.fit(XOR_X, XOR_Y, epochs=500)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0
    legacy = model.layers[0]
    np.testing.assert_array_equal(legacy.W, model.store["layers.0.0"])  # mirrored both ways
    np.testing.assert_array_equal(legacy.b, model.store["layers.0.1"])
    assert all(len(params) == 1 for params, _ in model.optimizer.calls)
    path = tmp_path / "legacy.microfw"
    model.save(path)
    with pytest.warns(DeprecationWarning):
        loaded = mf.load(path, registry)
    np.testing.assert_array_equal(loaded.predict(XOR_X), model.predict(XOR_X))


def test_the_contract_checks_still_pass_a_legacy_layer(registry: mf.Registry) -> None:
    with pytest.warns(DeprecationWarning, match="microfw 0.1 contract"):
        mf.testing.check_plugin(LegacyDense, registry=registry)


# -- bad declarations ---------------------------------------------------------------------------


class GrowingLayer(Dense):
    """Declares one array more on every build()."""

    name = "growing_layer"
    builds = 0

    def build(self, n_in: int, store: Any) -> None:
        super().build(n_in, store)
        self.builds += 1
        if self.builds > 1:
            store.add("extra", (2,), 0.0)


class ShrinkingLayer(Dense):
    """Declares its bias only on the first build()."""

    name = "shrinking_layer"
    builds = 0

    def build(self, n_in: int, store: Any) -> None:
        self.builds += 1
        self.W = store.add("W", (n_in, self.units), 0.0)
        if self.builds == 1:
            self.b = store.add("b", (self.units,), 0.0)


class DeclaresTwice(Dense):
    """Declares W twice."""

    name = "declares_twice"

    def build(self, n_in: int, store: Any) -> None:
        super().build(n_in, store)
        store.add("W", (n_in, self.units), 0.0)


class GradBeforeAdd(Dense):
    """Asks for the gradient of an array it has not declared."""

    name = "grad_before_add"

    def build(self, n_in: int, store: Any) -> None:
        self.dW = store.grad("W")
        super().build(n_in, store)


class WrongInitShape(Dense):
    """Initialises W with the wrong shape."""

    name = "wrong_init_shape"

    def build(self, n_in: int, store: Any) -> None:
        self.W = store.add("W", (n_in, self.units), lambda s, rng: np.zeros((1, 1)))


class BadName(Dense):
    """Declares an array with a name that is not an identifier."""

    name = "bad_name"

    def build(self, n_in: int, store: Any) -> None:
        store.add("layers.W", (n_in, self.units), 0.0)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (
            GrowingLayer,
            r"layers\.0: layer 'growing_layer' declared different arrays in its two build\(\) "
            r"calls .*build\(\) must declare the same arrays every time",
        ),
        (
            ShrinkingLayer,
            r"layers\.0: layer 'shrinking_layer' declared different arrays in its two build\(\) "
            r"calls \(\[\('W', \(2, 3\), True\), \('b', \(3,\), True\)\] then "
            r"\[\('W', \(2, 3\), True\)\]\)",
        ),
        (DeclaresTwice, r"layers\.0\.W: declared twice"),
        (
            GradBeforeAdd,
            r"layers\.0: grad\('W'\) before add\('W'\) \(declared trainable arrays: \[\]\)",
        ),
        (WrongInitShape, r"layers\.0\.W: the initializer returned shape \(1, 1\), not \(2, 3\)"),
        (BadName, r"layers\.0\.layers\.W: array names must be identifiers, got 'layers\.W'"),
    ],
)
def test_bad_declarations_are_refused_saying_where(cls: type[mf.Layer], expected: str) -> None:
    with pytest.raises(mf.PluginError, match=expected):
        mf.Sequential([cls(units=3)], input_dim=2, loss="squared_error", seed=0)
