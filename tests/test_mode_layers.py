"""dropout, batch_norm and layer_norm: their maths (NumPy references written from
torch.nn.Dropout / BatchNorm1d / LayerNorm's documented formulas) and the training mode
reaching them through fit, evaluate, predict and model files."""

from __future__ import annotations

import numpy as np
import pytest

import microfw as mf
from microfw import testing
from microfw.core.rng import named_stream

RNG = np.random.default_rng(7)


def _layer(ref, n_in, dtype=np.float64):
    layer = mf.default_registry().create("layer", ref) if not isinstance(ref, mf.Layer) else ref
    store = testing.built(layer, n_in, dtype)
    return layer, store


# -- batch_norm ---------------------------------------------------------------------------------


def test_batch_norm_training_uses_batch_statistics_and_updates_running_ones_as_torch():
    layer, store = _layer({"type": "batch_norm", "momentum": 0.2, "eps": 1e-3}, 3)
    gamma, beta = store["layer.gamma"], store["layer.beta"]
    gamma[...] = [1.5, -0.5, 2.0]
    beta[...] = [0.1, 0.2, -0.3]
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = RNG.normal(2.0, 3.0, (8, 3))
        y = layer.forward(x, training=True)
        mean, var = x.mean(axis=0), x.var(axis=0)  # biased
        expected = gamma * (x - mean) / np.sqrt(var + 1e-3) + beta
        np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-14)
        rm = 0.8 * rm + 0.2 * mean
        rv = 0.8 * rv + 0.2 * x.var(axis=0, ddof=1)  # unbiased
        np.testing.assert_allclose(store["layer.running_mean"], rm, rtol=1e-12)
        np.testing.assert_allclose(store["layer.running_var"], rv, rtol=1e-12)
    x = RNG.normal(size=(4, 3))
    inference = layer.forward(x)
    np.testing.assert_allclose(inference, gamma * (x - rm) / np.sqrt(rv + 1e-3) + beta, rtol=1e-12)
    np.testing.assert_array_equal(store["layer.running_mean"], rm)  # inference leaves them


def test_batch_norm_defaults_and_switches():
    layer = mf.default_registry().create("layer", "batch_norm")
    assert (layer.momentum, layer.eps, layer.center, layer.scale) == (0.1, 1e-5, True, True)
    bare, store = _layer({"type": "batch_norm", "center": False, "scale": False}, 2)
    assert store.names(trainable=True) == []
    assert store.names(trainable=False) == ["layer.running_mean", "layer.running_var"]
    x = RNG.normal(size=(6, 2))
    np.testing.assert_allclose(
        bare.forward(x, True), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-12
    )
    testing.check_layer_gradient(bare)


def test_batch_norm_refuses_a_one_row_training_batch():
    layer, _ = _layer("batch_norm", 2)
    with pytest.raises(ValueError, match="at least 2 rows"):
        layer.forward(np.ones((1, 2)), training=True)
    assert layer.forward(np.ones((1, 2))).shape == (1, 2)  # inference is fine


def test_batch_norm_inference_gradient_is_the_affine_map():
    # Inference is y = gamma (x - rm) / sqrt(rv + eps) + beta: its derivative in x is constant.
    layer, store = _layer("batch_norm", 3)
    layer.forward(RNG.normal(size=(10, 3)), training=True)
    x = RNG.normal(size=(2, 3))
    h = 1e-6
    numeric = (layer.forward(x + h) - layer.forward(x - h)) / (2 * h)
    expected = store["layer.gamma"] / np.sqrt(store["layer.running_var"] + 1e-5)
    np.testing.assert_allclose(numeric, np.broadcast_to(expected, x.shape), rtol=1e-8)


# -- layer_norm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_is_torch_layer_norm_in_both_modes(affine):
    layer, store = _layer({"type": "layer_norm", "eps": 1e-4, "elementwise_affine": affine}, 5)
    x = RNG.normal(1.0, 4.0, (6, 5))
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-4)
    if affine:
        store["layer.gamma"][...] = RNG.normal(size=5)
        store["layer.beta"][...] = RNG.normal(size=5)
        expected = expected * store["layer.gamma"] + store["layer.beta"]
    else:
        assert store.names() == []
    np.testing.assert_allclose(layer.forward(x, True), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-14)
    testing.check_layer_gradient(layer)


# -- dropout ------------------------------------------------------------------------------------


