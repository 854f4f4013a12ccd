"""The examples reproduce the seed tutorials' outcomes from their shipped specs and data."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from subprocesses import run_module

import microfw as mf
from microfw.data import load_data, targets_for

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPECS = sorted(p for p in EXAMPLES.glob("*/*.json"))

# The first tutorial's printed costs of the 2-3-1 XOR network (seed 48, xavier, lr 1).
SEED_COSTS = {
    0: 0.12926510193084198,
    4600: 0.001018305488651183,
    4700: 0.000983783942124411,
    4800: 0.0009514180100050973,
    4900: 0.0009210166430616655,
}


def fit(registry: mf.Registry, spec: str, data: str, target: str = "y"):  # type: ignore[no-untyped-def]
    dataset = load_data(EXAMPLES / data, target)
    model = mf.build(EXAMPLES / spec, registry)
    history = model.fit(dataset.X, dataset.y)
    return model, history, dataset


def test_there_is_a_spec_for_every_example() -> None:
    names = {p.relative_to(EXAMPLES).as_posix() for p in SPECS}
    assert {
        "or_gate/or_gate.json",
        "xor/xor_2_3_1.json",
        "xor/xor_2_5_3_1.json",
        "xor/xor_bce.json",
        "xor_feature_cross/xor_feature_cross.json",
        "and_gate/and_squared_error.json",
        "and_gate/and_bce.json",
        "iris_petals/iris_petals.json",
        "moons/moons.json",
        "digits/digits.json",
    } <= names


def test_xor_2_3_1_reproduces_the_seed_costs(registry: mf.Registry) -> None:
    model, history, data = fit(registry, "xor/xor_2_3_1.json", "xor/data.csv")
    loss = history.history["loss"]
    assert len(loss) == 5000
    for epoch, cost in SEED_COSTS.items():
        assert loss[epoch] == pytest.approx(cost, rel=1e-6), epoch  # 6 significant digits
    np.testing.assert_array_equal((model.predict(data.X) >= 0.5).ravel(), [0, 1, 1, 0])


def test_xor_deeper_and_bce_variants_learn_xor(registry: mf.Registry) -> None:
    for spec in ("xor/xor_2_5_3_1.json", "xor/xor_bce.json"):
        model, history, data = fit(registry, spec, "xor/data.csv")
        assert history.history["loss"][-1] < 1e-3, spec
        assert model.evaluate(data.X, data.y)["accuracy"] == 1.0, spec


def test_xor_feature_cross_is_solved_by_one_neuron(registry: mf.Registry) -> None:
    model, history, data = fit(
        registry, "xor_feature_cross/xor_feature_cross.json", "xor_feature_cross/data.csv"
    )
    np.testing.assert_array_equal(data.X[:, 2], data.X[:, 0] * data.X[:, 1])
    assert len(model.get_weights()) == 2  # a single linear layer: W (3, 1) and b
    assert history.history["loss"][-1] < 2e-3
    assert model.evaluate(data.X, data.y)["accuracy"] == 1.0


def test_or_gate_cost_falls_to_about_0_0005(registry: mf.Registry) -> None:
    model, history, data = fit(registry, "or_gate/or_gate.json", "or_gate/data.csv")
    assert 4e-4 < history.history["loss"][-1] < 6e-4
    assert model.evaluate(data.X, data.y)["accuracy"] == 1.0


def test_and_gate_squared_error_stalls_where_bce_recovers(registry: mf.Registry) -> None:
    data = load_data(EXAMPLES / "and_gate" / "data.csv", "y")
    bad = [np.array([[-10.0], [60.0]]), np.zeros(1)]
    outcomes = {}
    for spec in ("and_squared_error.json", "and_bce.json"):
        model = mf.build(EXAMPLES / "and_gate" / spec, registry)
        model.set_weights(bad)
        _, (dW, _) = model.compute_gradients(data.X, data.y)
        history = model.fit(data.X, data.y)
        outcomes[spec] = (dW[1, 0], history.history["accuracy"])
    dw2, accuracy = outcomes["and_squared_error.json"]
    assert dw2 == 0.0  # the saturated sigmoid passes back no gradient at all
    assert max(accuracy) == 0.75  # (0, 1) stays misclassified for all 1000 epochs
    dw2, accuracy = outcomes["and_bce.json"]
    assert dw2 == pytest.approx(0.25)  # (sigmoid(60) - 0) / 4
    assert accuracy.index(1.0) < 500 and accuracy[-1] == 1.0


def test_iris_petals_virginica(registry: mf.Registry) -> None:
    model, _, data = fit(
        registry, "iris_petals/iris_petals.json", "iris_petals/data.csv", "virginica"
    )
    assert data.X.shape == (150, 2) and data.y is not None and data.y.sum() == 50
    assert model.evaluate(data.X, data.y)["accuracy"] >= 0.95


def test_digits_multi_class(registry: mf.Registry) -> None:
    model = mf.build(EXAMPLES / "digits" / "digits.json", registry)
    train = load_data(EXAMPLES / "digits" / "train.npz")
    test = load_data(EXAMPLES / "digits" / "test.npz")
    history = model.fit(train.X, targets_for(train, 10, model.loss))
    assert "val_loss" in history.history
    metrics = model.evaluate(test.X, targets_for(test, 10, model.loss))
    assert metrics["accuracy"] >= 0.95


def test_moons_reaches_the_seed_test_accuracy_through_the_cli(tmp_path: Path) -> None:
    """The second tutorial's run, 10000 full-batch epochs (about 15 s), via ``python -m``."""
    # One BLAS thread: on these small matrices multi-threaded OpenBLAS can be far slower.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    moons = EXAMPLES / "moons"

    def microfw(*argv: str) -> str:
        result = run_module("microfw", *argv, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        return result.stdout

    out = tmp_path / "moons"
    microfw(
        "fit", str(moons / "moons.json"), "--data", str(moons / "train.csv"), "--target", "y",
        "--out", str(out), "--quiet",
    )  # fmt: skip
    history = json.loads((out / "history.json").read_text())
    assert len(history["epoch"]) == 10000
    test = ["--data", str(moons / "test.csv"), "--target", "y", "--json"]
    metrics = json.loads(microfw("evaluate", str(out / "model.microfw"), *test))
    assert metrics["accuracy"] >= 0.98


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("or_gate/or_gate.py", ["predictions: [0 1 1 1]"]),
        ("xor/xor.py", ["Cost at epoch#0: 0.12926510193084198", "Cost at epoch#4900: 0.00092101"]),
        ("xor_feature_cross/xor_feature_cross.py", ["predictions: [0 1 1 0]", "wrote runs"]),
        ("and_gate/and_gate.py", ["first epoch at 100%: None", "final accuracy 1.00"]),
        ("iris_petals/iris_petals.py", ["'accuracy': "]),
        ("digits/digits.py", ["test: {'loss': "]),
    ],
)
def test_example_scripts_run(
    script: str,
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    out = capsys.readouterr().out
    for fragment in expected:
        assert fragment in out


def test_a_plugin_registered_in_a_script_is_usable_by_name() -> None:
    """In a fresh process: ``@mf.register`` changes the process-wide registry."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_activation" / "custom_activation.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "checks passed: check_schema" in result.stdout
    assert "predictions: [0 1 1 0]" in result.stdout
