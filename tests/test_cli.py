"""The ``microfw`` command, run in-process through ``main([...])`` and as ``python -m microfw``."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from subprocesses import run_module

import microfw as mf
from microfw.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
XOR_SPEC = str(EXAMPLES / "xor" / "xor_2_3_1.json")
XOR_DATA = str(EXAMPLES / "xor" / "data.csv")
XOR_BCE_SPEC = str(EXAMPLES / "xor" / "xor_bce.json")
DIGITS_SPEC = str(EXAMPLES / "digits" / "digits.json")
SEED_EPOCH_0 = 0.12926510193084198


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("microfw: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def no_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``tqdm`` unimportable, as without the ``progress`` extra."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)


@pytest.fixture
def xor_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xor")
    assert main(["fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(out)]) == 0
    return out / "model.microfw"


# -- fit ------------------------------------------------------------------------------------


def test_fit_writes_model_and_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(tmp_path),
        "--quiet",
    )  # fmt: skip
    assert code == 0
    assert "trained 5000 epochs on 4 samples" in out
    assert "final loss 0.00089" in out and "accuracy 1" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "history.csv",
        "history.json",
        "model.microfw",
    ]
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["epoch"] == list(range(5000))
    assert history["history"]["loss"][0] == SEED_EPOCH_0
    assert history["params"]["epochs"] == 5000
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,accuracy,lr"
    assert rows[1] == f"0,{SEED_EPOCH_0!r},0.5,1.0"
    assert len(rows) == 5001
    model = mf.load(tmp_path / "model.microfw")
    np.testing.assert_array_equal(
        (model.predict([[0, 0], [0, 1], [1, 0], [1, 1]]) >= 0.5).ravel(), [0, 1, 1, 0]
    )


def test_fit_prints_the_seed_cost_lines_without_tqdm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tqdm: None
) -> None:
    code, out, err = run(
        capsys, "fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(tmp_path)
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"Cost at epoch#0: {SEED_EPOCH_0}"
    assert lines[49].startswith("Cost at epoch#4900: 0.00092101664306")
    assert err == ""


def test_fit_shows_a_progress_bar_with_tqdm_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(tmp_path),
        "--epochs", "50", "--progress",
    )  # fmt: skip
    assert code == 0
    assert "50/50" in err
    assert "Cost at epoch" not in out


def test_fit_quiet_prints_no_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_tqdm: None
) -> None:
    code, out, err = run(
        capsys, "fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(tmp_path),
        "--quiet", "--epochs", "10",
    )  # fmt: skip
    assert code == 0 and err == ""
    assert "Cost at epoch" not in out


def test_fit_overrides_epochs_and_seed(tmp_path: Path) -> None:
    def first_loss(*extra: str) -> list[float]:
        out = tmp_path / "_".join(extra)
        argv = ["fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(out)]
        assert main([*argv, "--quiet", *extra]) == 0
        saved = mf.load(out / "model.microfw")  # the saved spec says how it was trained
        assert saved.training.epochs == 7 and saved.seed == (3 if "--seed" in extra else 48)
        return json.loads((out / "history.json").read_text())["history"]["loss"]

    loss = first_loss("--epochs", "7")
    assert len(loss) == 7 and loss[0] == SEED_EPOCH_0
    other = first_loss("--epochs", "7", "--seed", "3")
    assert other[0] != SEED_EPOCH_0


def test_fit_default_output_directory_is_named_after_the_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--quiet"]) == 0
    assert (tmp_path / "runs" / "xor_2_3_1" / "model.microfw").is_file()


def test_fit_plot_writes_both_pngs_for_2d_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(tmp_path),
        "--plot", "--quiet", "--epochs", "100",
    )  # fmt: skip
    assert code == 0
    for name in ("learning_curve.png", "decision_boundary.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert name in out


def test_fit_plot_skips_the_boundary_for_wider_inputs(tmp_path: Path) -> None:
    spec = DIGITS_SPEC
    data = str(EXAMPLES / "digits" / "test.npz")
    argv = ["fit", spec, "--data", data, "--out", str(tmp_path), "--plot", "--quiet"]
    assert main([*argv, "--epochs", "2"]) == 0
    assert (tmp_path / "learning_curve.png").is_file()
    assert not (tmp_path / "decision_boundary.png").exists()


def test_fit_plot_without_matplotlib_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = run(
        capsys, "fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(tmp_path),
        "--plot", "--quiet",
    )  # fmt: skip
    assert_one_line_error(code, err, "pip install 'microfw[plot]'")
    assert out == ""
    assert not (tmp_path / "model.microfw").exists()


# -- evaluate and predict -------------------------------------------------------------------


def test_evaluate(xor_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "evaluate", str(xor_model), "--data", XOR_DATA, "--target", "y")
    assert code == 0
    assert out.splitlines()[1] == "accuracy: 1.0"
    code, out, _ = run(
        capsys, "evaluate", str(xor_model), "--data", XOR_DATA, "--target", "y", "--json"
    )
    metrics = json.loads(out)
    assert metrics["accuracy"] == 1.0 and 0 < metrics["loss"] < 1e-3


def test_predict_to_stdout_and_to_a_file(
    xor_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "predict", str(xor_model), "--data", XOR_DATA, "--target", "y")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "output"
    values = [float(v) for v in lines[1:]]
    assert [v >= 0.5 for v in values] == [False, True, True, False]
    np.testing.assert_array_equal(
        values, mf.load(xor_model).predict(np.array([[0, 0], [0, 1], [1, 0], [1, 1]])).ravel()
    )
    features = tmp_path / "features.csv"
    features.write_text("x1,x2\n1,0\n")
    target = tmp_path / "pred.csv"
    code, out, _ = run(
        capsys, "predict", str(xor_model), "--data", str(features), "--output", str(target)
    )
    assert code == 0 and f"wrote 1 predictions to {target}" in out
    assert float(target.read_text().splitlines()[1]) > 0.5


def test_predict_multi_output_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = DIGITS_SPEC
    data = str(EXAMPLES / "digits" / "test.npz")
    argv = ["fit", spec, "--data", data, "--out", str(tmp_path), "--quiet", "--epochs", "1"]
    assert main(argv) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "predict", str(tmp_path / "model.microfw"), "--data", data)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ",".join(f"output_{i}" for i in range(10))
    assert len(lines) == 361
    assert sum(float(v) for v in lines[1].split(",")) == pytest.approx(1.0)


def test_predict_csv_with_the_target_column_but_no_target_flag(
    xor_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "predict", str(xor_model), "--data", XOR_DATA)
    assert_one_line_error(code, err, "unexpected 'y'", "training target: pass --target y")


# -- validate -------------------------------------------------------------------------------


def test_validate_prints_the_layer_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(EXAMPLES / "moons" / "moons.json"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("moons.json: valid")
    assert lines[2].split() == ["#", "layer", "output", "params", "init"]
    first = lines[3]
    assert "linear(units=25" in first and " 25 " in first and " 75 " in first
    assert "init=normal(std=0.1), bias_init=normal(std=0.1)" in first
    assert lines[4].split() == ["1", "relu", "25", "0"]
    assert "parameters: 5226" in out and "rng: legacy" in out
    relu = ", ".join(f"linear+relu (layers[{i}..{i + 1}])" for i in (0, 2, 4, 6))
    assert lines[-1] == f"fusions: {relu}, linear (layers[8]), sigmoid+bce (layers[9])"


def test_validate_lists_every_problem_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(
        json.dumps(
            {
                "spec_version": 1,
                "input_dim": 2,
                "layers": [{"type": "linear", "units": -3}, "sigmod"],
                "loss": "bc",
            }
        )
    )
    code, out, err = run(capsys, "validate", str(spec))
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{spec}: invalid, 3 problem(s):"
    assert lines[1].startswith("  layers[0].units: ")
    assert lines[2].startswith("  layers[1]: unknown layer or activation 'sigmod'")
    assert "did you mean 'sigmoid'?" in lines[2]
    assert lines[3].startswith("  loss: unknown loss 'bc'; did you mean 'bce'?")


def test_validate_missing_and_malformed_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.json"))
    assert_one_line_error(code, err, "nope.json: no such spec file")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    code, out, _ = run(capsys, "validate", str(broken))
    assert code == 1 and "not valid JSON" in out


# -- plugins, schema, check, version --------------------------------------------------------


def test_plugins_lists_every_kind_with_its_package(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    headings = [line for line in out.splitlines() if not line.startswith(" ")]
    assert headings == [
        "layer:",
        "activation:",
        "loss:",
        "initializer:",
        "optimizer:",
        "schedule:",
        "regularizer:",
        "metric:",
    ]
    registry = mf.Registry()
    for entry in registry.entries():
        assert any(
            line.split()[:3] == [entry.name, *str(entry.provenance).split()]
            for line in out.splitlines()
        ), entry.name


class _BrokenPackage:
    """A plugin object whose hook raises, as a broken third-party package would."""

    __name__ = "broken_plugin"

    @mf.hookimpl
    def register_activations(self) -> list[type[mf.Activation]]:
        raise RuntimeError("boom")


@pytest.fixture
def broken_registry(monkeypatch: pytest.MonkeyPatch) -> mf.Registry:
    registry = mf.Registry()
    registry.add_plugin(_BrokenPackage(), package="broken-pkg", version="1.0")
    monkeypatch.setattr(mf, "default_registry", lambda: registry)
    return registry


def test_plugins_lists_skipped_packages(
    broken_registry: mf.Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "plugins")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[-2] == "skipped (not usable):"
    assert lines[-1].startswith("  broken_plugin (from broken-pkg): register_activations() raised")
    assert any(line.split()[:1] == ["relu"] for line in lines)  # the others still work


def test_warnings_are_one_line(
    broken_registry: mf.Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "check", "relu")
    assert code == 0 and out.startswith("ok    relu")
    assert err.splitlines() == [
        "microfw: warning: microfw plugin skipped: broken_plugin (from broken-pkg): "
        "register_activations() raised RuntimeError('boom')"
    ]


def test_schema_is_the_live_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    assert code == 0
    assert json.loads(out) == mf.json_schema(mf.Registry())


def test_check_runs_the_contract_checks(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "relu", "loss:bce")
    assert code == 0
    assert out.splitlines()[0].startswith("ok    relu: ")
    assert "check_activation_gradient" in out
    assert out.splitlines()[-1] == "checked 2 plugin(s): 2 ok, 0 failed"


def test_check_fails_for_an_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "relu", "rleu")
    assert code == 1
    assert "FAIL  rleu: unknown plugin 'rleu'; did you mean 'relu'?" in out


def test_check_fails_for_a_broken_plugin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class WrongDerivative(mf.Activation):
        """y = x^2 with a wrong derivative."""

        name = "wrong_square"

        def forward(self, x):  # type: ignore[no-untyped-def]
            return x * x

        def derivative(self, x, y):  # type: ignore[no-untyped-def]
            return x

    registry = mf.Registry()
    registry.register(WrongDerivative)
    monkeypatch.setattr(mf, "default_registry", lambda: registry)
    code, out, _ = run(capsys, "check", "wrong_square")
    assert code == 1
    assert out.startswith("FAIL  wrong_square: check_")


def test_check_needs_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check")
    assert_one_line_error(code, err, "name the plugins to check")
    code, _, err = run(capsys, "check", "colour:relu")
    assert_one_line_error(code, err, "unknown plugin kind 'colour'")
    code, _, err = run(capsys, "check", "--all", "relu")
    assert_one_line_error(code, err, "give plugin names or --all, not both")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"microfw {mf.__version__}"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", XOR_SPEC])  # --data is required
    assert info.value.code == 2
    assert "--data" in capsys.readouterr().err


# -- user errors: one line, exit 1, no traceback --------------------------------------------


def bad_spec(tmp_path: Path) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"spec_version": 1, "input_dim": 2, "layers": ["sigmod"]}))
    return str(path)


def nan_csv(tmp_path: Path) -> str:
    path = tmp_path / "nan.csv"
    path.write_text("x1,x2,y\n0,0,0\n0,nan,1\n")
    return str(path)


def labels_csv(tmp_path: Path) -> str:
    path = tmp_path / "labels.csv"
    path.write_text("x1,x2,y\n0,0,0\n0,1,2\n")
    return str(path)


def labels_npz(tmp_path: Path) -> str:
    path = tmp_path / "labels.npz"
    np.savez(path, X=np.zeros((2, 64)), y=np.array([3, 10]))
    return str(path)


def wide_csv(tmp_path: Path) -> str:
    path = tmp_path / "wide.csv"
    path.write_text("x1,x2,x3,y\n0,0,0,0\n")
    return str(path)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (lambda t: ["fit", str(t / "none.json"), "--data", XOR_DATA], ["none.json"]),
        (lambda t: ["fit", XOR_SPEC, "--data", str(t / "none.csv")], ["no such data file"]),
        (lambda t: ["fit", XOR_SPEC, "--data", XOR_DATA], ["--target", "columns: x1, x2, y"]),
        (
            lambda t: ["fit", XOR_SPEC, "--data", nan_csv(t), "--target", "y"],
            ["nan.csv", "NaN or infinite"],
        ),
        (
            lambda t: ["fit", XOR_BCE_SPEC, "--data", labels_csv(t), "--target", "y"],
            ["labels.csv: targets unfit for loss 'bce'"],
        ),
        (
            lambda t: ["fit", DIGITS_SPEC, "--data", labels_npz(t)],
            ["labels.npz: a model with 10 outputs needs integer class labels 0..9", "e.g. 10"],
        ),
        (
            lambda t: ["fit", XOR_SPEC, "--data", wide_csv(t), "--target", "y"],
            ["expects 2 feature(s), the data has 3"],
        ),
        (lambda t: ["evaluate", str(t / "none.microfw"), "--data", XOR_DATA], ["no such model"]),
        (lambda t: ["evaluate", XOR_DATA, "--data", XOR_DATA], ["not a microfw model file"]),
        (lambda t: ["predict", str(t / "none.microfw"), "--data", XOR_DATA], ["no such model"]),
    ],
)
def test_user_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv, fragments: list[str]
) -> None:
    code, _, err = run(capsys, *argv(tmp_path))
    assert_one_line_error(code, err, *fragments)


def assert_spec_error(code: int, err: str, *problems: str) -> None:
    """A bad spec: a heading line, then each problem on its own line, as validate prints."""
    assert code == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("microfw: error: invalid spec")
    assert lines[0].endswith(f": {len(problems)} problem(s):")
    assert len(lines) == 1 + len(problems), err
    for line, problem in zip(lines[1:], problems, strict=True):
        assert line.startswith(f"  {problem}")


@pytest.mark.parametrize(
    ("argv", "problems"),
    [
        (
            lambda t: ["fit", bad_spec(t), "--data", XOR_DATA, "--target", "y"],
            ["layers[0]: unknown layer or activation 'sigmod'", "loss: missing"],
        ),
        (
            lambda t: ["fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--epochs", "-1"],
            ["epochs"],
        ),
        (
            lambda t: ["fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--seed", "-5"],
            ["seed"],
        ),
    ],
)
def test_spec_errors_list_one_problem_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv, problems: list[str]
) -> None:
    code, _, err = run(capsys, *argv(tmp_path))
    assert_spec_error(code, err, *problems)


def test_diverging_training_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "diverge.json"
    spec.write_text(
        json.dumps(
            {
                "spec_version": 1,
                "input_dim": 2,
                "layers": [{"type": "linear", "units": 1}],
                "loss": "squared_error",
                "optimizer": {"type": "sgd", "lr": 1e10},
                "training": {"epochs": 100},
                "seed": 0,
            }
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(capsys, "fit", str(spec), "--data", XOR_DATA, "--target", "y", "--quiet")
    # The weights pass sqrt(max float) (1.3e154) before the loss overflows.
    assert_one_line_error(code, err, "absurdly large (norm beyond 1.3e+154) at epoch")
    assert [str(w.message) for w in caught] == []  # no numpy overflow noise on stderr


# -- as a separate process ------------------------------------------------------------------


def python_m(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("microfw", *argv, cwd=cwd)


def test_python_m_microfw_version() -> None:
    result = python_m("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"microfw {mf.__version__}"


def test_python_m_microfw_error_has_no_traceback(tmp_path: Path) -> None:
    result = python_m("fit", bad_spec(tmp_path), "--data", XOR_DATA, "--target", "y")
    assert result.returncode == 1
    assert result.stdout == ""
    assert_spec_error(result.returncode, result.stderr, "layers[0]", "loss")
    assert "did you mean 'sigmoid'?" in result.stderr


def test_python_m_microfw_fit_then_evaluate(tmp_path: Path) -> None:
    fit = python_m("fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--quiet", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    model = tmp_path / "runs" / "xor_2_3_1" / "model.microfw"
    result = python_m("evaluate", str(model), "--data", XOR_DATA, "--target", "y", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] == 1.0