def splitmix64(seed, i):
    """Output i (from 0) of splitmix64 started at ``seed``, in Python integers."""
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


def test_splitmix64_reference_gives_the_published_first_output():
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF


def test_dropout_masks_are_the_same_compiled_or_not():
    from microfw_plugins import kernels, ops

    x = RNG.normal(size=(9, 13)).astype(np.float32)
    expected = ops.dropout_keep(2**63 + 12345, 2**31, x.shape)
    if not kernels.available():
        pytest.skip("numba not available")
    keep, out = np.empty(x.shape, bool), np.empty_like(x)
    kernels.dropout_mask(2**63 + 12345, 2**31, x, 2.0, keep, out)
    np.testing.assert_array_equal(keep, expected)
    np.testing.assert_array_equal(out, np.where(expected, x * np.float32(2.0), 0))


def test_dropout_is_inverted_dropout_from_its_own_stream():
    layer, _ = _layer({"type": "dropout", "rate": 0.25}, 4)
    x = RNG.normal(size=(50, 4))
    y = layer.forward(x, training=True).copy()  # the layer reuses its output buffer
    seed = int(
        named_stream(np.random.SeedSequence(testing.SEED), "layer.mask").bit_generator.random_raw()
    )
    keep = np.array([splitmix64(seed, i) >> 32 >= round(0.25 * 2**32) for i in range(x.size)])
    keep = keep.reshape(x.shape)
    # torch: x * mask * (1 / (1 - p))
    np.testing.assert_array_equal(y, np.where(keep, x * (1 / 0.75), 0.0))
    dy = RNG.normal(size=x.shape)
    np.testing.assert_array_equal(layer.backward(dy), np.where(keep, dy * (1 / 0.75), 0.0))
    again = layer.forward(x, training=True)  # the next batch draws a new mask
    assert not np.array_equal(again, y)
    np.testing.assert_array_equal(layer.forward(x), x)  # inference: the identity
    assert layer.forward(x) is not x


def test_dropout_rate_zero_keeps_everything_and_the_kept_fraction_is_about_one_minus_rate():
    keep_all, _ = _layer({"type": "dropout", "rate": 0.0}, 3)
    x = RNG.normal(size=(5, 3))
    np.testing.assert_array_equal(keep_all.forward(x, True), x)
    half, _ = _layer({"type": "dropout", "rate": 0.5}, 100)
    kept = np.count_nonzero(half.forward(np.ones((100, 100)), True)) / 1e4
    assert 0.47 < kept < 0.53


def test_dropout_masks_are_the_same_in_float32_and_float64():
    a, _ = _layer("dropout", 6, np.float64)
    b, _ = _layer("dropout", 6, np.float32)
    x = RNG.normal(size=(7, 6))
    np.testing.assert_array_equal(
        a.forward(x, True) == 0, b.forward(x.astype(np.float32), True) == 0
    )


# -- models -------------------------------------------------------------------------------------

SPEC = {
    "spec_version": 1,
    "input_dim": 4,
    "layers": [
        {"type": "linear", "units": 16, "init": "he"},
        "batch_norm",
        "relu",
        {"type": "dropout", "rate": 0.3},
        {"type": "linear", "units": 8, "init": "he"},
        "layer_norm",
        "relu",
        {"type": "linear", "units": 3},
        "softmax",
    ],
    "loss": "categorical_crossentropy",
    "optimizer": {"type": "sgd", "lr": 0.1},
    "training": {"epochs": 3, "batch_size": 16},
    "seed": 3,
}


def _data(n=96):
    X = RNG.normal(size=(n, 4))
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    return X, np.eye(3)[labels]


def test_a_model_with_dropout_and_batch_norm_trains_saves_loads_and_predicts_identically(tmp_path):
    X, y = _data()
    model = mf.build(SPEC)
    history = model.fit(X, y)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.store.names(trainable=False) == ["layers.1.running_mean", "layers.1.running_var"]
    assert not np.array_equal(model.store.state[:16], np.zeros(16))  # running mean moved
    predicted = model.predict(X)
    np.testing.assert_array_equal(model.predict(X), predicted)  # inference: repeatable
    model.save(tmp_path / "m.mfw")
    loaded = mf.load(tmp_path / "m.mfw")
    np.testing.assert_array_equal(loaded.store.state, model.store.state)
    np.testing.assert_array_equal(loaded.predict(X), predicted)
    assert loaded.evaluate(X, y) == model.evaluate(X, y)


