"""The planner and the fusion rules: ``plan="fast"`` trains exactly like ``plan="plain"``, the
fused losses give the exact gradient however wrong a sample is, rules apply by exact class,
and the compiled kernels give NumPy's bits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from microfw_plugins import kernels
from microfw_plugins.activations import ReLU
from microfw_plugins.fusions import IN_PLACE
from microfw_plugins.layers import Linear, Softmax
from microfw_plugins.losses import BinaryCrossentropy

import microfw as mf
from microfw import testing
from microfw.core.fusions import LossFusion
from microfw.core.interfaces import Array
from microfw.data import load_data, targets_for

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPECS = sorted(EXAMPLES.glob("*/*.json"))
ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
RTOL = 1e-10


def assert_close(actual: Any, expected: Any, what: str, rtol: float = RTOL) -> None:
    """Every element within ``rtol`` of ``expected``, relative to the largest ``|expected|``
    of the array (so that weights near zero are judged on the array's scale)."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, what
    scale = float(np.max(np.abs(e), initial=0.0))
    err = float(np.max(np.abs(a - e), initial=0.0))
    assert err <= rtol * scale, f"{what}: max difference {err:.3g}, scale {scale:.3g}"


def assert_plans_agree(
    spec: dict[str, Any] | Path, X: Array, y: Array, registry: mf.Registry | None = None, **fit: Any
) -> tuple[mf.Sequential, mf.History]:
    """Train ``spec`` under both plans; losses, weights and predictions agree to 1e-10."""
    fast = mf.build(spec, registry, plan="fast")
    plain = mf.build(spec, registry, plan="plain")
    assert plain.fusions == []
    h_fast, h_plain = fast.fit(X, y, **fit), plain.fit(X, y, **fit)
    assert h_fast.history.keys() == h_plain.history.keys()
    for key, values in h_plain.history.items():
        np.testing.assert_allclose(h_fast.history[key], values, rtol=RTOL, err_msg=key)
    names = fast.weight_names()
    assert names == plain.weight_names()
    for name, w_fast, w_plain in zip(names, fast.get_weights(), plain.get_weights(), strict=True):
        assert_close(w_fast, w_plain, name)
    assert_close(fast.predict(X), plain.predict(X), "predictions")
    return fast, h_fast


# -- both plans agree --------------------------------------------------------------------------


def example_data(spec_path: Path, model: mf.Sequential) -> tuple[Array, Array]:
    """The example's training data: ``data.csv`` or ``train.csv`` (target: the last column),
    else ``train.npz``."""
    for name in ("data.csv", "train.csv"):
        path = spec_path.parent / name
        if path.is_file():
            target = path.read_text().splitlines()[0].split(",")[-1]
            data = load_data(path, target)
            break
    else:
        data = load_data(spec_path.parent / "train.npz")
    return data.X, targets_for(data, model.output_dim, model.loss)


def test_every_example_is_covered() -> None:
    assert len(SPECS) >= 10


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_both_plans_agree_on_every_example(spec_path: Path) -> None:
    """A few epochs on the example's own data: 100 full-batch steps (10 on the 900 moons),
    or 3 epochs of mini-batches."""
    X, y = example_data(spec_path, mf.build(spec_path))
    minibatch = mf.build(spec_path).training.batch_size is not None
    epochs = 3 if minibatch else 100 if len(X) <= 200 else 10
    model, history = assert_plans_agree(spec_path, X, y, epochs=epochs)
    loss = history.history["loss"]
    assert np.all(np.isfinite(loss)) and np.ptp(loss) > 0  # it trained (iris's lr 1 oscillates)
    if any(isinstance(layer, mf.ActivationLayer | Softmax) for layer in model.layers):
        assert model.fusions, "the fast plan fused nothing: the comparison would be vacuous"


@st.composite
def deep_specs(draw: st.DrawFn) -> tuple[dict[str, Any], Array, Array]:
    """A random model of 2 to 6 linear layers with random widths and activations, a loss with
    its matching last layer, random data and random mini-batches."""
    depth = draw(st.integers(2, 6))
    input_dim = draw(st.integers(1, 4))
    layers: list[Any] = []
    for _ in range(depth - 1):
        activation = draw(st.sampled_from(ACTIVATIONS))
        units = draw(st.integers(1, 8))
        if activation == "leaky_relu":
            activation = {"type": "leaky_relu", "alpha": draw(st.sampled_from([0.01, 0.3]))}
        layers.append({"type": "linear", "units": units, "activation": activation})
    loss = draw(st.sampled_from(["squared_error", "bce", "categorical_crossentropy"]))
    if loss == "squared_error":
        k = draw(st.integers(1, 3))
        layers.append({"type": "linear", "units": k})
        last = draw(st.sampled_from([None, *ACTIVATIONS]))
        if last is not None:
            layers.append(last)
    elif loss == "bce":
        k = draw(st.integers(1, 2))
        layers += [{"type": "linear", "units": k}, "sigmoid"]
    else:
        k = draw(st.integers(2, 4))
        layers += [{"type": "linear", "units": k}, "softmax"]
    n = draw(st.integers(5, 40))
    momentum = draw(st.sampled_from([0.0, 0.9]))
    spec = {
        "spec_version": 1,
        "input_dim": input_dim,
        "layers": layers,
        "loss": loss,
        "optimizer": {
            "type": "sgd",
            "lr": 0.02,  # outputs stay off the probability losses' clip range
            "momentum": momentum,
            "nesterov": momentum > 0 and draw(st.booleans()),
        },
        "training": {
            "epochs": 5,
            "batch_size": draw(st.one_of(st.none(), st.integers(1, n))),
            "shuffle": True,
        },
        "seed": draw(st.integers(0, 2**16)),
    }
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    X = rng.standard_normal((n, input_dim))
    if loss == "squared_error":
        y = rng.standard_normal((n, k))
    elif loss == "bce":
        y = rng.integers(0, 2, (n, k)).astype(float)
    else:
        y = np.eye(k)[rng.integers(0, k, n)]
    return spec, X, y


@settings(max_examples=50)
@given(deep_specs())
def test_both_plans_agree_on_random_deep_specs(case: tuple[dict[str, Any], Array, Array]) -> None:
    spec, X, y = case
    model, _ = assert_plans_agree(spec, X, y)
    assert any(rule.startswith("linear+") for _, rule in model.fusions)


# -- exact gradients for a confidently wrong sample ---------------------------------------------

TRUE_CLASS_P = np.array([0.3, 1e-3, 1e-7, 2e-9, 1e-30, 1e-100, 1e-200, 1e-300])
"""The probability the model gives each sample's true class: down to 1e-300."""


def logits_model(Z: Array, last: str, loss: str, plan: str = "fast") -> mf.Sequential:
    """A linear layer (input_dim m, no bias) whose weights are the logits ``Z`` (m, k), then
    ``last``: on ``X = I_m`` the logits are exactly ``Z`` and dL/dW is exactly dL/dZ."""
    m, k = Z.shape
    model = mf.Sequential(
        [{"type": "linear", "units": k, "use_bias": False}, last],
        input_dim=m,
        loss=loss,
        seed=0,
        plan=plan,  # type: ignore[arg-type]
    )
    model.set_weights([Z])
    return model


def assert_relative(actual: Array, expected: Array, rtol: float) -> None:
    """Element-wise ``|a - e| <= rtol |e|``."""
    err = np.abs(actual - expected) / np.abs(expected)
    worst = int(np.argmax(err))
    assert err.flat[worst] <= rtol, (
        f"element {worst}: {actual.flat[worst]!r} vs {expected.flat[worst]!r}"
    )


def test_sigmoid_bce_gives_p_minus_y_over_m_however_wrong_the_sample() -> None:
    q = TRUE_CLASS_P
    n = q.size
    logit = np.log(q) - np.log1p(-q)  # sigmoid(logit) = q
    z = np.concatenate([logit, -logit, logit, -logit])
    y = np.concatenate([np.ones(n), np.zeros(n), np.zeros(n), np.ones(n)])
    m = z.size  # the first half confidently wrong (the true class at q), the second half right
    model = logits_model(z[:, None], "sigmoid", "bce")
    assert ("layers[1]", "sigmoid+bce") in model.fusions
    value, (dW,) = model.compute_gradients(np.eye(m), y)
    p = 1 / (1 + np.exp(-z))  # no overflow: |z| <= 691
    np.testing.assert_allclose(p[:n], q, rtol=1e-12)  # the data reach down to p = 1e-300
    expected = (p - y) / m
    # Element-wise where p - y does not cancel: every wrong sample, the right ones with y = 0.
    assert_relative(dW[: 3 * n, 0], expected[: 3 * n], 1e-12)
    assert_close(dW[:, 0], expected, "every sample", rtol=1e-12)
    expected_value = np.mean(np.logaddexp(0, z) - z * y)  # -mean(y log p + (1-y) log(1-p))
    assert value == pytest.approx(expected_value, rel=1e-12)


def test_softmax_crossentropy_gives_p_minus_y_over_m_however_wrong_the_sample() -> None:
    k = 3
    q = TRUE_CLASS_P
    m = 2 * q.size
    labels = np.arange(m) % k
    Z = np.empty((m, k))
    for i, (label, p_true) in enumerate(zip(labels, np.concatenate([q, 1 - q]), strict=True)):
        Z[i] = np.log((1 - p_true) / (k - 1)) if p_true < 1 else np.log(1e-300)
        Z[i, label] = np.log(p_true)
    y = np.eye(k)[labels]
    model = logits_model(Z, "softmax", "categorical_crossentropy")
    assert ("layers[1]", "softmax+categorical_crossentropy") in model.fusions
    value, (dW,) = model.compute_gradients(np.eye(m), y)
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p[np.arange(q.size), labels[: q.size]], q, rtol=1e-12)
    expected = (p - y) / m
    assert_relative(dW[: q.size], expected[: q.size], 1e-12)  # the wrong samples
    assert_close(dW, expected, "every sample", rtol=1e-12)  # right ones: p - y cancels
    top = Z.max(axis=1)
    logsumexp = top + np.log(np.exp(Z - top[:, None]).sum(axis=1))
    expected_value = np.mean(logsumexp - Z[np.arange(m), labels])  # -1/m sum(y log p)
    assert value == pytest.approx(expected_value, rel=1e-12)


