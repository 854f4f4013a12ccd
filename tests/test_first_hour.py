"""A newcomer's first hour (issue 12): the ``microfw`` command's output and traps, the
layer table of ``model.summary()``, and plugins defined in scripts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import microfw as mf
from microfw.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
XOR_SPEC = str(EXAMPLES / "xor" / "xor_2_3_1.json")
XOR_DATA = str(EXAMPLES / "xor" / "data.csv")
DIGITS = EXAMPLES / "digits"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def xor_fit(tmp_path: Path, *extra: str) -> list[str]:
    return ["fit", XOR_SPEC, "--data", XOR_DATA, "--target", "y", "--out", str(tmp_path), *extra]


# -- progress (item 5) ----------------------------------------------------------------------


def test_off_a_terminal_fit_prints_cost_lines_even_with_tqdm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")  # installed by the test extra: the case that used to draw a bar
    code, out, err = run(capsys, *xor_fit(tmp_path, "--epochs", "100"))
    assert code == 0 and err == ""
    assert out.splitlines()[0].startswith("Cost at epoch#0: ")


def test_progress_flags_choose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    code, out, err = run(capsys, *xor_fit(tmp_path, "--epochs", "30", "--progress"))
    assert code == 0 and "30/30" in err and "Cost at epoch" not in out
    code, out, err = run(capsys, *xor_fit(tmp_path, "--epochs", "30", "--no-progress"))
    assert code == 0 and err == "" and "Cost at epoch#0" in out


def test_on_a_terminal_the_bar_is_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = run(capsys, *xor_fit(tmp_path, "--epochs", "30"))
    assert code == 0 and "30/30" in err and "Cost at epoch" not in out


# -- fit's report (item 6) ------------------------------------------------------------------


def test_fit_reports_the_validation_metrics_and_rows_held_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", str(DIGITS / "digits.json"), "--data", str(DIGITS / "train.npz")]
    code, out, _ = run(capsys, *argv, "--out", str(tmp_path), "--quiet")
    assert code == 0
    history = json.loads((tmp_path / "history.json").read_text())["history"]
    lines = out.splitlines()
    assert lines[0].startswith("trained 50 epochs on 1294 samples")
    (line,) = [line for line in lines if line.startswith("validation")]
    assert line.startswith("validation (143 of 1437 rows held out) loss ")
    assert f"accuracy {history['val_accuracy'][-1]:.6g}" in line
    assert f"accuracy {history['val_accuracy'][-1]:.6g}" == "accuracy 0.965035"


# -- traps (item 7) -------------------------------------------------------------------------


def test_predict_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    assert main(xor_fit(tmp_path, "--quiet")) == 0
    big = tmp_path / "big.csv"
    big.write_text("x1,x2\n" + "0,1\n" * 200_000)
    command = [sys.executable, "-m", "microfw", "predict", str(tmp_path / "model.microfw")]
    with subprocess.Popen(
        [*command, "--data", str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == b"output\n"
        proc.stdout.close()  # as `| head -1` does
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
    assert err == "" and code == 141


def test_a_diverging_fit_leaves_no_run_directory(
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
            }
        )
    )
    out = tmp_path / "runs" / "diverge"
    argv = ["fit", str(spec), "--data", XOR_DATA, "--target", "y", "--out", str(out)]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "training stopped" in err
    assert not out.exists() and not out.parent.exists()


def test_out_pointing_at_a_file_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken"
    target.write_text("not a directory")
    code, out, err = run(capsys, *xor_fit(target))
    assert code == 1 and out == ""
    assert err.strip() == f"microfw: error: --out {target}: exists and is not a directory " + (
        "(give a directory)"
    )


def test_blas_threads_flag_takes_auto_or_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *xor_fit(tmp_path, "--epochs", "2", "--blas-threads", "auto"))[0] == 0
    assert mf.load(tmp_path / "model.microfw").training.blas_threads == "auto"
    assert run(capsys, *xor_fit(tmp_path, "--epochs", "2", "--blas-threads", "1"))[0] == 0
    assert mf.load(tmp_path / "model.microfw").training.blas_threads == 1
    with pytest.raises(SystemExit):
        main(xor_fit(tmp_path, "--blas-threads", "many"))
    assert "expected 'auto' or a count, got 'many'" in capsys.readouterr().err


# -- a plugin defined in a script (item 8) --------------------------------------------------


SCRIPT = textwrap.dedent(
    '''
    import sys
    import numpy as np
    import microfw as mf

    @mf.register
    class Cubic(mf.Activation):
        """y = x^3."""

        name = "cubic_script"

        def forward(self, x):
            return x**3

        def derivative(self, x, y):
            return 3 * x**2

    model = mf.Sequential(
        [{"type": "linear", "units": 2, "activation": "cubic_script"}],
        input_dim=2, loss="squared_error",
    )
    model.save(sys.argv[1])
    '''
)


def test_a_model_with_a_script_plugin_says_to_register_the_class(tmp_path: Path) -> None:
    script = tmp_path / "make.py"
    script.write_text(SCRIPT)
    path = tmp_path / "m.microfw"
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(mf.ModelFileError) as info:
        mf.load(path)
    message = str(info.value)
    assert "activation 'cubic_script'" in message
    assert "defined in module __main__ (a script, not a package)" in message
    assert "define that class and register it (@mf.register, name 'cubic_script')" in message
    assert "install" not in message


# -- model.summary() and notebooks (item 10) ------------------------------------------------


def test_summary_prints_the_table_validate_prints(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(EXAMPLES / "moons" / "moons.json")
    assert main(["validate", spec]) == 0
    validate = capsys.readouterr().out.splitlines()
    mf.build(spec).summary()
    summary = capsys.readouterr().out.splitlines()
    assert validate[0].endswith("moons.json: valid")
    assert summary == validate[1:]
    assert summary[1].split() == ["#", "layer", "output", "params", "init"]
    assert summary[2].split()[:4] == ["0", "linear(units=25,", "use_bias=True)", "25"]
    assert summary[-2].startswith("parameters: 5226 ")
    assert summary[-1].startswith("fusions: linear+relu (layers[0..1])")


def test_a_model_shows_its_table_in_a_notebook() -> None:
    model = mf.build(str(EXAMPLES / "moons" / "moons.json"))
    page = model._repr_html_()
    assert page.count("<tr>") == 1 + len(model.layers)  # header + one row per layer
    assert "<th" in page and "linear(units=25, use_bias=True)" in page
    assert "parameters: 5226" in page
    assert "<script" not in page


# -- plugin authors (item 9) ----------------------------------------------------------------


def test_the_docstring_requirement_is_documented_and_checked() -> None:
    from microfw.testing import check_plugin

    class Undocumented(mf.Activation):
        name = "undocumented"

        def forward(self, x):  # type: ignore[no-untyped-def]
            return x

        def derivative(self, x, y):  # type: ignore[no-untyped-def]
            return x * 0 + 1

    with pytest.raises(AssertionError, match="no docstring"):
        check_plugin(Undocumented)
    readme = (ROOT / "README.md").read_text()
    plugin_section = readme[readme.index("## Writing a plugin") :]
    assert "needs a **docstring**" in plugin_section
    examples = (EXAMPLES / "README.md").read_text()
    assert '".[examples]"' not in examples  # no example needs scikit-learn
