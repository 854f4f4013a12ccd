"""Model files remember the training columns; ``predict`` and ``evaluate`` match CSV columns
by name (issue 12, item 4)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import microfw as mf
from microfw.cli.main import main
from microfw.columns import Columns, saved_columns

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MOONS_SPEC = str(EXAMPLES / "moons" / "moons.json")
MOONS_TEST = EXAMPLES / "moons" / "test.csv"


@pytest.fixture(scope="module")
def moons_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("moons")
    argv = ["fit", MOONS_SPEC, "--data", str(EXAMPLES / "moons" / "train.csv"), "--target", "y"]
    assert main([*argv, "--out", str(out), "--epochs", "300", "--quiet"]) == 0
    return out / "model.microfw"


def csv_with(tmp_path: Path, header: list[str], order: list[int]) -> Path:
    """The moons test rows with their columns (x1, x2, y) in ``order``, under ``header``."""
    rows = [line.split(",") for line in MOONS_TEST.read_text().splitlines()[1:]]
    path = tmp_path / "data.csv"
    lines = [",".join(header)] + [",".join(row[i] for i in order) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def predictions(capsys: pytest.CaptureFixture[str], model: Path, *argv: str) -> np.ndarray:
    assert main(["predict", str(model), *argv]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "output"
    return np.array([float(v) for v in out[1:]])


def test_fit_stores_the_feature_and_target_names(moons_model: Path) -> None:
    assert saved_columns(moons_model) == Columns(("x1", "x2"), "y")
    with zipfile.ZipFile(moons_model) as archive:
        meta = json.loads(archive.read("meta.json"))
    assert meta["columns"] == {"features": ["x1", "x2"], "target": "y"}


def test_swapped_columns_are_reordered(
    moons_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = predictions(capsys, moons_model, "--data", str(MOONS_TEST), "--target", "y")
    swapped = csv_with(tmp_path, ["x2", "x1", "y"], [1, 0, 2])
    got = predictions(capsys, moons_model, "--data", str(swapped), "--target", "y")
    np.testing.assert_array_equal(got, expected)
    assert main(["evaluate", str(moons_model), "--data", str(swapped), "--target", "y"]) == 0
    swapped_metrics = capsys.readouterr().out
    assert main(["evaluate", str(moons_model), "--data", str(MOONS_TEST), "--target", "y"]) == 0
    assert swapped_metrics == capsys.readouterr().out


def test_renamed_columns_are_refused_naming_missing_and_unexpected(
    moons_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    renamed = csv_with(tmp_path, ["a", "b", "y"], [0, 1, 2])
    assert main(["predict", str(moons_model), "--data", str(renamed), "--target", "y"]) == 1
    err = capsys.readouterr().err
    assert "missing 'x1', 'x2'; unexpected 'a', 'b'" in err
    assert "trained on x1, x2" in err and "--target" not in err


def test_the_training_target_column_gets_a_hint(
    moons_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(moons_model), "--data", str(MOONS_TEST)]) == 1
    err = capsys.readouterr().err
    assert "unexpected 'y'" in err and "'y' was the training target: pass --target y" in err


def test_a_model_saved_from_python_reads_columns_in_file_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = mf.Sequential([{"type": "linear", "units": 1}], input_dim=2, loss="squared_error")
    model.set_weights([np.array([[1.0], [0.0]]), np.array([0.0])])  # outputs the first column
    model.save(tmp_path / "m.microfw")
    assert saved_columns(tmp_path / "m.microfw") is None
    data = tmp_path / "d.csv"
    data.write_text("b,a\n3,4\n")
    got = predictions(capsys, tmp_path / "m.microfw", "--data", str(data))
    np.testing.assert_array_equal(got, [3.0])


def test_a_malformed_columns_record_is_a_model_file_error(tmp_path: Path) -> None:
    model = mf.Sequential([{"type": "linear", "units": 1}], input_dim=2, loss="squared_error")
    path = tmp_path / "m.microfw"
    mf.io.save(model, path, columns=Columns(("x1", "x2"), "y"))
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(members["meta.json"])
    meta["columns"] = {"features": "x1,x2", "target": 3}
    members["meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(mf.ModelFileError, match=r"'columns' must be"):
        saved_columns(path)
    mf.load(path)  # the model itself still loads
