"""The fast paths (activations in buffers or in place, fused loss value and gradient, skipped
input gradient, packed parameters, chunked SGD) train exactly like the straightforward path."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from microfw_plugins.layers import Linear

import microfw as mf
from microfw.core.interfaces import Array


class PlainActivation(mf.Activation):
    """Only ``forward`` and ``derivative`` of the wrapped activation: the default fast paths."""

    name = "plain_activation"

    def __init__(self, inner: mf.Activation) -> None:
        self.inner = inner
        self._param_names = ()

    def forward(self, x: Array) -> Array:
        return self.inner.forward(x)

    def derivative(self, x: Array, y: Array) -> Array:
        return self.inner.derivative(x, y)


class PlainLoss(mf.Loss):
    """Only ``value`` and ``grad`` of the wrapped loss: the default ``value_and_grad``."""

    name = "plain_loss"

    def __init__(self, inner: mf.Loss) -> None:
        self.inner = inner
        self._param_names = ()

    def value(self, y_pred: Array, y_true: Array) -> float:
        return self.inner.value(y_pred, y_true)

    def grad(self, y_pred: Array, y_true: Array) -> Array:
        return self.inner.grad(y_pred, y_true)


class PlainSGD(mf.Optimizer):
    """p -= lr g, one whole array at a time."""

    name = "plain_sgd"

    def update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        for p, g in zip(params, grads, strict=True):
            p -= lr * g


def straightforward(model: mf.Sequential) -> mf.Sequential:
    """``model`` switched to the plain paths: wrapped plugins, every input gradient computed,
    the optimizer stepping each layer's arrays rather than the packed ones."""
    for layer in model.layers:
        if isinstance(layer, mf.ActivationLayer):
            layer.activation = PlainActivation(layer.activation)
            layer.in_place = layer.grad_in_place = False
            layer.bias = None
        if isinstance(layer, Linear):
            layer.bias_deferred = False
        layer.needs_input_grad = True
    model.loss = PlainLoss(model.loss)
    plain = PlainSGD(lr=model.optimizer.lr, schedule=model.optimizer.schedule)
    model.optimizer = plain
    model._packed = (model.parameters(), model.gradients())
    return model


def moons(n: int, rng: np.random.Generator) -> tuple[Array, Array]:
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    X = np.where(
        upper[:, None],
        np.column_stack([np.cos(t), np.sin(t)]),
        np.column_stack([1 - np.cos(t), 0.5 - np.sin(t)]),
    )
    return X + rng.normal(scale=0.2, size=X.shape), upper.astype(float)


def spec(layers: list[Any], loss: Any, batch_size: int | None, epochs: int) -> dict[str, Any]:
    return {
        "spec_version": 1,
        "input_dim": 2,
        "layers": layers,
        "loss": loss,
        "optimizer": {"type": "sgd", "lr": 0.1},
        "training": {"epochs": epochs, "batch_size": batch_size, "shuffle": True},
        "seed": 7,
    }


