"""The JSON Schema of specs, generated from the live registry, checked by a real validator."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import pytest
from pydantic import Field

import microfw as mf

ROOT = Path(__file__).parent.parent


def _is_spec(path: Path) -> bool:
    data = json.loads(path.read_text())
    return isinstance(data, dict) and "spec_version" in data


SPECS = [
    p
    for p in sorted((ROOT / "tests" / "data").glob("*.json"))
    + sorted(ROOT.glob("examples/**/*.json"))
    if _is_spec(p)
]
XOR = json.loads((ROOT / "tests" / "data" / "xor_issue.json").read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = mf.json_schema(mf.Registry())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return own.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def test_every_reference_is_defined() -> None:
    schema = mf.json_schema(mf.Registry())
    for ref in refs(schema):
        assert ref.startswith("#/$defs/")
        assert ref.removeprefix("#/$defs/") in schema["$defs"], ref
    assert {"layer_ref", "activation_ref", "initializer_ref", "schedule_ref"} <= set(
        schema["$defs"]
    )


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_spec_files_validate(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    data = json.loads(path.read_text())
    validator.validate(data)
    mf.load_spec(data)


def test_written_out_specs_validate(validator: jsonschema.Draft202012Validator) -> None:
    validator.validate(mf.load_spec(XOR).to_dict())


def _mutated(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(XOR)
    for key, value in changes.items():
        spec[key] = value
    return spec


@pytest.mark.parametrize(
    "spec",
    [
        _mutated(extra=1),
        _mutated(loss="squared_eror"),
        _mutated(input_dim=0),
        _mutated(layers=[]),
        _mutated(layers=["linear"]),  # linear has a required parameter: no bare name
        _mutated(layers=[{"type": "linear", "units": -3}]),
        _mutated(layers=[{"type": "linear", "units": 3, "activation": "rleu"}]),
        _mutated(layers=[{"type": "linear", "units": 3, "init": {"type": "normal", "sd": 1}}]),
        _mutated(optimizer={"type": "sgd", "schedule": {"type": "exponential", "rate": 2}}),
        _mutated(training={"epochs": 10, "epoch": 3}),
        _mutated(rng="mt19937"),
        {k: v for k, v in XOR.items() if k != "loss"},
    ],
)
def test_bad_specs_are_rejected(
    validator: jsonschema.Draft202012Validator, spec: dict[str, Any]
) -> None:
    assert not validator.is_valid(spec)
    with pytest.raises(mf.SpecError):
        mf.load_spec(spec)


def test_a_third_party_plugin_appears_in_the_schema() -> None:
    class Swish(mf.Activation):
        """y = x * sigmoid(beta x)."""

        name = "swish"

        beta: Annotated[float, Field(gt=0)] = 1.0

        def forward(self, x: Any) -> Any:
            raise NotImplementedError

        def derivative(self, x: Any, y: Any) -> Any:
            raise NotImplementedError

    registry = mf.Registry()
    registry.register(Swish, package="swish-plugin")
    schema = mf.json_schema(registry)
    swish = schema["$defs"]["activation.swish"]
    assert swish["properties"]["beta"]["exclusiveMinimum"] == 0
    assert "swish-plugin" in swish["title"]
    validator = jsonschema.Draft202012Validator(schema)
    good = _mutated(layers=[{"type": "linear", "units": 2}, {"type": "swish", "beta": 2.0}])
    bad = _mutated(layers=[{"type": "linear", "units": 2}, {"type": "swish", "beta": -1}])
    shorthand = _mutated(layers=[{"type": "linear", "units": 1, "activation": "swish"}])
    assert validator.is_valid(good) and validator.is_valid(shorthand)
    assert not validator.is_valid(bad)
    assert not jsonschema.Draft202012Validator(mf.json_schema(mf.Registry())).is_valid(good)
