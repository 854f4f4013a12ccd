"""The package's surface: ``mf.testing`` as a lazy submodule, specs as plain JSON data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import microfw as mf

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_SPECS = sorted(EXAMPLES.glob("*/*.json"))

LAZY_TESTING = """
import sys
import microfw as mf

def plugins_loaded():
    return [m for m in sys.modules if m.split(".")[0] in ("microfw_plugins", "plugins")]

assert "microfw.testing" not in sys.modules, "import microfw imported microfw.testing"
assert "testing" in dir(mf)
check_plugin = mf.testing.check_plugin
import microfw.testing
assert check_plugin is microfw.testing.check_plugin
assert mf.testing is sys.modules["microfw.testing"]
assert not plugins_loaded(), plugins_loaded()
mf.testing.check_plugin("relu")
print("checked relu")
"""


def test_mf_testing_is_reachable_after_import_microfw_and_imported_on_first_access() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAZY_TESTING], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "checked relu"


def test_an_unknown_attribute_of_microfw_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'microfw' has no attribute 'tesing'"):
        mf.tesing  # type: ignore[attr-defined]  # noqa: B018


def test_dir_lists_the_public_names_and_the_lazy_submodule() -> None:
    names = dir(mf)
    assert set(mf.__all__) <= set(names)
    assert "testing" in names
    assert names == sorted(names)


# -- specs as JSON ------------------------------------------------------------------------


def _assert_plain_json(value: Any, path: str = "") -> None:
    """Only what ``json`` writes and reads back unchanged: no tuples, numpy scalars, NaN."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, f"{path}: key {key!r} is not a str"
            _assert_plain_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _assert_plain_json(item, f"{path}[{i}]")
    else:
        assert type(value) in (str, int, float, bool, type(None)), f"{path}: {type(value)}"
        assert not isinstance(value, float) or math.isfinite(value), f"{path}: {value}"


@pytest.mark.parametrize("path", EXAMPLE_SPECS, ids=lambda p: p.name)
def test_to_dict_is_plain_json_that_load_spec_reads_back_equal(path: Path) -> None:
    spec = mf.load_spec(path)
    data = spec.to_dict()
    _assert_plain_json(data)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert mf.load_spec(data) == spec
    assert mf.load_spec(spec.to_json()) == spec
    assert mf.load_spec(spec.to_json(indent=None)) == spec
    assert json.loads(spec.to_json()) == data


def test_a_models_spec_is_plain_json_even_from_numpy_parameters() -> None:
    model = mf.Sequential(
        [
            {"type": "linear", "units": 3, "init": {"type": "normal", "std": np.float32(0.5)}},
            "relu",
            {"type": "linear", "units": 2},
            "sigmoid",
        ],
        input_dim=2,
        loss="bce",
        optimizer={"type": "sgd", "lr": np.float64(0.1), "momentum": np.float16(0.5)},
        dtype="float32",
        seed=3,
    )
    spec = model.to_spec()
    data = spec.to_dict()
    _assert_plain_json(data)
    assert data["optimizer"]["lr"] == 0.1 and data["optimizer"]["momentum"] == 0.5
    assert mf.load_spec(json.loads(json.dumps(data))) == spec
    again = mf.build(spec.to_json())
    X = np.array([[0.0, 1.0], [1.0, 0.5], [-1.0, 2.0]])
    np.testing.assert_array_equal(again.predict(X), model.predict(X))


# -- the habits: CI, the README and pre-commit run the same checks ------------------------

ROOT = EXAMPLES.parent
CHECKS = ("ruff format --check .", "ruff check .", "mypy", "lint-imports", "pytest -q")


def _readme_test_command() -> str:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("# 2. install, check and test (exactly what CI runs, .ci/run)")
    return lines[start + 1]


def test_ci_runs_exactly_the_readme_test_command_with_every_check() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = _readme_test_command()
    assert script[-1] == command
    steps = command.split(" && ")
    assert steps[-len(CHECKS) :] == list(CHECKS), steps
    assert 'pip install ".[test]" ./examples/plugin_package' in steps


def test_pre_commit_runs_the_same_checks() -> None:
    config = (ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    for entry in ("ruff format", "ruff check", "mypy", "lint-imports"):
        assert f"entry: {entry}\n" in config, entry
