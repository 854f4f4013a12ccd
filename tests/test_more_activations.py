"""The new activations equal torch.nn.functional's, forward and derivative, to 1e-12 in
float64, and are safe at +-1e3. References are written here in NumPy from the formulas torch
documents (no torch, no scipy: erf is math.erf element by element)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import microfw as mf

ERF = np.vectorize(math.erf, otypes=[float])
ALPHA, SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def sig(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def softplus_ref(x, beta=1.0, threshold=20.0):
    with np.errstate(over="ignore"):
        return np.where(beta * x > threshold, x, np.log1p(np.exp(beta * x)) / beta)


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu_tanh_d(x):
    k = math.sqrt(2 / math.pi)
    t = np.tanh(k * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * k * (1 + 3 * 0.044715 * x**2)


def mish_ref(x):
    return x * np.tanh(softplus_ref(x, threshold=np.inf))


def mish_d(x):
    t = np.tanh(softplus_ref(x, threshold=np.inf))
    return t + x * sig(x) * (1 - t**2)


# name/params: (forward reference, derivative reference), from torch's documented formulas
CASES = {
    "elu": (
        lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
        lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0))),
    ),
    "elu(alpha=0.5)": (
        lambda x: np.where(x > 0, x, 0.5 * np.expm1(np.minimum(x, 0))),
        lambda x: np.where(x > 0, 1.0, 0.5 * np.exp(np.minimum(x, 0))),
    ),
    "selu": (
        lambda x: SCALE * np.where(x > 0, x, ALPHA * np.expm1(np.minimum(x, 0))),
        lambda x: SCALE * np.where(x > 0, 1.0, ALPHA * np.exp(np.minimum(x, 0))),
    ),
    "gelu": (
        lambda x: 0.5 * x * (1 + ERF(x / math.sqrt(2))),
        lambda x: (
            0.5 * (1 + ERF(x / math.sqrt(2))) + x * np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
        ),
    ),
    "gelu(approximate=tanh)": (gelu_tanh, gelu_tanh_d),
    "softplus": (softplus_ref, lambda x: np.where(x > 20, 1.0, sig(x))),
    "softplus(beta=2.0,threshold=5.0)": (
        lambda x: softplus_ref(x, 2.0, 5.0),
        lambda x: np.where(2 * x > 5, 1.0, sig(2 * x)),
    ),
    "silu": (lambda x: x * sig(x), lambda x: sig(x) * (1 + x * (1 - sig(x)))),
    "hard_sigmoid": (
        lambda x: np.clip(x + 3, 0, 6) / 6,
        lambda x: np.where((x > -3) & (x < 3), 1 / 6, 0.0),
    ),
    "relu6": (lambda x: np.clip(x, 0, 6), lambda x: np.where((x > 0) & (x < 6), 1.0, 0.0)),
    "mish": (mish_ref, mish_d),
}


def _create(case):
    name, _, args = case.partition("(")
    params = {}
    for item in filter(None, args.rstrip(")").split(",")):
        key, value = item.split("=")
        params[key] = value if value.isalpha() else float(value)
    return mf.default_registry().create("activation", {"type": name, **params})


POINTS = np.concatenate(
    [
        [-1e3, -745.0, -100.0, -30.0, -20.5, -6.0, -3.0, -1e-8, 0.0, 1e-8, 3.0, 6.0, 19.9],
        [20.5, 30.0, 100.0, 745.0, 1e3],
        np.random.default_rng(0).normal(0, 3, 200),
    ]
)


@pytest.mark.parametrize("case", CASES)
def test_equals_the_torch_formula_forward_and_derivative(case):
    act = _create(case)
    forward, derivative = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings, even at +-1e3
        y = act.forward(POINTS)
        d = act.derivative(POINTS, y)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(y, forward(POINTS), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(d, derivative(POINTS), rtol=1e-12, atol=1e-300)
    assert np.isfinite(y).all() and np.isfinite(d).all()


@pytest.mark.parametrize("case", CASES)
def test_float32_stays_float32_and_finite_at_the_extremes(case):
    act = _create(case)
    x = POINTS.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = act.forward(x)
        d = act.derivative(x, y)
    assert y.dtype == d.dtype == np.float32
    assert np.isfinite(y).all() and np.isfinite(d).all()
    np.testing.assert_allclose(y, act.forward(POINTS), rtol=1e-5, atol=1e-6)


def test_known_values():
    # A few values anyone can check by hand.
    assert _create("relu6").forward(np.array([7.0]))[0] == 6.0
    assert _create("hard_sigmoid").forward(np.array([0.0]))[0] == 0.5
    assert _create("softplus").forward(np.array([0.0]))[0] == pytest.approx(math.log(2), rel=1e-15)
    assert _create("gelu").forward(np.array([1.0]))[0] == pytest.approx(0.8413447460685429, 1e-15)
    assert _create("silu").forward(np.array([-1e3]))[0] == 0.0
