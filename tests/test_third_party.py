"""The example third-party package ``microfw-softsign``, installed, is a first-class plugin.

CI installs it next to microfw (``pip install ".[test]" ./examples/plugin_package``); without
it these tests are skipped, saying so.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from subprocesses import run_module

import microfw as mf
from microfw.cli.main import main

DISTRIBUTION = "microfw-softsign"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

VERSION = metadata.version(DISTRIBUTION)  # installed by the test command (see the README)

SPEC = {
    "spec_version": 1,
    "input_dim": 2,
    "layers": [
        {"type": "linear", "units": 4, "activation": "softsign"},
        {"type": "linear", "units": 1},
        "sigmoid",
    ],
    "loss": "bce",
    "optimizer": {"type": "sgd", "lr": 1.0},
    "training": {"epochs": 2000},
    "seed": 0,
}


def test_it_is_registered_through_its_entry_point(registry: mf.Registry) -> None:
    entry = registry.entry("activation", "softsign")
    assert entry.provenance.package == DISTRIBUTION
    assert entry.provenance.version == VERSION
    assert entry.provenance.source == "microfw_softsign"
    assert entry.cls.__module__ == "microfw_softsign"


def test_it_computes_softsign(registry: mf.Registry) -> None:
    softsign = registry.create("activation", "softsign")
    x = np.array([-3.0, 0.0, 1.0])
    np.testing.assert_allclose(softsign.forward(x), [-0.75, 0.0, 0.5])
    np.testing.assert_allclose(softsign.derivative(x, softsign.forward(x)), [1 / 16, 1, 0.25])


def test_it_appears_in_microfw_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["softsign", DISTRIBUTION, VERSION] in [line[:3] for line in lines]


def test_it_appears_in_microfw_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "softsign" in schema["$defs"]["activation_ref"]["anyOf"][0]["enum"]
    assert schema["$defs"]["activation.softsign"]["title"] == (
        f"activation softsign ({DISTRIBUTION} {VERSION})"
    )


def test_a_spec_naming_it_validates_and_trains(registry: mf.Registry, tmp_path: Path) -> None:
    jsonschema.validate(SPEC, mf.json_schema(registry))
    model = mf.build(SPEC, registry)
    assert [layer.name for layer in model.layers] == ["linear", "softsign", "linear", "sigmoid"]
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    model.fit(X, y)
    assert model.evaluate(X, y)["accuracy"] == 1.0

    path = tmp_path / "softsign.microfw"
    model.save(path)
    np.testing.assert_array_equal(mf.load(path, registry).predict(X), model.predict(X))
    without = mf.Registry(autoload=False)  # microfw's own plugins only
    with pytest.raises(mf.ModelFileError, match=f"activation 'softsign' \\(from {DISTRIBUTION}"):
        mf.load(path, without)


def test_it_passes_microfw_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "softsign"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok    softsign: ")
    assert "check_activation_gradient" in out


def test_the_command_sees_it_in_a_fresh_process(tmp_path: Path) -> None:
    spec = tmp_path / "softsign.json"
    spec.write_text(json.dumps(SPEC))
    result = run_module("microfw", "validate", str(spec))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ["1", "softsign", "4", "0"] in [row.split() for row in result.stdout.splitlines()]


def test_the_packages_own_tests_pass() -> None:
    """Its tests run microfw.testing.check_plugin on the class, as a plugin author would."""
    result = run_module(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests",
        cwd=EXAMPLES / "plugin_package",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
