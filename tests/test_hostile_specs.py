"""Specs that used to escape as the wrong error, or validate and then crash ``fit`` (issue 11,
items 4, 5 and 8, and the decisions on ``spec_version: true``, duplicate keys and clipped
losses at absurd learning rates)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import microfw as mf
from microfw.cli.main import main
from microfw.spec.models import MAX_BLAS_THREADS, MAX_LAYERS, MAX_WIDTH

BASE: dict[str, Any] = {
    "spec_version": 1,
    "input_dim": 2,
    "layers": [
        {"type": "linear", "units": 3, "activation": "tanh"},
        {"type": "linear", "units": 1},
    ],
    "loss": "squared_error",
    "seed": 0,
}
X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([0.0, 1.0, 1.0, 0.0])


def spec_with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    node: Any = spec
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return spec


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The command's error: ``microfw: error: ...`` (a spec's problems one per line after)."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("microfw: error: "), err
    assert "Traceback" not in err
    return err


# -- 4. huge integers --------------------------------------------------------------------------

HUGE = [10**309, 10**5000, -(10**5000)]


@pytest.mark.parametrize("value", HUGE, ids=["1e309", "1e5000", "-1e5000"])
@pytest.mark.parametrize(
    ("where", "path"),
    [
        (("input_dim",), "layers[0]"),
        (("layers", 0, "units"), "layers[0]"),
        (("layers", 1, "units"), "layers[1]"),
        (("seed",), None),  # a huge seed is a valid seed
        (("layers", 0, "activation"), "layers[0].activation"),
        (("optimizer",), "optimizer"),
        (("training", "epochs"), None),
        (("training", "batch_size"), None),
        (("training", "blas_threads"), "training.blas_threads"),
        (("layers", 0, "init"), "layers[0].init"),
        (("layers", 0, "surprise"), "layers[0].surprise"),
    ],
)
def test_a_huge_integer_anywhere_is_a_spec_error_with_its_path(
    where: tuple[Any, ...], path: str | None, value: int
) -> None:
    if where[0] == "training":
        spec = spec_with(("training",), {where[1]: value})
    else:
        spec = spec_with(where, value)
    try:
        mf.build(spec)
    except mf.SpecError as exc:
        assert exc.problems and all(p.path for p in exc.problems)
        str(exc)  # the message itself can be built
        if path is not None:  # the layer (its width), or the field itself (below 1)
            field = ".".join(str(part) for part in where).replace(".0", "[0]").replace(".1", "[1]")
            found = [p.path for p in exc.problems]
            assert path in found or field in found, found
        return
    assert path is None or value < 0, f"{where} = {value:.3g} built a model"


def test_the_message_says_how_large_a_huge_width_is() -> None:
    with pytest.raises(mf.SpecError, match=r"about 1e\+309 or more parameters"):
        mf.build(spec_with(("layers", 0, "units"), 10**309))
    with pytest.raises(mf.SpecError) as info:
        mf.build(spec_with(("layers", 0, "bogus"), 10**5000))
    assert "<an integer of about 5,001 digits>" in str(info.value)


def test_a_json_integer_too_long_to_read_is_a_spec_error(tmp_path: Path) -> None:
    text = json.dumps(BASE).replace('"units": 3', '"units": ' + "7" * 5000)
    with pytest.raises(mf.SpecError) as info:
        mf.load_spec(text)
    (problem,) = info.value.problems  # at its path, as every other problem
    assert (problem.path, problem.message) == (
        "layers[0].units",
        "an integer of 5000 digits, too long to read",
    )
    path = tmp_path / "spec.json"
    path.write_text(text)
    with pytest.raises(mf.SpecError, match="too long to read"):
        mf.build(path)


def test_validate_on_huge_widths_is_a_listed_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec_with(("layers", 0, "units"), 10**309)))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "invalid, 1 problem(s)" in out and "layers[0]: the model would have about" in out


# -- decisions: spec_version true, duplicate keys ------------------------------------------------


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_spec_version_must_be_the_integer_1(version: Any) -> None:
    with pytest.raises(mf.SpecError) as info:
        mf.build(spec_with(("spec_version",), version))
    assert [p.path for p in info.value.problems] == ["spec_version"]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"spec_version": 1, "spec_version": 1}', "spec_version"),
        ('{"layers": [{"type": "linear", "units": 3, "units": 30}]}', "layers[0].units"),
        ('{"optimizer": {"type": "sgd", "schedule": {"type": "step", "type": "cosine"}}}', None),
    ],
)
def test_a_key_given_twice_is_a_spec_error_with_its_path(
    text: str, path: str | None, tmp_path: Path
) -> None:
    path = path or "optimizer.schedule.type"
    with pytest.raises(mf.SpecError) as info:
        mf.load_spec(text)
    (problem,) = info.value.problems
    assert problem.path == path and "appears more than once" in problem.message
    file = tmp_path / "spec.json"
    file.write_text(text)
    with pytest.raises(mf.SpecError, match="appears more than once"):
        mf.build(file)


# -- 8. the number of layers ------------------------------------------------------------------


def test_more_than_max_layers_is_a_spec_error() -> None:
    assert MAX_LAYERS == 1000
    with pytest.raises(mf.SpecError, match=r"1,001 layers; the limit is 1,000") as info:
        mf.build({**BASE, "layers": ["tanh"] * (MAX_LAYERS + 1)})
    assert [p.path for p in info.value.problems] == ["layers"]
    # Counted once each "activation" key has added its layer.
    layers = [{"type": "linear", "units": 2, "activation": "tanh"}] * (MAX_LAYERS // 2 + 1)
    with pytest.raises(mf.SpecError, match=r"1,002 layers once each 'activation' key"):
        mf.build({**BASE, "layers": layers})
    # A million activations is refused at once, before any is created.
    with pytest.raises(mf.SpecError, match=r"1,000,000 layers"):
        mf.build({**BASE, "layers": ["relu"] * 1_000_000})


def test_a_model_of_max_layers_builds_predicts_saves_and_loads(tmp_path: Path) -> None:
    layers = [{"type": "linear", "units": 2, "activation": "tanh"}] * (MAX_LAYERS // 2 - 1)
    model = mf.build({**BASE, "layers": [*layers, {"type": "linear", "units": 1}, "sigmoid"]})
    assert len(model.layers) == MAX_LAYERS
    out = model.predict(np.ones((8, 2)))
    assert out.shape == (8, 1)
    model.save(tmp_path / "deep.microfw")
    np.testing.assert_array_equal(mf.load(tmp_path / "deep.microfw").predict(np.ones((8, 2))), out)


# -- 5. specs that validate and then crashed fit -------------------------------------------------


def test_a_schedule_overflowing_ends_in_a_training_error() -> None:
    schedule = {"type": "inverse_time", "decay": 10, "power": 400}
    model = mf.build(spec_with(("optimizer",), {"type": "sgd", "schedule": schedule}))
    with pytest.raises(mf.TrainingError, match="OverflowError") as info:
        model.fit(X, Y, epochs=5)
    assert info.value.epoch == 1 and info.value.batch == 0
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert info.value.history.epoch == [0]


def test_fit_with_an_overflowing_schedule_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule = {"type": "inverse_time", "decay": 10, "power": 400}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(spec_with(("optimizer",), {"type": "sgd", "schedule": schedule})))
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    argv = ["fit", str(spec), "--data", str(data), "--target", "y", "--quiet", "--epochs", "3"]
    err = one_line_error(capsys, [*argv, "--out", str(tmp_path / "run")])
    assert "the update raised OverflowError" in err and "at epoch 1, batch 0" in err


def test_blas_threads_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(mf.SpecError) as info:
        mf.build(spec_with(("training",), {"blas_threads": 2**63}))
    assert [p.path for p in info.value.problems] == ["training.blas_threads"]
    assert f"less than or equal to {MAX_BLAS_THREADS}" in str(info.value)
    model = mf.build(BASE)
    with pytest.raises(mf.SpecError, match="blas_threads"):
        model.fit(X, Y, blas_threads=2**63)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(BASE))
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n0,0,0\n0,1,1\n")
    argv = ["fit", str(spec), "--data", str(data), "--target", "y", "--quiet"]
    err = one_line_error(capsys, [*argv, "--blas-threads", str(2**63)])
    assert (
        "blas_threads: Input should be 'auto', or input should be less than or equal to 1024" in err
    )


# -- decision: a clipped loss at an absurd learning rate ---------------------------------------


@pytest.mark.parametrize(
    ("loss", "last", "dtype", "lr"),
    [
        ("bce", "sigmoid", "float64", 1e200),
        ("bce", "sigmoid", "float64", 1e300),
        ("bce", "sigmoid", "float32", 1e30),
        ("categorical_crossentropy", "softmax", "float64", 1e300),
        ("categorical_crossentropy", "softmax", "float32", 1e30),
    ],
)
def test_weights_growing_past_sqrt_max_end_in_a_training_error(
    loss: str, last: str, dtype: str, lr: float
) -> None:
    # Both losses clip their value, so it stays finite however large the weights grow.
    units = 2 if last == "softmax" else 1
    model = mf.build(
        {
            **BASE,
            "layers": [
                {"type": "linear", "units": 4, "activation": "relu"},
                {"type": "linear", "units": units},
                last,
            ],
            "loss": loss,
            "optimizer": {"type": "sgd", "lr": lr},
            "dtype": dtype,
        }
    )
    y = Y if units == 1 else np.eye(2)[Y.astype(int)]
    initial = model.get_weights()
    with np.errstate(all="ignore"), pytest.raises(mf.TrainingError) as info:
        model.fit(X, y, epochs=20)
    limit = np.sqrt(np.finfo(dtype).max)
    assert f"absurdly large (norm beyond {limit:.2g})" in str(info.value) or (
        "non-finite" in str(info.value)
    )
    assert info.value.epoch == 0
    for got, want in zip(model.get_weights(), initial, strict=True):
        np.testing.assert_array_equal(got, want)


def test_widths_past_max_width_are_refused_even_without_parameters() -> None:
    # Element-wise layers have no parameters, so only this bound stops a width of 10**5000,
    # whose model could not even be printed or saved (int to str stops at 4300 digits).
    for width in (MAX_WIDTH + 1, 10**5000):
        with pytest.raises(mf.SpecError) as info:
            mf.build({**BASE, "input_dim": width, "layers": ["relu"]})
        assert [p.path for p in info.value.problems] == ["input_dim"]
    model = mf.build({**BASE, "input_dim": 10**7, "layers": ["relu"]})
    assert model.to_spec().input_dim == 10**7