@pytest.mark.parametrize(
    ("last", "loss"), [("sigmoid", "bce"), ("softmax", "categorical_crossentropy")]
)
def test_the_rule_itself_gives_p_minus_y_over_m(last: str, loss: str) -> None:
    """The registered LossFusion, called directly on logits of a p = 1e-300 true class."""
    registry = mf.default_registry()
    rule = next(
        e.rule
        for e in registry.fusions()
        if isinstance(e.rule, LossFusion) and e.rule.label() == f"{last}+{loss}"
    )
    last_plugin = registry.create("activation" if last == "sigmoid" else "layer", last)
    loss_plugin = registry.create("loss", loss)
    if last == "sigmoid":
        z = np.array([[-690.7755], [690.7755], [0.3]])  # p = 1e-300 for y = 1, and for y = 0
        y = np.array([[1.0], [0.0], [1.0]])
        p_ref = 1 / (1 + np.exp(-z))
    else:
        z = np.array([[-690.7755, 0.0, 0.0], [2.0, -1.0, 0.5]])
        y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p_ref = e / e.sum(axis=1, keepdims=True)
    p = rule.forward(last_plugin, z.copy())
    assert_relative(p, p_ref, 1e-12)
    _, grad = rule.value_and_grad(loss_plugin, z.copy(), p, y)
    n = z.size if loss == "bce" else z.shape[0]  # bce is a mean over every element
    assert_relative(grad, (p_ref - y) / n, 1e-12)