def test_a_run_with_dropout_repeats_exactly_and_depends_on_the_seed():
    X, y = _data()
    runs = [mf.build(SPEC) for _ in range(2)]
    losses = [m.fit(X, y).history["loss"] for m in runs]
    assert losses[0] == losses[1]
    np.testing.assert_array_equal(runs[0].store.params, runs[1].store.params)
    other = mf.build({**SPEC, "seed": 4})
    other.set_weights(mf.build(SPEC).get_weights())  # same start, other dropout masks
    assert other.fit(X, y).history["loss"] != losses[0]


def test_dropout_layers_leave_the_other_streams_alone():
    # Adding dropout changes neither the initial weights nor the shuffling.
    plain = {**SPEC, "layers": [s for s in SPEC["layers"] if s != {"type": "dropout", "rate": 0.3}]}
    a, b = mf.build(SPEC), mf.build(plain)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert a.streams.shuffle.random() == b.streams.shuffle.random()


def test_fit_trains_in_training_mode_and_validates_evaluates_predicts_in_inference_mode():
    X, y = _data()
    model = mf.build(SPEC)
    model.predict(X[:2])  # the model's first check of its layers' outputs, done
    calls: list[bool] = []
    layer = model.layers[3]
    forward = layer.forward

    def spy(x, training=False):
        calls.append(training)
        return forward(x, training)

    layer.forward = spy
    history = model.fit(X[:80], y[:80], validation_data=(X[80:], y[80:]), epochs=1)
    assert calls and all(calls[:-1]) and calls[-1] is False  # 5 batches, then validation
    assert history.history["val_loss"][0] == model.evaluate(X[80:], y[80:])["loss"]
    calls.clear()
    model.predict(X)
    model.evaluate(X, y)
    assert calls == [False, False]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_running_statistics_go_back_with_the_weights_after_a_divergence():
    spec = {
        "spec_version": 1,
        "input_dim": 2,
        "layers": [{"type": "linear", "units": 3}, "batch_norm", {"type": "linear", "units": 1}],
        "loss": "squared_error",
        "optimizer": {"type": "sgd", "lr": 1e6},
        "training": {"epochs": 20},
        "seed": 0,
    }
    model = mf.build(spec)
    X = RNG.normal(size=(10, 2))
    state = model.store.state.copy()
    with pytest.raises(mf.TrainingError):
        model.fit(X, 1e3 * X[:, :1])
    assert np.isfinite(model.store.state).all()
    assert model.store.state.shape == state.shape


def test_early_stopping_restores_the_running_statistics_of_the_best_epoch():
    X, y = _data()
    model = mf.build({**SPEC, "training": {"epochs": 8, "batch_size": 16}})
    best: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    class Record(mf.Callback):
        def on_epoch_end(self, epoch, logs):
            best[epoch] = (model.store.params.copy(), model.store.state.copy())

    stop = mf.EarlyStopping(monitor="loss", patience=8, restore_best=True)
    model.fit(X, y, callbacks=[Record(), stop])
    params, state = best[stop.best_epoch]
    np.testing.assert_array_equal(model.store.params, params)
    np.testing.assert_array_equal(model.store.state, state)


@pytest.mark.parametrize(("dtype", "rtol"), [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_batch_norm_gives_the_same_compiled_or_not(monkeypatch, dtype, rtol):
    from microfw_plugins import kernels

    if not kernels.available():
        pytest.skip("numba not available")
    results = []
    for compiled in (True, False):
        monkeypatch.setattr(kernels, "available", lambda compiled=compiled: compiled)
        layer, store = _layer("batch_norm", 6, dtype)
        store["layer.gamma"][...] = np.linspace(0.5, 2, 6)
        store["layer.beta"][...] = np.linspace(-1, 1, 6)
        rng = np.random.default_rng(5)
        x = rng.normal(3.0, 2.0, (9, 6)).astype(dtype)
        y = layer.forward(x, training=True).copy()
        dx = layer.backward(rng.normal(size=(9, 6)).astype(dtype)).copy()
        results.append((y, dx, store.grads.copy(), store.state.copy()))
    for compiled, plain in zip(*results, strict=True):
        assert compiled.dtype == plain.dtype == dtype
        np.testing.assert_allclose(compiled, plain, rtol=rtol, atol=rtol)
