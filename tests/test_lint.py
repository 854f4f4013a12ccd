"""The spec linter: advice as SpecWarning with spec paths, from metadata plugins declare."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import microfw as mf
from microfw.cli import main


def spec(layers, loss, **extra):
    return {"spec_version": 1, "input_dim": 2, "layers": layers, "loss": loss, "seed": 0, **extra}


def advice(data, registry=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mf.build(data, registry)
    found = [w.message for w in caught if isinstance(w.message, mf.SpecWarning)]
    assert len(found) == len(caught), [str(w.message) for w in caught]
    return found


HE_HIDDEN = {"type": "linear", "units": 4, "init": "he", "activation": "relu"}


def test_bce_after_a_linear_output_is_flagged_with_its_path():
    (warning,) = advice(spec([HE_HIDDEN, {"type": "linear", "units": 1}], "bce"))
    assert warning.path == "layers[1]"
    assert "expects predictions in [0, 1]" in str(warning) and "'linear'" in str(warning)
    assert "'sigmoid'" in str(warning) and "from_logits" in str(warning)


def test_the_warning_points_at_the_callers_line():
    with pytest.warns(mf.SpecWarning) as record:
        mf.build(spec([{"type": "linear", "units": 3}], "categorical_crossentropy"))
    assert record[0].filename == __file__


@pytest.mark.parametrize(
    ("layers", "loss"),
    [
        ([HE_HIDDEN, {"type": "linear", "units": 1}, "sigmoid"], "bce"),
        ([HE_HIDDEN, {"type": "linear", "units": 1}], {"type": "bce", "from_logits": True}),
        ([HE_HIDDEN, {"type": "linear", "units": 3}, "softmax"], "categorical_crossentropy"),
        ([HE_HIDDEN, {"type": "linear", "units": 3}, "softmax"], "sparse_categorical_crossentropy"),
        ([HE_HIDDEN, "dropout", {"type": "linear", "units": 1}], "mse"),
        ([{"type": "linear", "units": 4}, "tanh", {"type": "linear", "units": 2}], "squared_error"),
        (
            [
                {"type": "linear", "units": 4, "init": "he_uniform"},
                "batch_norm",
                "relu",
                {"type": "linear", "units": 1},
            ],
            "mae",
        ),
    ],
)
def test_sensible_specs_get_no_advice(layers, loss):
    assert advice(spec(layers, loss)) == []


def test_softmax_then_bce_and_sigmoid_then_cross_entropy():
    (w,) = advice(spec([HE_HIDDEN, {"type": "linear", "units": 3}, "softmax"], "bce"))
    assert w.path == "loss" and "distribution" in str(w) and "independent" in str(w)
    (w,) = advice(
        spec([HE_HIDDEN, {"type": "linear", "units": 3}, "sigmoid"], "categorical_crossentropy")
    )
    assert w.path == "loss" and "'softmax'" in str(w)


@pytest.mark.parametrize("init", ["xavier", "glorot_uniform", "glorot_normal"])
def test_relu_after_a_glorot_initialised_layer_suggests_he(init):
    layers = [{"type": "linear", "units": 4, "init": init}, "relu", {"type": "linear", "units": 1}]
    (w,) = advice(spec(layers, "mse"))
    assert w.path == "layers[0].init"
    assert f"'{init}'" in str(w) and "'he'" in str(w) and "layers[1]" in str(w)
    shorthand = [
        {"type": "linear", "units": 4, "activation": "relu"},
        {"type": "linear", "units": 1},
    ]
    (w,) = advice(spec(shorthand, "mse"))  # the default init is xavier
    assert w.path == "layers[0].init" and "layers[0].activation" in str(w)


def test_a_fixed_scale_initializer_is_taken_as_deliberate():
    layers = [{"type": "linear", "units": 4, "init": {"type": "normal", "std": 0.1}}, "relu"]
    assert advice(spec([*layers, {"type": "linear", "units": 1}], "mse")) == []
    selu = [{"type": "linear", "units": 4, "init": "he"}, "selu", {"type": "linear", "units": 1}]
    (w,) = advice(spec(selu, "mse"))
    assert "'xavier'" in str(w)


def test_dropout_as_the_last_layer():
    (w,) = advice(spec([HE_HIDDEN, {"type": "linear", "units": 1}, "dropout"], "mse"))
    assert w.path == "layers[2]" and "dropout" in str(w)


def test_warnings_are_never_errors_unless_asked():
    data = spec([{"type": "linear", "units": 1}], "bce")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.SpecWarning)
        model = mf.build(data)  # still builds and trains
    model.fit(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", mf.SpecWarning)
        with pytest.raises(mf.SpecWarning, match=r"layers\[0\]"):
            mf.build(data)


def test_a_third_party_plugin_declares_its_own_metadata():
    class Softsign(mf.Activation):
        """y = x / (1 + |x|)."""

        name = "lint_softsign"
        output_range = (-1.0, 1.0)
        recommended_init = ("lecun_uniform",)

        def forward(self, x):
            return x / (1 + np.abs(x))

        def derivative(self, x, y):
            return 1 / (1 + np.abs(x)) ** 2

    registry = mf.Registry()
    registry.register(Softsign)
    found = advice(
        spec([{"type": "linear", "units": 1, "init": "he"}, "lint_softsign"], "bce"), registry
    )
    assert {w.path for w in found} == {"layers[0].init", "layers[1]"}
    assert any("'lecun_uniform'" in str(w) for w in found)
    assert any("[-1, 1]" in str(w) for w in found)


def test_validate_prints_the_advice_and_strict_fails(tmp_path, capsys):
    path = tmp_path / "forgot_sigmoid.json"
    path.write_text(json.dumps(spec([HE_HIDDEN, {"type": "linear", "units": 1}], "bce")))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "warning: layers[1]: loss 'bce' expects predictions in [0, 1]" in out
    assert main(["validate", "--strict", str(path)]) == 1
    out = capsys.readouterr().out
    assert "invalid (--strict), 1 warning(s)" in out and "layers[1]" in out
    clean = tmp_path / "clean.json"
    clean.write_text(
        json.dumps(spec([HE_HIDDEN, {"type": "linear", "units": 1}, "sigmoid"], "bce"))
    )
    assert main(["validate", "--strict", str(clean)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_the_installed_example_package_declares_softsigns_range():
    (w,) = advice(spec([{"type": "linear", "units": 1, "init": "he"}, "softsign"], "bce"))
    assert w.path == "layers[1]" and "'softsign'" in str(w) and "[-1, 1]" in str(w)