def test_no_loss_rule_applies_to_logits_or_after_another_layer() -> None:
    """``bce`` with from_logits already takes logits; ``bce`` after another last layer keeps
    its own (clipped) form."""
    logits = mf.Sequential(
        [{"type": "linear", "units": 1}, "sigmoid"],
        input_dim=2,
        loss={"type": "bce", "from_logits": True},
    )
    assert logits.fusions == [("layers[0..1]", "linear+sigmoid")]  # no loss rule
    linear_only = mf.Sequential([{"type": "linear", "units": 1}], input_dim=2, loss="bce")
    assert linear_only.fusions == [("layers[0]", "linear")]  # no loss rule


def test_from_logits_switched_on_after_planning_is_refused_until_the_loss_is_assigned() -> None:
    """The sigmoid+bce rule was chosen for probabilities: with ``from_logits`` switched on
    later it would compute another loss than the plain plan, so it refuses; assigning the loss
    again plans anew (no loss rule) and trains as the plain plan does."""
    X, y = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[1.0], [0.0]])
    model = mf.Sequential([{"type": "linear", "units": 1}, "sigmoid"], input_dim=2, loss="bce")
    assert model.fusions == [("layers[0]", "linear"), ("layers[1]", "sigmoid+bce")]
    model.loss.from_logits = True
    with pytest.raises(ValueError, match="from_logits was switched on after the model planned"):
        model.train_batch(X, y)
    model.loss = model.loss
    assert model.fusions == [("layers[0..1]", "linear+sigmoid")]
    model.train_batch(X, y)


