"""Data files for the CLI: CSV and npz loading, shaping targets for a model, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import microfw as mf
from microfw.data import DataError, Dataset, check_features, load_data, targets_for

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_target_column_is_split_off_wherever_it_is(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,label,b\n1,0,2\n3,1,4.5\n")
    data = load_data(path, "label")
    assert data.feature_names == ("a", "b")
    np.testing.assert_array_equal(data.X, [[1, 2], [3, 4.5]])
    np.testing.assert_array_equal(data.y, [0, 1])
    assert data.X.dtype == np.float64


def test_csv_without_target_for_prediction_keeps_every_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b\n1,2\n\n3,4\n")  # blank lines are skipped
    data = load_data(path, need_target=False)
    assert data.y is None
    assert data.X.shape == (2, 2)


def test_shipped_moons_csv_round_trips_floats_exactly() -> None:
    data = load_data(EXAMPLES / "moons" / "train.csv", "y")
    assert data.X.shape == (900, 2)
    assert set(np.unique(data.y)) == {0.0, 1.0}
    assert data.X[0, 0] == -0.8667570680636427  # repr() written, so read back bit for bit


def test_npz_target_names_the_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 3)), y=np.zeros(2), labels=np.ones(2))
    np.testing.assert_array_equal(load_data(tmp_path / "d.npz", "labels").y, [1, 1])
    np.testing.assert_array_equal(load_data(tmp_path / "d.npz").y, [0, 0])


def test_npz_with_X_and_integer_labels() -> None:
    data = load_data(EXAMPLES / "digits" / "test.npz")
    assert data.X.shape == (360, 64)
    assert data.y is not None and data.y.shape == (360,)
    assert data.feature_names[:2] == ("x1", "x2")


@pytest.mark.parametrize(
    ("name", "text", "target", "expected"),
    [
        ("empty.csv", "", "y", "empty file"),
        ("header.csv", "x1,x2,y\n", "y", "no data rows"),
        ("text.csv", "x1,y\n1,0\nabc,1\n", "y", "line 3, column 'x1': not a number ('abc')"),
        ("nan.csv", "x1,y\n1,0\nnan,1\n", "y", "NaN or infinite"),
        ("inf.csv", "x1,y\n1,0\n2,inf\n", "y", "y holds 1 NaN or infinite"),
        ("short.csv", "x1,x2,y\n1,2,0\n1,1\n", "y", "line 3 has 2 fields, the header has 3"),
        # Line numbers are the file's, blank lines counted.
        ("blank.csv", "x1,y\n\n1,0\n\nabc,1\n", "y", "line 5, column 'x1': not a number"),
        ("d.csv", "x1,x2,y\n1,2,0\n", "label", "no column 'label' for the target"),
        ("d.csv", "x1,x2,y\n1,2,0\n", None, "name the target column with --target"),
        ("only.csv", "y\n1\n", "y", "no feature columns"),
    ],
)
def test_bad_csv_is_one_clear_line_naming_the_file(
    tmp_path: Path, name: str, text: str, target: str | None, expected: str
) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(DataError) as info:
        load_data(path, target)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message
    assert isinstance(info.value, mf.MicrofwError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        load_data(tmp_path / "nope.csv", "y")


def test_npz_problems(tmp_path: Path) -> None:
    np.savez(tmp_path / "noX.npz", A=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"no array 'X' \(arrays: A\)"):
        load_data(tmp_path / "noX.npz")
    np.savez(tmp_path / "noy.npz", X=np.zeros((2, 2)))
    with pytest.raises(DataError, match="no array 'y'"):
        load_data(tmp_path / "noy.npz")
    assert load_data(tmp_path / "noy.npz", need_target=False).y is None
    with pytest.raises(DataError, match=r"no array 'labels' with the targets \(arrays: X\)"):
        load_data(tmp_path / "noy.npz", "labels", need_target=False)
    np.savez(tmp_path / "obj.npz", X=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match=r"obj\.npz"):
        load_data(tmp_path / "obj.npz")  # object arrays would need pickle: refused
    for name, X in {
        "complex": np.array([[1 + 2j, 3], [0, 1j]]),  # the cast would drop the imaginary part
        "timedelta": np.array([[1, 2], [3, 4]], dtype="m8[s]"),
    }.items():
        np.savez(tmp_path / f"{name}.npz", X=X, y=np.zeros(2))
        with pytest.raises(DataError, match=rf"{name}\.npz: X must hold bool, integer or float"):
            load_data(tmp_path / f"{name}.npz")
    np.savez(tmp_path / "rows.npz", X=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(DataError, match="one row per example"):
        load_data(tmp_path / "rows.npz")
    np.savez(tmp_path / "flat.npz", X=np.zeros(3), y=np.zeros(3))
    with pytest.raises(DataError, match="X must be 2-D"):
        load_data(tmp_path / "flat.npz")
    np.savez(tmp_path / "empty.npz", X=np.zeros((0, 2)), y=np.zeros(0))
    with pytest.raises(DataError, match="no examples"):
        load_data(tmp_path / "empty.npz")
    np.savez(tmp_path / "nan.npz", X=np.array([[1.0, np.nan]]), y=np.zeros(1))
    with pytest.raises(DataError, match=r"X holds 1 NaN .* index \(0, 1\)"):
        load_data(tmp_path / "nan.npz")
    write(tmp_path / "broken.npz", "not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_data(tmp_path / "broken.npz")


def dataset(X: list[list[float]], y: list[float] | list[list[float]]) -> Dataset:
    return Dataset(np.asarray(X, float), np.asarray(y, float), "mem.csv", ("a", "b"))


def test_check_features_names_the_columns() -> None:
    data = dataset([[1, 2]], [0])
    check_features(data, 2)
    with pytest.raises(DataError, match=r"expects 3 feature\(s\), the data has 2 \(a, b\)"):
        check_features(data, 3)


def test_single_output_targets_become_one_column(registry: mf.Registry) -> None:
    y = targets_for(dataset([[0, 0], [1, 1]], [0, 1]), 1, registry.create("loss", "bce"))
    assert y.shape == (2, 1)


def test_integer_labels_are_one_hot_encoded_for_k_outputs(registry: mf.Registry) -> None:
    loss = registry.create("loss", "categorical_crossentropy")
    y = targets_for(dataset([[0, 0]] * 3, [2, 0, 1]), 3, loss)
    np.testing.assert_array_equal(y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize(
    ("labels", "expected"),
    [([0, 3], "integer class labels 0..2"), ([0, 1.5], "e.g. 1.5"), ([-1, 0], "e.g. -1")],
)
def test_labels_outside_the_classes_are_rejected(labels: list[float], expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        targets_for(dataset([[0, 0]] * 2, labels), 3)


def test_targets_outside_the_loss_domain_are_rejected(registry: mf.Registry) -> None:
    with pytest.raises(DataError, match=r"mem.csv: targets unfit for loss 'bce'"):
        targets_for(dataset([[0, 0]] * 2, [0, 2]), 1, registry.create("loss", "bce"))


def test_target_width_must_match_the_outputs() -> None:
    with pytest.raises(DataError, match=r"2 output\(s\), the targets have 3 column"):
        targets_for(dataset([[0, 0]], [[0, 1, 0]]), 2)
    with pytest.raises(DataError, match="no targets"):
        targets_for(Dataset(np.zeros((1, 2)), None, "mem.csv", ("a", "b")), 1)
