"""Bad data through fit, evaluate, compute_gradients and predict: refused before training.

What is converted (documented in :meth:`microfw.Sequential.check_X`): bool, integer and float
arrays (and nested lists of them) become the model's dtype. Strings, objects, complex numbers
and dates are refused, as are NaN and infinity, empty data, wrong widths and mismatched lengths.
``test_model.py`` covers the basic shape checks; here every entry point meets every kind of bad
input, and the model is proven untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import microfw as mf

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([0.0, 1.0, 1.0, 0.0])


class Spy(mf.Callback):
    """Records whether training began."""

    def __init__(self) -> None:
        self.began = False

    def on_train_begin(self, logs: Any = None) -> None:
        self.began = True


def binary(dtype: str = "float64") -> mf.Sequential:
    return mf.Sequential(
        [{"type": "linear", "units": 3, "activation": "tanh"}, {"type": "linear", "units": 1}],
        input_dim=2,
        loss={"type": "bce", "from_logits": True},
        seed=0,
        dtype=dtype,  # type: ignore[arg-type]
    )


def three_classes() -> mf.Sequential:
    return mf.Sequential(
        [{"type": "linear", "units": 3}, "softmax"],
        input_dim=2,
        loss="categorical_crossentropy",
        seed=0,
    )


def fit(model: mf.Sequential, X: Any, y: Any, callbacks: list[mf.Callback] | None = None) -> Any:
    return model.fit(X, y, epochs=2, batch_size=2, callbacks=callbacks or [])


CALLS: dict[str, Callable[[mf.Sequential, Any, Any], Any]] = {
    "fit": fit,
    "evaluate": lambda m, X, y: m.evaluate(X, y),
    "compute_gradients": lambda m, X, y: m.compute_gradients(X, y),
    "predict": lambda m, X, y: m.predict(X),
}
ALL = list(CALLS)
WITH_Y = ["fit", "evaluate", "compute_gradients"]

BAD: list[tuple[str, Any, Any, str, list[str]]] = [
    (
        "NaN in X",
        [[0, 0], [np.nan, 1], [1, 0], [1, 1]],
        Y,
        r"X contains non-finite .*\(1, 0\)",
        ALL,
    ),
    (
        "inf in X",
        [[0, 0], [0, 1], [1, -np.inf], [1, 1]],
        Y,
        r"X contains non-finite .*\(2, 1\)",
        ALL,
    ),
    ("NaN in y", X, [0, 1, np.nan, 0], r"y contains non-finite .*\(2, 0\)", WITH_Y),
    ("3 columns", np.zeros((4, 3)), Y, r"X has shape \(4, 3\); expected \(n_samples, 2\)", ALL),
    ("1 column", np.zeros((4, 1)), Y, r"X has shape \(4, 1\)", ALL),
    ("3-D X", X[:, :, None], Y, r"X has shape \(4, 2, 1\)", ALL),
    ("1-D X", X.ravel(), Y, r"X has shape \(8,\)", ALL),
    ("scalar X", 3.0, Y, r"X has shape \(\)", ALL),
    ("no X", None, Y, "X has dtype object", ALL),
    ("3-D y", X, Y[:, None, None], r"y has shape \(4, 1, 1\)", WITH_Y),
    ("longer y", X, np.zeros(5), r"y has shape \(5,\); expected \(4, 1\)", WITH_Y),
    ("shorter X", X[:3], Y, r"y has shape \(4,\); expected \(3, 1\)", WITH_Y),
    ("empty", np.zeros((0, 2)), np.zeros(0), "no samples", WITH_Y),
    ("strings", X.astype(str), Y, "X has dtype <U32; expected numbers", ALL),
    ("string y", X, Y.astype(str), "y has dtype <U32; expected numbers", WITH_Y),
    ("objects", X.astype(object), Y, "X has dtype object; expected numbers", ALL),
    ("complex", X + 1j, Y, "X has dtype complex128; expected numbers", ALL),
    ("complex y", X, Y + 0j, "y has dtype complex128; expected numbers", WITH_Y),
    ("dates", X.astype("datetime64[s]"), Y, r"X has dtype datetime64\[s\]", ALL),
    ("bytes", X.astype(bytes), Y, "X has dtype |S32", ALL),
    ("ragged", [[0, 0], [1]], Y[:2], "X could not be read as an array", ALL),
    ("bce label 2", X, [0, 2, 1, 0], r"bce targets must lie in \[0, 1\]; 1 value\(s\)", WITH_Y),
    ("bce label -1", X, [0, -1, 1, 0], r"bce targets .*e\.g\. \[-1\.0\]", WITH_Y),
]


@pytest.mark.parametrize(
    ("X", "y", "message", "call"),
    [(b[1], b[2], b[3], c) for b in BAD for c in b[4]],
    ids=[f"{b[0]}-{c}" for b in BAD for c in b[4]],
)
def test_bad_data_is_refused_before_anything_changes(
    X: Any, y: Any, message: str, call: str
) -> None:
    model = binary()
    before = model.get_weights()
    spy = Spy()
    with pytest.raises(ValueError, match=message):
        if call == "fit":
            fit(model, X, y, [spy])
        else:
            CALLS[call](model, X, y)
    assert not spy.began
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("call", WITH_Y)
@pytest.mark.parametrize(
    ("y", "message"),
    [
        (np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 0, 0]]), r"row 1 sums to 2 \(\[0\.0, 1\.0"),
        (np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0]]), "row 1 sums to 0"),
        (np.array([[2, -1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]), r"must lie in \[0, 1\]"),
        (np.array([0, 1, 2, 0]), r"y has shape \(4,\); expected \(4, 3\)"),
    ],
    ids=["two hot", "none hot", "out of range", "labels"],
)
def test_categorical_targets_must_be_one_hot_or_probabilities(
    call: str, y: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CALLS[call](three_classes(), X, y)


def test_probabilities_are_valid_categorical_targets() -> None:
    y = np.array([[0.2, 0.8, 0.0], [1, 0, 0], [0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    assert np.isfinite(three_classes().evaluate(X, y)["loss"])


def test_predict_on_no_rows_gives_no_rows() -> None:
    assert binary().predict(np.zeros((0, 2))).shape == (0, 1)


CONVERSIONS: list[tuple[str, Callable[[Any], Any]]] = [
    ("int64", lambda a: a.astype(np.int64)),
    ("uint8", lambda a: a.astype(np.uint8)),
    ("bool", lambda a: a.astype(bool)),
    ("float32", lambda a: a.astype(np.float32)),
    ("float16", lambda a: a.astype(np.float16)),
    ("lists", lambda a: a.tolist()),
    ("Fortran order", np.asfortranarray),
    ("strided view", lambda a: np.repeat(a, 2, axis=0)[::2]),
]


@pytest.mark.parametrize("convert", [c[1] for c in CONVERSIONS], ids=[c[0] for c in CONVERSIONS])
def test_numeric_inputs_are_converted_exactly(convert: Callable[[Any], Any]) -> None:
    # 0/1 data is exact in every numeric dtype: results equal those from float64 bit for bit.
    reference, model = binary(), binary()
    want = reference.fit(X, Y, epochs=3, batch_size=2).history
    assert model.fit(convert(X), convert(Y), epochs=3, batch_size=2).history == want
    np.testing.assert_array_equal(model.predict(convert(X)), reference.predict(X))
    assert model.evaluate(convert(X), convert(Y)) == reference.evaluate(X, Y)
    got_loss, got = model.compute_gradients(convert(X), convert(Y))
    want_loss, grads = reference.compute_gradients(X, Y)
    assert got_loss == want_loss
    for a, b in zip(got, grads, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float64_data_is_rounded_to_a_float32_model() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 2))
    model = binary("float32")
    out = model.predict(data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, model.predict(data.astype(np.float32)))


def test_values_too_large_for_a_float32_model_are_refused() -> None:
    with pytest.raises(ValueError, match=r"X contains non-finite values .* float32"):
        binary("float32").predict(X * 1e39)


def test_fit_leaves_the_callers_arrays_alone() -> None:
    data, targets = X.copy(), Y.copy()
    binary().fit(data, targets, epochs=3, batch_size=2, shuffle=True, validation_split=0.25)
    np.testing.assert_array_equal(data, X)
    np.testing.assert_array_equal(targets, Y)