# -- which rules apply -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "loss", "expected"),
    [
        (
            [
                {"type": "linear", "units": 4, "activation": "relu"},
                {"type": "linear", "units": 3, "activation": "leaky_relu"},
                {"type": "linear", "units": 2},
                "softmax",
            ],
            "categorical_crossentropy",
            [
                ("layers[0..1]", "linear+relu"),
                ("layers[2..3]", "linear+leaky_relu"),
                ("layers[4]", "linear"),
                ("layers[5]", "softmax+categorical_crossentropy"),
            ],
        ),
        (
            [
                {"type": "linear", "units": 4, "activation": "tanh"},
                "sigmoid",
                {"type": "linear", "units": 1},
                "sigmoid",
            ],
            "bce",
            [
                ("layers[0..1]", "linear+tanh"),
                ("layers[3]", "linear"),
                ("layers[4]", "sigmoid+bce"),
            ],
        ),
        (
            [
                {"type": "linear", "units": 4, "activation": "sigmoid"},
                "softmax",
                {"type": "linear", "units": 2, "activation": "identity"},
            ],
            "squared_error",
            [("layers[0..1]", "linear+sigmoid"), ("layers[3..4]", "linear+identity")],
        ),
    ],
)
def test_the_fast_plan_applies_the_expected_rules(
    layers: list[Any], loss: str, expected: list[tuple[str, str]]
) -> None:
    """Listed in layer order; an activation no rule takes (sigmoid after tanh, softmax in
    the middle) runs alone, a linear layer before a loss rule as the lone ``linear`` rule."""
    fast = mf.Sequential(layers, input_dim=2, loss=loss, seed=0)
    assert fast.fusions == expected
    assert mf.Sequential(layers, input_dim=2, loss=loss, seed=0, plan="plain").fusions == []


def test_setting_the_loss_plans_the_pass_again() -> None:
    model = mf.Sequential([{"type": "linear", "units": 1}, "sigmoid"], input_dim=2, loss="bce")
    assert model.fusions == [("layers[0]", "linear"), ("layers[1]", "sigmoid+bce")]
    model.loss = BinaryCrossentropy(from_logits=True)
    assert model.fusions == [("layers[0..1]", "linear+sigmoid")]
    X, y = np.array([[0.5, -1.0], [1.0, 2.0]]), np.array([0.0, 1.0])
    value, _ = model.compute_gradients(X, y)
    assert value == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-14)


def test_an_unknown_plan_is_refused() -> None:
    with pytest.raises(ValueError, match=r"plan must be one of fast, plain, got 'quick'"):
        mf.Sequential(["sigmoid"], input_dim=1, loss="bce", plan="quick")  # type: ignore[arg-type]