CASES = {
    "relu-bce-minibatch": (
        [
            {"type": "linear", "units": 16, "activation": "relu", "init": "he"},
            {"type": "linear", "units": 8, "activation": "relu", "init": "he"},
            {"type": "linear", "units": 1, "activation": "sigmoid"},
        ],
        "bce",
        "binary",
        24,
    ),
    "tanh-squared-error-fullbatch": (
        [
            {"type": "linear", "units": 8, "activation": "tanh"},
            {"type": "linear", "units": 1, "activation": "sigmoid"},
        ],
        "squared_error",
        "binary",
        None,
    ),
    "softmax-cce-minibatch": (
        [
            {"type": "linear", "units": 12, "activation": "leaky_relu"},
            {"type": "linear", "units": 2},
            "softmax",
        ],
        "categorical_crossentropy",
        "onehot",
        50,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fast_and_straightforward_paths_agree_after_many_steps(case: str) -> None:
    layers, loss, targets, batch_size = CASES[case]
    X, labels = moons(230, np.random.default_rng(0))  # 230: the last batch is smaller
    y = np.eye(2)[labels.astype(int)] if targets == "onehot" else labels
    fast = mf.build(spec(layers, loss, batch_size, epochs=60))
    plain = straightforward(mf.build(spec(layers, loss, batch_size, epochs=60)))
    h_fast, h_plain = fast.fit(X, y), plain.fit(X, y)
    np.testing.assert_allclose(h_fast.history["loss"], h_plain.history["loss"], rtol=1e-10)
    assert h_fast.history["loss"][-1] < h_fast.history["loss"][0]  # it did train
    for w_fast, w_plain in zip(fast.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(w_fast, w_plain, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.predict(X), plain.predict(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("layers", "loss", "y"),
    [
        (["sigmoid"], "bce", np.array([[0.0], [1.0], [1.0]])),
        (["softmax"], "categorical_crossentropy", np.eye(3)),
    ],
)
def test_a_fused_loss_declines_where_clipping_reaches_the_gradient(
    layers: list[Any], loss: str, y: Array
) -> None:
    """Fused (loss and last layer's gradient in one) inside the clip range, unfused outside."""
    model = mf.Sequential(
        [{"type": "linear", "units": y.shape[1]}, *layers], input_dim=2, loss=loss, seed=0
    )
    assert model.loss.fuses_with(model.layers[-1])
    plain = straightforward(mf.build(model.to_spec()))
    plain.set_weights(model.get_weights())
    X = np.array([[0.5, -1.0], [1.0, 2.0], [-0.3, 0.4]])
    unfused_calls = []
    value_and_grad = model.loss.value_and_grad
    model.loss.value_and_grad = lambda *a: unfused_calls.append(1) or value_and_grad(*a)
    for scale, calls in ((1.0, 0), (1e4, 1)):  # 1e4: outputs saturate beyond the clip range
        weights = [w * scale for w in plain.get_weights()]
        model.set_weights(weights)
        plain.set_weights(weights)
        fast_value, fast_grads = model.compute_gradients(X, y)
        plain_value, plain_grads = plain.compute_gradients(X, y)
        assert len(unfused_calls) == calls
        np.testing.assert_allclose(fast_value, plain_value, rtol=1e-12)
        for g_fast, g_plain in zip(fast_grads, plain_grads, strict=True):
            np.testing.assert_allclose(g_fast, g_plain, rtol=1e-10, atol=1e-300)


def test_the_model_works_in_place_only_over_arrays_nobody_else_reads() -> None:
    """relu between linear layers works over linear's output and its input gradient; the last
    activation's gradient comes from the loss, and sigmoid's backward cannot overwrite dy."""
    model = mf.Sequential(
        [
            {"type": "linear", "units": 4, "activation": "relu"},
            {"type": "linear", "units": 4, "activation": "sigmoid"},
            {"type": "linear", "units": 1},
            "relu",
        ],
        input_dim=2,
        loss="squared_error",
    )
    flags = [
        (layer.name, layer.in_place, layer.grad_in_place)
        for layer in model.layers
        if isinstance(layer, mf.ActivationLayer)
    ]
    assert flags == [("relu", True, True), ("sigmoid", True, False), ("relu", True, False)]


class DoubledBCE(mf.default_registry().get("loss", "bce")):  # type: ignore[misc]
    """A subclass computing another loss (twice bce): bce's fusion must not stand in for it."""

    name = "doubled_bce"

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        value, grad = super().value_and_grad(y_pred, y_true)
        return 2 * value, 2 * grad


def test_a_loss_is_fused_only_with_its_own_maths() -> None:
    X, y = np.array([[0.5, -1.0], [1.0, 2.0]]), np.array([0.0, 1.0])
    layers = [{"type": "linear", "units": 1}, "sigmoid"]
    plain = mf.Sequential(layers, input_dim=2, loss="bce", seed=0)
    doubled = mf.Sequential(layers, input_dim=2, loss=DoubledBCE(), seed=0)
    assert plain.loss.fuses_with(plain.layers[-1])
    assert not doubled.loss.fuses_with(doubled.layers[-1])
    value, grads = plain.compute_gradients(X, y)
    doubled_value, doubled_grads = doubled.compute_gradients(X, y)
    assert doubled_value == pytest.approx(2 * value, rel=1e-12)
    for g, g2 in zip(grads, doubled_grads, strict=True):
        np.testing.assert_allclose(g2, 2 * g, rtol=1e-12)
    # A loss switched to logits after the model was made declines the probability formula.
    plain.loss.from_logits = True
    expected = plain.loss.value(plain.predict(X), y[:, None])
    assert plain.compute_gradients(X, y)[0] == pytest.approx(expected, rel=1e-12)


ReLU = mf.default_registry().get("activation", "relu")


@pytest.mark.parametrize("fuses", [True, False])
def test_relu_takes_the_bias_of_the_linear_layer_before_when_it_fuses(
    fuses: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an activation declaring fuses_bias, working over a linear output, gets a bias."""
    monkeypatch.setattr(ReLU, "fuses_bias", fuses)
    model = mf.Sequential(
        [
            {"type": "linear", "units": 4, "activation": "relu"},
            {"type": "linear", "units": 4, "activation": "sigmoid"},
            {"type": "linear", "units": 3, "use_bias": False, "activation": "relu"},
            "softmax",
            "relu",
        ],
        input_dim=2,
        loss="squared_error",
    )
    first, relu, second, sigmoid, third, relu_nobias, _, relu_after_softmax = model.layers
    assert relu.bias is (first.b if fuses else None)
    assert first.bias_deferred is fuses
    assert sigmoid.bias is None and not second.bias_deferred  # sigmoid does not fuse
    assert relu_nobias.bias is None and not third.bias_deferred  # nothing to hand over
    assert relu_after_softmax.bias is None  # not over a linear output


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 7])
def test_the_fused_bias_trains_bit_for_bit_like_the_separate_add(
    dtype: str, batch_size: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, labels = moons(60, np.random.default_rng(1))  # 60 rows: the last batch of 7 is smaller
    layers = [
        {"type": "linear", "units": 8, "activation": "relu", "init": "he"},
        {"type": "linear", "units": 8, "activation": "relu", "init": "he"},
        {"type": "linear", "units": 1, "activation": "sigmoid"},
    ]
    model_spec = {**spec(layers, "bce", batch_size, epochs=30), "dtype": dtype}
    monkeypatch.setattr(ReLU, "fuses_bias", True)
    fused = mf.build(model_spec)
    monkeypatch.setattr(ReLU, "fuses_bias", False)
    separate = mf.build(model_spec)
    assert fused.layers[1].bias is not None and separate.layers[1].bias is None
    h_fused, h_separate = fused.fit(X, labels), separate.fit(X, labels)
    assert h_fused.history["loss"] == h_separate.history["loss"]
    assert h_fused.history["loss"][-1] < h_fused.history["loss"][0]
    for w_fused, w_separate in zip(fused.get_weights(), separate.get_weights(), strict=True):
        np.testing.assert_array_equal(w_fused, w_separate)
    np.testing.assert_array_equal(fused.predict(X), separate.predict(X))


def test_relu_is_compiled_where_the_fast_extra_is_installed() -> None:
    """The test command installs the fast extra: the compiled kernel is what runs here."""
    from microfw_plugins import kernels

    assert kernels.available() and ReLU().fuses_bias


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("in_place", [True, False])
def test_bias_relu_gives_numpys_bits(dtype: type, in_place: bool) -> None:
    """maximum(x + bias, 0) in one compiled pass: NaN kept (with its sign), -0.0 and exact
    cancellations give +0.0, infinities and the smallest numbers as NumPy has them."""
    from microfw_plugins import kernels

    info = np.finfo(dtype)
    special = [np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, info.tiny, -info.tiny, info.max]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((13, 9)).astype(dtype)
    x[0] = special
    bias = rng.standard_normal(9).astype(dtype)
    bias[4] = 0.0  # -0.0 + 0.0
    x[1] = -bias  # exact cancellations
    expected = np.maximum(x + bias, 0)
    out = x if in_place else np.full_like(x, 7)
    kernels.bias_relu(x, bias, out)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    assert np.array_equal(np.signbit(out), np.signbit(expected))  # NaN signs and zeros too


@pytest.mark.parametrize(
    "params", [{}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}], ids=str
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_compiled_sgd_step_gives_the_numpy_passes_bits(
    params: dict[str, Any], dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    from microfw_plugins import kernels

    sgd = mf.default_registry().get("optimizer", "sgd")
    rng = np.random.default_rng(5)
    shapes = [(40_000,), (3, 7), (5,)]  # the first spans several of the NumPy path's chunks
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    results = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "available", lambda compiled=compiled: compiled)
        optimizer = sgd(lr=0.05, **params)
        weights = [w.copy() for w in start]
        grads = [np.empty_like(w) for w in weights]
        steps = np.random.default_rng(6)
        for _ in range(4):
            for g in grads:
                g[...] = steps.standard_normal(g.shape)
            optimizer.step(weights, grads)
        results.append(weights)
    for compiled, plain in zip(*results, strict=True):
        assert compiled.dtype == dtype
        np.testing.assert_array_equal(compiled, plain)


def test_numbas_debugging_switch_turns_to_the_numpy_paths() -> None:
    """NUMBA_DISABLE_JIT=1 would run the kernels as Python loops: they are not used then."""
    code = (
        "from microfw_plugins import kernels, activations; "
        "print(kernels.available(), activations.ReLU().fuses_bias)"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_compiled_softmax_agrees_with_numpys_passes(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches take the compiled row-by-row softmax: the same values to rounding, the
    same NaN rows, and no overflow for large inputs."""
    from microfw_plugins import kernels

    softmax = mf.default_registry().get("layer", "softmax")
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((40, 10)) * 5).astype(dtype)
    x[0, 3] = 1e4  # exp would overflow without the row maximum
    x[1, :] = -np.inf
    x[2, 4] = np.nan
    x[3, 1], x[3, 2] = np.inf, -np.inf
    x[4, :] = np.finfo(dtype).max
    outputs = {}
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "available", lambda compiled=compiled: compiled)
        layer = softmax()
        with np.errstate(invalid="ignore"):
            outputs[compiled] = (layer.forward(x, True).copy(), layer.forward(x, False))
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for compiled, plain in zip(outputs[True], outputs[False], strict=True):
        assert compiled.dtype == dtype
        np.testing.assert_array_equal(np.isnan(compiled), np.isnan(plain))
        np.testing.assert_allclose(compiled, plain, rtol=rtol, atol=1e-30)
    assert np.isnan(outputs[True][0][[1, 2, 3]]).all()  # -inf rows, NaN, inf - inf
    np.testing.assert_allclose(outputs[True][0][[0, 4]].sum(axis=1), 1, rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_compiled_softmax_crossentropy_agrees_with_numpys_passes(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Value to rounding, gradient and declines as the NumPy path: soft targets, a clipped
    p facing a zero target (fused) or a non-zero one (declined), NaN."""
    from microfw_plugins import kernels

    registry = mf.default_registry()
    loss, softmax = (
        registry.get("loss", "categorical_crossentropy")(),
        registry.get("layer", "softmax")(),
    )
    rng = np.random.default_rng(9)
    p = rng.dirichlet(np.ones(4), 12).astype(dtype)
    y = rng.dirichlet(np.ones(4), 12).astype(dtype)
    y[:6] = np.eye(4, dtype=dtype)[rng.integers(0, 4, 6)]  # one-hot rows too
    cases = {"soft and one-hot": (p, y)}
    tiny = p.copy()
    tiny[0] = [1e-9, 0.5, 0.25, 0.25 - 1e-9]
    zero_target, non_zero_target = y.copy(), y.copy()
    zero_target[0], non_zero_target[0] = [0, 1, 0, 0], [1, 0, 0, 0]
    cases["clipped p, zero target"] = (tiny, zero_target)
    cases["clipped p, non-zero target"] = (tiny, non_zero_target)
    nan = p.copy()
    nan[3, 2] = np.nan
    cases["NaN p"] = (nan, np.eye(4, dtype=dtype)[[0] * 12])
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    declined = []
    for name, (p_case, y_case) in cases.items():
        results = []
        for compiled in (True, False):
            monkeypatch.setattr(kernels, "available", lambda compiled=compiled: compiled)
            with np.errstate(invalid="ignore"):
                results.append(loss.fused_value_and_grad(softmax, p_case, y_case))
        compiled_result, plain_result = results
        if plain_result is None:
            assert compiled_result is None, name
            declined.append(name)
            continue
        assert compiled_result is not None, name
        if np.isnan(plain_result[0]):
            assert np.isnan(compiled_result[0]), name
        else:
            assert compiled_result[0] == pytest.approx(plain_result[0], rel=rtol), name
        assert compiled_result[1].dtype == dtype
        # Soft targets: p s - y cancels, and s is summed in another order: compare to the
        # gradient's scale there.
        scale = float(np.nanmax(np.abs(plain_result[1])))
        np.testing.assert_allclose(
            compiled_result[1], plain_result[1], rtol=rtol, atol=rtol * scale
        )
    assert declined == ["clipped p, non-zero target"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", [4, 900])  # below and above the einsum threshold
def test_a_one_unit_linear_layer_gives_the_same_input_gradient_compiled_or_not(
    dtype: type, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from microfw_plugins import kernels

    rng = np.random.default_rng(10)
    x = rng.standard_normal((rows, 25)).astype(dtype)
    dy = rng.standard_normal((rows, 1)).astype(dtype)
    grads = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "available", lambda compiled=compiled: compiled)
        layer = Linear(units=1)
        layer.build(25, np.random.default_rng(0), np.dtype(dtype))
        layer.forward(x, True)
        grads.append(np.array(layer.backward(dy)))
    assert grads[0].dtype == dtype
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], np.multiply.outer(dy[:, 0], layer.W[:, 0]))


class ReLU6(ReLU):  # type: ignore[misc,valid-type]
    """y = min(max(x, 0), 6): a subclass the compiled max(x + b, 0) would not compute."""

    name = "relu6"

    def forward(self, x: Array) -> Array:
        return np.clip(x, 0, 6)

    def forward_into(self, x: Array, out: Array) -> None:
        np.clip(x, 0, 6, out=out)


def test_a_relu_subclass_with_its_own_function_does_not_take_the_bias() -> None:
    assert ReLU().fuses_bias  # the fast extra is installed
    assert not ReLU6().fuses_bias
    model = mf.Sequential(
        [{"type": "linear", "units": 3}, ReLU6()], input_dim=2, loss="squared_error", seed=0
    )
    assert model.layers[1].bias is None and not model.layers[0].bias_deferred
    X, y = np.array([[40.0, -3.0], [2.0, 9.0]]), np.zeros((2, 3))
    value, _ = model.compute_gradients(X, y)
    assert value == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-15)


def test_a_numba_that_fails_to_import_gives_a_warning_and_the_numpy_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """As numba does when NumPy was upgraded past what it supports."""
    from microfw_plugins import kernels

    broken = tmp_path / "numba"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('Numba needs NumPy 2.3 or less')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    with pytest.warns(RuntimeWarning, match="numba is installed but cannot be imported"):
        assert kernels.available.__wrapped__() is False


class HalvingAsNumPy(mf.Schedule):
    """lr(t) = lr0 / 2**t, returned as a NumPy float64 (as a user's schedule may)."""

    name = "halving_as_numpy"

    def __call__(self, lr0: float, t: int) -> float:
        return np.float64(lr0) / 2**t  # type: ignore[return-value]


@pytest.mark.parametrize("size", [1000, 40_000])  # the NumPy chunks and the compiled step
def test_a_numpy_rate_updates_float32_weights_as_a_python_float_would(size: int) -> None:
    """The rate reaches every optimizer as a Python float, so float32 arithmetic stays float32
    whichever type a schedule returns (zero weights: the update's own rounding shows)."""
    sgd = mf.default_registry().get("optimizer", "sgd")
    g = np.random.default_rng(11).standard_normal(size).astype(np.float32)
    weights = [np.zeros(size, np.float32)]
    sgd(lr=0.1, schedule=HalvingAsNumPy()).step(weights, [g])
    np.testing.assert_array_equal(weights[0], -(g * np.float32(0.1)))


def test_switching_momentum_on_after_a_step_starts_from_zero_velocity() -> None:
    sgd = mf.default_registry().get("optimizer", "sgd")
    optimizer = sgd(lr=0.1)
    for size in (10, 5000):  # the NumPy chunks and the compiled step
        weights, zero = [np.ones(size)], [np.zeros(size)]
        optimizer.step(weights, zero)
        optimizer.momentum = 0.9
        optimizer.step(weights, zero)  # no gradient, no velocity yet: nothing moves
        np.testing.assert_array_equal(weights[0], 1.0)
        optimizer.momentum = 0.0


class BCEFusingWithLinear(mf.default_registry().get("loss", "bce")):  # type: ignore[misc]
    """bce wrongly claiming to fuse with a layer that has parameters."""

    name = "bce_fusing_with_linear"

    def fuses_with(self, layer: mf.Layer) -> bool:
        return True


def test_a_loss_fusing_with_a_layer_that_has_parameters_is_refused() -> None:
    with pytest.raises(mf.PluginError, match=r"loss 'bce_fusing_with_linear' .* 'linear'"):
        mf.Sequential(
            [{"type": "linear", "units": 1}], input_dim=2, loss=BCEFusingWithLinear(), seed=0
        )
