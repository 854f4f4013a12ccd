"""Specs: loading, shorthand, round trips, and every problem reported with its path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import microfw as mf
from microfw.core.activation_layer import ActivationLayer

DATA = Path(__file__).parent / "data"

XOR: dict[str, Any] = json.loads((DATA / "xor_issue.json").read_text())  # the spec
XOR["training"]["epochs"] = 10


def test_path_text_and_dict_give_the_same_spec() -> None:
    path = DATA / "xor_issue.json"
    from_path = mf.load_spec(path)
    assert mf.load_spec(str(path)) == from_path
    assert mf.load_spec(path.read_text()) == from_path
    assert mf.load_spec(json.loads(path.read_text())) == from_path


def test_spec_is_written_out_in_full() -> None:
    spec = mf.load_spec(XOR)
    assert spec.layers[0] == {
        "type": "linear",
        "units": 3,
        "init": {"type": "xavier"},
        "bias_init": {"type": "zeros"},
        "use_bias": True,
        "kernel_regularizer": None,
        "bias_regularizer": None,
    }
    assert spec.layers[3] == {"type": "sigmoid"}
    assert spec.optimizer["schedule"] == {"type": "exponential", "rate": 0.999, "per": "epoch"}
    assert spec.dtype == "float64" and spec.training.batch_size is None


def test_defaults() -> None:
    spec = mf.load_spec({"spec_version": 1, "input_dim": 2, "layers": ["sigmoid"], "loss": "bce"})
    assert spec.optimizer["type"] == "sgd"
    assert spec.training == mf.TrainingSpec()
    assert spec.training.batch_size is None and spec.training.validation_split == 0
    assert (spec.seed, spec.rng, spec.dtype) == (None, "pcg64", "float64")


def test_activation_shorthand_expands_to_two_layers() -> None:
    spec = mf.load_spec(
        {
            "spec_version": 1,
            "input_dim": 2,
            "layers": [
                {"type": "linear", "units": 25, "activation": "relu"},
                {"type": "linear", "units": 1, "activation": {"type": "leaky_relu", "alpha": 0.2}},
            ],
            "loss": "squared_error",
        }
    )
    assert [layer["type"] for layer in spec.layers] == ["linear", "relu", "linear", "leaky_relu"]
    assert spec.layers[3] == {"type": "leaky_relu", "alpha": 0.2}


def test_activation_shorthand_null_is_an_error_not_skipped() -> None:
    layers = [{"type": "linear", "units": 1, "activation": None}]
    with pytest.raises(mf.SpecError) as info:
        mf.load_spec({"spec_version": 1, "input_dim": 2, "layers": layers, "loss": "bce"})
    [problem] = info.value.problems
    assert problem.path == "layers[0].activation"
    assert "expected an activation name or object" in problem.message


def test_round_trip_through_model() -> None:
    spec = mf.load_spec(XOR)
    model = mf.build(spec)
    assert model.to_spec() == spec
    assert mf.load_spec(spec.to_json()) == spec
    assert mf.build(model.to_spec()).to_spec() == spec


def test_sequential_composed_in_python_matches_the_spec() -> None:
    registry = mf.default_registry()
    model = mf.Sequential(
        [
            {"type": "linear", "units": 3},
            registry.create("activation", "sigmoid"),
            registry.create("layer", {"type": "linear", "units": 1}),
            "sigmoid",
        ],
        input_dim=2,
        loss="squared_error",
        optimizer={"type": "sgd", "lr": 1.0, "schedule": {"type": "exponential", "rate": 0.999}},
        training={"epochs": 10},
        seed=48,
    )
    assert isinstance(model.layers[1], ActivationLayer)
    assert model.to_spec() == mf.load_spec(XOR)
    built = mf.build(XOR)
    for a, b in zip(model.get_weights(), built.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_layer_names_resolve_among_layers_before_activations() -> None:
    model = mf.Sequential(["softmax"], input_dim=3, loss="categorical_crossentropy")
    assert not isinstance(model.layers[0], ActivationLayer)
    model = mf.Sequential(["tanh"], input_dim=3, loss="squared_error")
    assert isinstance(model.layers[0], ActivationLayer)


def _set(path: str, value: Any) -> Any:
    """A mutation of XOR setting ``path`` (dots and [i]) to ``value``; ``...`` deletes."""

    def mutate(spec: dict[str, Any]) -> None:
        parts = path.replace("[", ".").replace("]", "").split(".")
        node: Any = spec
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
        if value is ...:
            del node[last]
        else:
            node[last] = value

    return mutate


def _both(first: Any, second: Any) -> Any:
    def mutate(spec: dict[str, Any]) -> None:
        first(spec)
        second(spec)

    return mutate


BAD_SPECS: list[tuple[str, Any, list[tuple[str, str]]]] = [
    ("missing input_dim", _set("input_dim", ...), [("input_dim", "required")]),
    ("zero input_dim", _set("input_dim", 0), [("input_dim", "greater than 0")]),
    ("string input_dim", _set("input_dim", "2"), [("input_dim", "valid integer")]),
    ("float input_dim", _set("input_dim", 2.5), [("input_dim", "integer")]),
    ("bool input_dim", _set("input_dim", True), [("input_dim", "integer")]),
    ("future spec_version", _set("spec_version", 2), [("spec_version", "1")]),
    ("missing spec_version", _set("spec_version", ...), [("spec_version", "required")]),
    ("missing layers", _set("layers", ...), [("layers", "missing")]),
    ("empty layers", _set("layers", []), [("layers", "non-empty list")]),
    ("layers not a list", _set("layers", "linear"), [("layers", "non-empty list")]),
    ("typo in bare name", _set("layers[1]", "sigmod"), [("layers[1]", "did you mean 'sigmoid'")]),
    ("typo in type", _set("layers[0].type", "lineer"), [("layers[0].type", "'linear'")]),
    ("layer without type", _set("layers[0].type", ...), [("layers[0].type", "missing")]),
    ("layer is a number", _set("layers[0]", 3), [("layers[0]", "expected a layer")]),
    ("negative units", _set("layers[0].units", -3), [("layers[0].units", "greater than 0")]),
    ("string units", _set("layers[0].units", "3"), [("layers[0].units", "valid integer")]),
    ("missing units", _set("layers[2].units", ...), [("layers[2].units", "required")]),
    ("unknown layer key", _set("layers[0].unit", 3), [("layers[0].unit", "did you mean 'units'")]),
    ("unknown initializer", _set("layers[0].init", "xavir"), [("layers[0].init", "'xavier'")]),
    (
        "negative std",
        _set("layers[0].init", {"type": "normal", "std": -1.0}),
        [("layers[0].init.std", "greater than 0")],
    ),
    (
        "unknown initializer key",
        _set("layers[0].bias_init", {"type": "normal", "sd": 0.1}),
        [("layers[0].bias_init.sd", "unknown")],
    ),
    ("initializer is a number", _set("layers[0].bias_init", 5), [("layers[0].bias_init", "name")]),
    (
        "typo in shorthand activation",
        _set("layers[0].activation", "rleu"),
        [("layers[0].activation", "did you mean 'relu'")],
    ),
    (
        "bad activation param",
        _set("layers[1]", {"type": "leaky_relu", "alpha": 2.0}),
        [("layers[1].alpha", "less than 1")],
    ),
    ("activation with a layer key", _set("layers[1].units", 3), [("layers[1].units", "unknown")]),
    ("missing loss", _set("loss", ...), [("loss", "missing")]),
    ("typo in loss", _set("loss", "squared_eror"), [("loss", "'squared_error'")]),
    ("loss is a list", _set("loss", ["bce"]), [("loss", "expected a loss name")]),
    ("bad loss param", _set("loss", {"type": "bce", "eps": 0.9}), [("loss.eps", "less than 0.5")]),
    ("typo in optimizer", _set("optimizer.type", "sdg"), [("optimizer.type", "'sgd'")]),
    ("negative lr", _set("optimizer.lr", -1.0), [("optimizer.lr", "greater than 0")]),
    ("string lr", _set("optimizer.lr", "1.0"), [("optimizer.lr", "valid number")]),
    ("momentum of 1", _set("optimizer.momentum", 1.0), [("optimizer.momentum", "less than 1")]),
    (
        "typo in schedule",
        _set("optimizer.schedule.type", "exponentail"),
        [("optimizer.schedule.type", "did you mean 'exponential'")],
    ),
    (
        "bad schedule rate",
        _set("optimizer.schedule.rate", 2.0),
        [("optimizer.schedule.rate", "less than or equal to 1")],
    ),
    ("bad schedule per", _set("optimizer.schedule.per", "batch"), [("optimizer.schedule.per", "")]),
    (
        "negative epochs",
        _set("training.epochs", -1),
        [("training.epochs", "greater than or equal")],
    ),
    ("zero batch size", _set("training.batch_size", 0), [("training.batch_size", "greater")]),
    ("split of 1", _set("training.validation_split", 1.0), [("training.validation_split", "less")]),
    ("typo in training", _set("training.epoch", 5), [("training.epoch", "'epochs'")]),
    ("unknown top-level key", _set("layer", []), [("layer", "did you mean 'layers'")]),
    ("unknown rng", _set("rng", "mt19937"), [("rng", "'pcg64' or 'legacy'")]),
    ("unknown dtype", _set("dtype", "float16"), [("dtype", "'float64' or 'float32'")]),
    ("negative seed", _set("seed", -1), [("seed", "greater than or equal to 0")]),
    ("legacy seed too big", _both(_set("rng", "legacy"), _set("seed", 2**40)), [("seed", "2**32")]),
    ("softmax over one column", _set("layers[3]", "softmax"), [("layers[3]", "at least 2")]),
    ("too few outputs for the loss", _set("loss", "categorical_crossentropy"), [("loss", "2")]),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [b[1:] for b in BAD_SPECS], ids=[b[0] for b in BAD_SPECS]
)
def test_bad_spec(mutate: Any, expected: list[tuple[str, str]]) -> None:
    spec = copy.deepcopy(XOR)
    mutate(spec)
    with pytest.raises(mf.SpecError) as info:
        mf.load_spec(spec)
    found = {p.path: p.message for p in info.value.problems}
    assert len(found) == len(expected), info.value
    for path, fragment in expected:
        assert path in found, info.value
        assert fragment in found[path], info.value


def test_bad_spec_table_is_large() -> None:
    assert len(BAD_SPECS) >= 30


def test_every_problem_is_reported_at_once() -> None:
    spec = copy.deepcopy(XOR)
    spec["input_dim"] = -2
    spec["layers"][0]["units"] = -3
    spec["layers"][1] = "sigmod"
    spec["layers"][2]["init"] = {"type": "normal", "std": "big"}
    spec["loss"] = "squared_eror"
    spec["optimizer"]["schedule"]["rate"] = 5
    spec["training"]["batch_size"] = 0
    spec["extra"] = 1
    with pytest.raises(mf.SpecError) as info:
        mf.load_spec(spec)
    paths = {p.path for p in info.value.problems}
    assert paths == {
        "input_dim",
        "layers[0].units",
        "layers[1]",
        "layers[2].init.std",
        "loss",
        "optimizer.schedule.rate",
        "training.batch_size",
        "extra",
    }
    text = str(info.value)
    assert "8 problem(s)" in text
    assert "layers[0].units: Input should be greater than 0 (got -3)" in text
    assert "did you mean 'sigmoid'" in text and "did you mean 'squared_error'" in text


def test_widths_are_checked_before_arrays_exist() -> None:
    class NeedsEven(mf.Layer):
        """y = x (only even widths)."""

        name = "needs_even"

        def output_dim(self, n_in: int) -> int:
            if n_in % 2:
                raise ValueError(f"needs an even width, got {n_in}")
            return n_in

        def build(self, n_in: int, rng: Any, dtype: Any) -> None:
            raise AssertionError("build must not run for an invalid spec")

        def forward(self, x: Any, training: bool = True) -> Any:
            return x

        def backward(self, dy: Any) -> Any:
            return dy

    registry = mf.Registry()
    registry.register(NeedsEven)
    spec = {**XOR, "layers": [{"type": "linear", "units": 3}, "needs_even", "sigmoid"]}
    with pytest.raises(mf.SpecError) as info:
        mf.build(spec, registry)
    (problem,) = info.value.problems
    assert problem.path == "layers[1]"
    assert "input of width 3: needs an even width, got 3" in problem.message


def test_a_layer_instance_cannot_appear_twice() -> None:
    linear = mf.default_registry().create("layer", {"type": "linear", "units": 2})
    with pytest.raises(mf.SpecError) as info:
        mf.Sequential([linear, "relu", linear], input_dim=2, loss="squared_error")
    (problem,) = info.value.problems
    assert problem.path == "layers[2]" and "same instance as layers[0]" in problem.message


def test_invalid_json_text_is_a_spec_error() -> None:
    with pytest.raises(mf.SpecError, match=r"not valid JSON: .*line 1"):
        mf.load_spec('{"spec_version": 1,,}')
    with pytest.raises(mf.SpecError, match="expected a JSON object"):
        mf.load_spec(DATA / "not_an_object.json")


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"optimizer": {"type": "sgd", "\ud800lr": 1.0}}, "optimizer.\\ud800lr"),
        (
            {"optimizer": {"type": "sgd", "schedule": {"type": "inverse_time", "\ud800": 1}}},
            "optimizer.schedule.\\ud800",
        ),
        ({"layers": [{"type": "linear", "units": 1, "init": "x\ud800"}]}, "layers[0].init"),
        ({"rng": "\ud800"}, "rng"),
        ({"\ud800": 1}, "<root>"),
    ],
)
def test_lone_surrogates_from_json_text_are_spec_errors_that_print(
    change: dict[str, Any], path: str
) -> None:
    """JSON's ``"\\ud800"`` reads as a string UTF-8 cannot encode; it was a UnicodeEncodeError."""
    spec = {**XOR, **change}
    for source in (spec, json.dumps(spec)):
        with pytest.raises(mf.SpecError) as info:
            mf.build(source)
        text = str(info.value)
        text.encode("utf-8")
        assert f"  - {path}" in text