class TwiceReLU(ReLU):
    """y = 2 max(x, 0): a subclass with its own function (and its own fast paths)."""

    name = "twice_relu"

    def forward(self, x: Array) -> Array:
        return 2 * np.maximum(x, 0)

    def derivative(self, x: Array, y: Array) -> Array:
        return 2 * (x > 0).astype(x.dtype)

    def forward_into(self, x: Array, out: Array) -> None:
        np.copyto(out, self.forward(x))

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        np.multiply(dy, self.derivative(x, y), out=out)


class TwiceReLUWithReLUsFastPaths(ReLU):
    """y = 2 max(x, 0) inheriting relu's forward_into and backward_into."""

    name = "twice_relu_with_relus_fast_paths"

    def forward(self, x: Array) -> Array:
        return 2 * np.maximum(x, 0)

    def derivative(self, x: Array, y: Array) -> Array:
        return 2 * (x > 0).astype(x.dtype)


def test_a_subclass_inheriting_fast_paths_of_other_maths_is_caught_by_the_contract() -> None:
    """The fast plan runs unfused activations through forward_into/backward_into: a subclass
    changing the maths must override them too (or the plans disagree), as the contract
    checks say."""
    testing.check_fast_paths(TwiceReLU)
    with pytest.raises(AssertionError, match=r"forward_into \(float64\) differs"):
        testing.check_fast_paths(TwiceReLUWithReLUsFastPaths)


class NamedReLU(ReLU):
    """y = max(x, 0) under another name: a subclass, so no rule it did not ask for."""

    name = "named_relu"


class DoubledBCE(BinaryCrossentropy):
    """2 bce: a subclass computing another loss, which bce's rule must not stand in for."""

    name = "doubled_bce"

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        value, grad = super().value_and_grad(y_pred, y_true)
        return 2 * value, 2 * grad


@pytest.mark.parametrize("activation", [TwiceReLU, NamedReLU])
def test_a_relu_subclass_gets_no_fusion(activation: type[mf.Activation]) -> None:
    layers = [{"type": "linear", "units": 3}, activation()]
    model = mf.Sequential(layers, input_dim=2, loss="squared_error", seed=0)
    assert model.fusions == [("layers[0]", "linear")]  # the activation runs its own maths
    plain = mf.Sequential(layers, input_dim=2, loss="squared_error", seed=0, plan="plain")
    X, y = np.array([[40.0, -3.0], [2.0, 9.0], [-1.0, 0.5]]), np.full((3, 3), 3.0)
    value, grads = model.compute_gradients(X, y)
    plain_value, plain_grads = plain.compute_gradients(X, y)
    assert value == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-15)
    assert value == plain_value
    for g, g_plain in zip(grads, plain_grads, strict=True):
        np.testing.assert_array_equal(g, g_plain)
    W, b = model.get_weights()
    scale = 2 if activation is TwiceReLU else 1  # its own maths ran
    np.testing.assert_allclose(model.predict(X), scale * np.maximum(X @ W + b, 0), rtol=1e-14)


def test_a_bce_subclass_gets_no_fusion() -> None:
    X, y = np.array([[0.5, -1.0], [1.0, 2.0]]), np.array([0.0, 1.0])
    layers = [{"type": "linear", "units": 1}, "sigmoid"]
    plain = mf.Sequential(layers, input_dim=2, loss="bce", seed=0)
    doubled = mf.Sequential(layers, input_dim=2, loss=DoubledBCE(), seed=0)
    assert plain.fusions == [("layers[0]", "linear"), ("layers[1]", "sigmoid+bce")]
    assert doubled.fusions == [("layers[0..1]", "linear+sigmoid")]  # no loss rule
    value, grads = plain.compute_gradients(X, y)
    doubled_value, doubled_grads = doubled.compute_gradients(X, y)
    assert doubled_value == pytest.approx(2 * value, rel=1e-12)
    for g, g2 in zip(grads, doubled_grads, strict=True):
        np.testing.assert_allclose(g2, 2 * g, rtol=1e-12)


# -- compiled kernels --------------------------------------------------------------------------


