"""Regularizers: Keras's penalties, added to the loss and the gradients by the model."""

from __future__ import annotations

import numpy as np
import pytest

import microfw as mf
from microfw import testing


def _model(**linear: object) -> mf.Sequential:
    return mf.Sequential(
        [
            {"type": "linear", "units": 5, "activation": "tanh", **linear},
            {"type": "linear", "units": 1},
        ],
        input_dim=3,
        loss="squared_error",
        seed=2,
    )


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((20, 3)), rng.standard_normal((20, 1))


@pytest.mark.parametrize(
    ("ref", "value", "grad"),
    [
        (
            {"type": "l1", "factor": 0.3},
            lambda w: 0.3 * np.abs(w).sum(),
            lambda w: 0.3 * np.sign(w),
        ),
        ({"type": "l2", "factor": 0.3}, lambda w: 0.3 * (w**2).sum(), lambda w: 0.6 * w),
        (
            {"type": "l1_l2", "l1": 0.1, "l2": 0.2},
            lambda w: 0.1 * np.abs(w).sum() + 0.2 * (w**2).sum(),
            lambda w: 0.1 * np.sign(w) + 0.4 * w,
        ),
    ],
)
def test_penalty_and_gradient_are_keras_definitions_and_reach_the_model(ref, value, grad):
    X, y = _data()
    plain, regular = _model(), _model(kernel_regularizer=ref, bias_regularizer=ref)
    loss0, grads0 = plain.compute_gradients(X, y)
    loss1, grads1 = regular.compute_gradients(X, y)
    W, b = regular.get_weights()[:2]
    assert loss1 == pytest.approx(loss0 + value(W) + value(b), rel=1e-14)
    np.testing.assert_allclose(grads1[0], grads0[0] + grad(W), rtol=1e-13)
    np.testing.assert_allclose(grads1[1], grads0[1] + grad(b), rtol=1e-13, atol=1e-15)
    for g1, g0 in zip(grads1[2:], grads0[2:], strict=True):  # the unregularized layer
        np.testing.assert_array_equal(g1, g0)
    assert regular.evaluate(X, y)["loss"] == pytest.approx(loss1, rel=1e-14)


def test_history_loss_includes_the_penalty_as_in_keras():
    X, y = _data()
    model = _model(kernel_regularizer={"type": "l2", "factor": 0.5})
    expected = model.evaluate(X, y)["loss"]  # full batch: measured before the update
    history = model.fit(X, y, epochs=1, validation_data=(X, y))
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-14)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(X, y)["loss"])


def test_l2_with_factor_alpha_over_2n_is_scikit_learns_alpha():
    """scikit-learn's MLP (``_backprop``): loss += alpha / (2 n) * sum of squared weights (not
    intercepts), and each weight gradient gets alpha / n * W; microfw's squared_error
    (1/(2n) sum of squares, one output) is its squared loss."""
    X, y = _data()
    alpha, n = 0.7, X.shape[0]
    reg = {"type": "l2", "factor": alpha / (2 * n)}
    model = mf.Sequential(
        [
            {"type": "linear", "units": 5, "activation": "relu", "kernel_regularizer": reg},
            {"type": "linear", "units": 1, "kernel_regularizer": reg},
        ],
        input_dim=3,
        loss="squared_error",
        seed=4,
    )
    W1, b1, W2, b2 = model.get_weights()
    # scikit-learn's forward, loss and backward, written out.
    h = np.maximum(X @ W1 + b1, 0)
    out = h @ W2 + b2
    sk_loss = ((y - out) ** 2).mean() / 2 + 0.5 * alpha * ((W1**2).sum() + (W2**2).sum()) / n
    delta = out - y
    gW2 = (h.T @ delta + alpha * W2) / n
    gW1 = (X.T @ ((delta @ W2.T) * (h > 0)) + alpha * W1) / n
    loss, grads = model.compute_gradients(X, y)
    assert loss == pytest.approx(sk_loss, rel=1e-13)
    np.testing.assert_allclose(grads[0], gW1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads[2], gW2, rtol=1e-12, atol=1e-15)


def test_regularizers_are_plugin_references_with_paths():
    with pytest.raises(mf.SpecError, match=r"layers\[0\].kernel_regularizer.type"):
        _model(kernel_regularizer={"type": "l3"})
    with pytest.raises(mf.SpecError, match=r"layers\[0\].bias_regularizer.factor"):
        _model(bias_regularizer={"type": "l2", "factor": -1.0})
    model = _model(kernel_regularizer="l2")
    spec = model.to_spec().model_dump()
    assert spec["layers"][0]["kernel_regularizer"] == {"type": "l2", "factor": 0.01}
    assert spec["layers"][0]["bias_regularizer"] is None
    again = mf.build(spec)
    assert again.store.regularized[0][0] == "layers.0.W"


def test_the_json_schema_lists_the_regularizers():
    schema = mf.json_schema()
    linear = schema["$defs"]["layer.linear"]["properties"]["kernel_regularizer"]
    assert {"type": "null"} in linear["anyOf"]
    assert {"$ref": "#/$defs/regularizer_ref"} in linear["anyOf"]
    assert "regularizer.l1_l2" in schema["$defs"]


def test_the_contract_check_catches_a_wrong_gradient():
    class Half(mf.Regularizer):
        """penalty = sum(w**2) with the gradient w (off by 2)."""

        name = "half_wrong"

        def value(self, w):
            return float((w**2).sum())

        def grad(self, w):
            return w.copy()

    with pytest.raises(AssertionError, match=r"check_regularizer failed.*grad differs"):
        testing.check_regularizer(Half)


def test_a_layer_passing_something_else_as_regularizer_is_named():
    class Odd(mf.Layer):
        """y = x w (declares its weight with a bogus regularizer)."""

        name = "odd"

        def build(self, n_in, store):
            self.w = store.add("w", (n_in,), 1.0, "l2")

        def forward(self, x, training=False):
            return x * self.w

        def backward(self, dy):
            return dy * self.w

    with pytest.raises(mf.PluginError, match=r"layer\.w: regularizer must be a Regularizer"):
        testing.built(Odd(), 3)
