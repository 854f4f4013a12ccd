"""he_uniform, lecun_uniform, orthogonal, constant, truncated_normal: their defining properties
(the contract kit checks their variances)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import microfw as mf
from microfw.core.rng import LegacyRNG


def _init(ref):
    return mf.default_registry().create("initializer", ref)


@pytest.mark.parametrize(
    ("name", "limit"), [("he_uniform", math.sqrt(6 / 50)), ("lecun_uniform", math.sqrt(3 / 50))]
)
def test_uniform_limits(name, limit):
    w = _init(name)((50, 20), np.random.default_rng(0))
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.95 * limit  # the whole interval is used


@pytest.mark.parametrize("shape", [(30, 10), (10, 30), (16, 16)])
def test_orthogonal_has_orthonormal_columns_or_rows_times_gain(shape):
    w = _init({"type": "orthogonal", "gain": 2.0})(shape, np.random.default_rng(1))
    assert w.shape == shape
    small = min(shape)
    gram = w.T @ w if shape[0] >= shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)
    bias = _init("orthogonal")((7,), np.random.default_rng(1))
    assert np.linalg.norm(bias) == pytest.approx(1.0)


def test_orthogonal_draws_through_the_legacy_adapter_too():
    w = _init("orthogonal")((8, 3), LegacyRNG(np.random.RandomState(0)))
    np.testing.assert_allclose(w.T @ w, np.eye(3), atol=1e-12)


def test_constant_and_truncated_normal():
    np.testing.assert_array_equal(
        _init({"type": "constant", "value": 0.3})((2, 3), None), np.full((2, 3), 0.3)
    )
    w = _init({"type": "truncated_normal", "std": 0.5})((200, 100), np.random.default_rng(2))
    assert np.abs(w).max() <= 1.0  # cut at 2 standard deviations
    assert np.abs(w).max() > 0.98
    assert np.var(w) == pytest.approx(0.7737413 * 0.25, rel=0.02)


def test_a_model_uses_them_by_name():
    model = mf.Sequential(
        [
            {
                "type": "linear",
                "units": 4,
                "init": "orthogonal",
                "bias_init": {"type": "constant", "value": 0.1},
            },
            "relu",
            {"type": "linear", "units": 1, "init": "he_uniform"},
        ],
        input_dim=4,
        loss="mse",
        seed=0,
    )
    W, b = model.get_weights()[:2]
    np.testing.assert_allclose(W.T @ W, np.eye(4), atol=1e-12)
    np.testing.assert_array_equal(b, np.full(4, 0.1))