def moons(n: int, rng: np.random.Generator) -> tuple[Array, Array]:
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    X = np.where(
        upper[:, None],
        np.column_stack([np.cos(t), np.sin(t)]),
        np.column_stack([1 - np.cos(t), 0.5 - np.sin(t)]),
    )
    return X + rng.normal(scale=0.2, size=X.shape), upper.astype(float)


def test_relu_takes_the_compiled_bias_pass_where_the_fast_extra_is_installed() -> None:
    """The test command installs the fast extra: the compiled kernels are what run here."""
    assert kernels.available()
    assert IN_PLACE[ReLU].bias_forward is not None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 7])
def test_the_compiled_bias_pass_trains_bit_for_bit_like_numpys(
    dtype: str, batch_size: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """linear+relu adds the bias in relu's compiled pass with numba, in NumPy's passes
    without: the same bits (and so do the compiled SGD step and one-unit gradient)."""
    X, labels = moons(60, np.random.default_rng(1))  # 60 rows: the last batch of 7 is smaller
    spec = {
        "spec_version": 1,
        "input_dim": 2,
        "layers": [
            {"type": "linear", "units": 8, "activation": "relu", "init": "he"},
            {"type": "linear", "units": 8, "activation": "relu", "init": "he"},
            {"type": "linear", "units": 1, "activation": "sigmoid"},
        ],
        "loss": "bce",
        "optimizer": {"type": "sgd", "lr": 0.1},
        "training": {"epochs": 30, "batch_size": batch_size, "shuffle": True},
        "seed": 7,
        "dtype": dtype,
    }
    results = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "available", lambda compiled=compiled: compiled)
        model = mf.build(spec)
        assert ("layers[0..1]", "linear+relu") in model.fusions
        results.append((model, model.fit(X, labels).history["loss"]))
    (compiled_model, compiled_loss), (numpy_model, numpy_loss) = results
    assert compiled_loss == numpy_loss
    assert compiled_loss[-1] < compiled_loss[0]
    for a, b in zip(compiled_model.get_weights(), numpy_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("in_place", [True, False])
def test_bias_relu_gives_numpys_bits(dtype: type, in_place: bool) -> None:
    """maximum(x + bias, 0) in one compiled pass: NaN kept (with its sign), -0.0 and exact
    cancellations give +0.0, infinities and the smallest numbers as NumPy has them."""
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
    """NUMBA_DISABLE_JIT=1 would run the kernels as Python loops: they are not used then, and
    the rules still apply (with NumPy's passes)."""
    code = (
        "import numpy as np, microfw as mf\n"
        "from microfw_plugins import kernels\n"
        "m = mf.Sequential([{'type': 'linear', 'units': 3, 'activation': 'relu'}, "
        "{'type': 'linear', 'units': 2}, 'softmax'], input_dim=2, "
        "loss='categorical_crossentropy', seed=0)\n"
        "h = m.fit(np.eye(2), np.eye(2), epochs=3)\n"
        "print(kernels.available(), len(m.fusions), np.isfinite(h.history['loss']).all())\n"
    )
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "3", "True"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_compiled_softmax_agrees_with_numpys_passes(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches take the compiled row-by-row softmax: the same values to rounding, the
    same NaN rows, and no overflow for large inputs."""
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
@pytest.mark.parametrize("rows", [4, 900])  # below and above the einsum threshold
def test_a_one_unit_linear_layer_gives_the_same_input_gradient_compiled_or_not(
    dtype: type, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(10)
    x = rng.standard_normal((rows, 25)).astype(dtype)
    dy = rng.standard_normal((rows, 1)).astype(dtype)
    grads = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "available", lambda compiled=compiled: compiled)
        layer = Linear(units=1)
        testing.built(layer, 25, dtype)
        layer.forward(x, True)
        grads.append(np.array(layer.backward(dy)))
    assert grads[0].dtype == dtype
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], np.multiply.outer(dy[:, 0], layer.W[:, 0]))


def test_a_numba_that_fails_to_import_gives_a_warning_and_the_numpy_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As numba does when NumPy was upgraded past what it supports."""
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
