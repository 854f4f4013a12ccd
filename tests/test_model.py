"""Sequential: construction, weights, gradients against central differences, input checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import microfw as mf
from microfw.core.rng import LegacyRNG, make_streams

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0.0, 1.0, 1.0, 0.0])


def xor_model(**changes: Any) -> mf.Sequential:
    settings: dict[str, Any] = {
        "input_dim": 2,
        "loss": "squared_error",
        "optimizer": {"type": "sgd", "lr": 1.0},
        "seed": 48,
        "rng": "legacy",
        **changes,
    }
    layers = [{"type": "linear", "units": 3}, "sigmoid", {"type": "linear", "units": 1}, "sigmoid"]
    return mf.Sequential(layers, **settings)


def test_legacy_rng_reproduces_the_seed_tutorial_weights() -> None:
    W1, b1, W2, b2 = xor_model().get_weights()
    # The tutorial prints W (n_out, n_in); microfw stores its transpose.
    expected_W1 = [[-0.702603, -0.751938], [-0.451188, 0.750657], [-0.111302, 0.773383]]
    np.testing.assert_allclose(W1.T, expected_W1, atol=5e-7)
    np.testing.assert_allclose(W2.T, [[-1.197918, 0.404511, 0.966853]], atol=5e-7)
    assert not b1.any() and not b2.any()
    assert (W1.shape, b1.shape, W2.shape, b2.shape) == ((2, 3), (3,), (3, 1), (1,))


def test_legacy_rng_draws_weight_then_bias_in_the_tutorial_layout() -> None:
    normal = {"type": "normal", "std": 0.1}
    model = mf.Sequential(
        [
            {"type": "linear", "units": 4, "init": normal, "bias_init": normal},
            "relu",
            {"type": "linear", "units": 1, "init": normal, "bias_init": normal},
        ],
        input_dim=2,
        loss="squared_error",
        seed=2,
        rng="legacy",
    )
    state = np.random.RandomState(2)
    expected = []
    for n_in, n_out in [(2, 4), (4, 1)]:
        expected.append(state.randn(n_out, n_in).T * 0.1)
        expected.append(state.randn(n_out, 1).ravel() * 0.1)
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_legacy_adapter_transposes_only_matrices() -> None:
    rng = LegacyRNG(np.random.RandomState(7))
    ref = np.random.RandomState(7)
    np.testing.assert_array_equal(rng.standard_normal((2, 3)), ref.standard_normal((3, 2)).T)
    np.testing.assert_array_equal(rng.uniform(-1, 1, (4, 2)), ref.uniform(-1, 1, (2, 4)).T)
    np.testing.assert_array_equal(rng.standard_normal((5,)), ref.standard_normal(5))
    assert rng.standard_normal((2, 3)).flags.c_contiguous


def test_streams_are_independent_and_reproducible() -> None:
    a, b = make_streams(3), make_streams(3)
    assert a.init.standard_normal((3,)).tolist() == b.init.standard_normal((3,)).tolist()
    assert a.shuffle.permutation(10).tolist() != a.split.permutation(10).tolist()
    same = mf.Sequential(["sigmoid"], input_dim=2, loss="squared_error", seed=1)
    assert same.streams.shuffle.random() == make_streams(1).shuffle.random()
    first = xor_model(rng="pcg64", seed=5).get_weights()
    other = xor_model(rng="pcg64", seed=5, training={"shuffle": False, "batch_size": 2})
    for x, y in zip(first, other.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_numpy_integers_are_accepted_as_arguments() -> None:
    model = xor_model(input_dim=np.int64(2), seed=np.uint32(48))
    assert (model.input_dim, model.seed) == (2, 48)
    assert type(model.to_spec().input_dim) is int


def test_predict_and_evaluate() -> None:
    model = xor_model()
    out = model.predict(XOR_X)
    assert out.shape == (4, 1) and out.dtype == np.float64
    result = model.evaluate(XOR_X, XOR_Y)
    assert set(result) == {"loss", "accuracy"}
    assert result["loss"] == pytest.approx(0.12926510193084198, rel=1e-15)
    no_labels = model.evaluate(XOR_X, XOR_Y * 0.5)
    assert set(no_labels) == {"loss"}


def test_get_weights_returns_copies_and_set_weights_validates() -> None:
    model = xor_model()
    weights = model.get_weights()
    weights[0][:] = 0
    assert model.get_weights()[0].any()
    model.set_weights(weights)
    assert not model.get_weights()[0].any()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"expected 4 arrays .* got 3"):
        model.set_weights(weights[:3])
    bad = [*weights[:2], np.zeros((1, 3)), weights[3]]
    with pytest.raises(
        ValueError, match=r"array 2 \(layers.2.W\) has shape \(1, 3\), expected \(3, 1\)"
    ):
        model.set_weights(bad)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.zeros(4), XOR_Y, r"X has shape \(4,\); expected \(n_samples, 2\)"),
        (np.zeros((4, 3)), XOR_Y, r"X has shape \(4, 3\); expected \(n_samples, 2\)"),
        (XOR_X, np.zeros(3), r"y has shape \(3,\); expected \(4, 1\)"),
        (XOR_X, np.zeros((4, 2)), r"y has shape \(4, 2\); expected \(4, 1\)"),
        (np.where(XOR_X == 1, np.nan, 0), XOR_Y, r"X contains non-finite values"),
        (XOR_X, [0, np.inf, 1, 0], r"y contains non-finite values \(first at index \(1, 0\)\)"),
    ],
)
def test_inputs_are_checked(X: Any, y: Any, message: str) -> None:
    model = xor_model()
    for call in (model.fit, model.evaluate, model.compute_gradients):
        with pytest.raises(ValueError, match=message):
            call(X, y)


def test_loss_checks_targets() -> None:
    model = xor_model(loss="bce")
    with pytest.raises(ValueError, match=r"bce targets must lie in \[0, 1\]"):
        model.fit(XOR_X, [0, 2, 1, 0])


def test_float32_end_to_end() -> None:
    model = xor_model(dtype="float32", rng="pcg64")
    assert all(w.dtype == np.float32 for w in model.get_weights())
    history = model.fit(XOR_X, XOR_Y, epochs=3)
    assert model.predict(XOR_X).dtype == np.float32
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert np.isfinite(history.history["loss"]).all()
    assert model.to_spec().dtype == "float32"


HIDDEN = ["sigmoid", "tanh", "relu", {"type": "leaky_relu", "alpha": 0.1}, "identity"]


def random_spec(rng: np.random.Generator) -> dict[str, Any]:
    """A random deep network: 2-4 hidden linear layers with random activations, random head.

    Biases are random too: with zero biases a sample whose ReLU units are all off reaches the
    next layer as exactly 0, a kink where finite differences are meaningless.
    """
    layers: list[Any] = []
    bias = {"type": "normal", "std": 0.5}
    for _ in range(rng.integers(2, 5)):
        units = int(rng.integers(2, 7))
        layers.append(
            {"type": "linear", "units": units, "init": "glorot_normal", "bias_init": bias}
        )
        layers.append(HIDDEN[rng.integers(len(HIDDEN))])
    n_out = int(rng.integers(1, 4))
    head = rng.integers(3)
    if head == 0:
        layers += [{"type": "linear", "units": n_out}, "sigmoid"]
        loss: Any = "squared_error"
    elif head == 1:
        layers.append({"type": "linear", "units": n_out})
        loss = {"type": "bce", "from_logits": True}
    else:
        layers += [{"type": "linear", "units": n_out + 1}, "softmax"]
        loss = "categorical_crossentropy"
    return {
        "spec_version": 1,
        "input_dim": int(rng.integers(1, 5)),
        "layers": layers,
        "loss": loss,
        "seed": int(rng.integers(1000)),
    }


def targets(rng: np.random.Generator, model: mf.Sequential, n: int) -> np.ndarray:
    if model.loss.name == "categorical_crossentropy":
        return np.eye(model.output_dim)[rng.integers(model.output_dim, size=n)]
    return rng.integers(0, 2, size=(n, model.output_dim)).astype(float)


@pytest.mark.parametrize("seed", range(16))
def test_compute_gradients_match_central_differences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    model = mf.build(random_spec(rng))
    X = rng.normal(size=(7, model.input_dim))
    y = targets(rng, model, 7)
    weights = model.get_weights()
    loss, grads = model.compute_gradients(X, y)
    assert loss == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-15)
    h = 1e-4
    for w, g in zip(weights, grads, strict=True):
        assert g.shape == w.shape
        numeric = np.zeros_like(w)
        for index in np.ndindex(w.shape):
            saved = w[index]
            at = {}
            for step in (-2, -1, 1, 2):
                w[index] = saved + step * h
                model.set_weights(weights)
                at[step] = model.evaluate(X, y)["loss"]
            w[index] = saved
            # The five-point stencil: truncation error O(h^4), so h can be large enough for
            # rounding (eps * loss / h) to stay far below the 1e-7 tolerance.
            numeric[index] = (8 * (at[1] - at[-1]) - (at[2] - at[-2])) / (12 * h)
        model.set_weights(weights)
        scale = max(np.abs(g).max(), np.abs(numeric).max(), 1e-12)
        assert np.abs(g - numeric).max() / scale < 1e-7, (model, g, numeric)


def test_compute_gradients_does_not_update() -> None:
    model = xor_model()
    before = model.get_weights()
    loss, grads = model.compute_gradients(XOR_X, XOR_Y)
    assert loss == 0.12926510193084198
    assert len(grads) == 4
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_predict_never_returns_the_callers_array() -> None:
    model = mf.Sequential(["identity"], input_dim=2, loss="squared_error")
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = model.predict(X)
    np.testing.assert_array_equal(out, X)
    out[0, 0] = 99.0
    assert X[0, 0] == 1.0