def test_python_arguments_are_validated_like_a_spec() -> None:
    with pytest.raises(mf.SpecError) as info:
        mf.Sequential([{"type": "linear", "units": 0}, "rleu"], input_dim=2, loss="bce", rng="x")
    assert {p.path for p in info.value.problems} == {"layers[0].units", "layers[1]", "rng"}


def test_fit_overrides_are_validated() -> None:
    model = mf.build(XOR)
    with pytest.raises(mf.SpecError) as info:
        model.fit(np.zeros((4, 2)), np.zeros(4), epoch=3, batch_size=-1)
    paths = {p.path: p.message for p in info.value.problems}
    assert "did you mean 'epochs'" in paths["epoch"]
    assert "greater than 0" in paths["batch_size"]


def test_unknown_keys_keep_their_path_and_a_refused_union_is_one_problem() -> None:
    spec = {
        "spec_version": 1,
        "input_dim": 2,
        "layers": ["sigmoid"],
        "loss": "bce",
        "foo-bar": 1,
        "training": {"x y": 2, "blas_threads": "x", "metrics": [3]},
    }
    with pytest.raises(mf.SpecError) as info:
        mf.load_spec(spec)
    problems = {p.path: p.message for p in info.value.problems}
    assert set(problems) == {
        "foo-bar",
        "training.x y",
        "training.blas_threads",
        "training.metrics[0]",
    }
    assert problems["training.blas_threads"].startswith("Input should be 'auto', or input")
    assert " or input should be a valid dictionary" in problems["training.metrics[0]"]
