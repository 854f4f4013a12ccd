"""Resumable training: 10 epochs straight equal 5, save, load in a new process, 5 more."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from zip_members import edit_json, members, replace

import microfw as mf

SPEC = {
    "spec_version": 1,
    "input_dim": 4,
    "layers": [
        {
            "type": "linear",
            "units": 12,
            "activation": "tanh",
            "kernel_regularizer": {"type": "l2", "factor": 1e-3},
        },
        {"type": "linear", "units": 1},
        "sigmoid",
    ],
    "loss": "bce",
    "optimizer": {
        "type": "adam",
        "lr": 0.01,
        "clip_norm": 1.0,
        "schedule": {
            "type": "warmup",
            "warmup": 20,
            "per": "step",
            "after": {"type": "cosine", "t_max": 60, "restart": True, "per": "step"},
        },
    },
    "training": {"epochs": 10, "batch_size": 16, "shuffle": True},
    "seed": 7,
    "dtype": "float64",
}

RESUME = """
import sys
import numpy as np
import microfw as mf

model = mf.load(sys.argv[1])
assert model.optimizer_state_loaded and model.epochs_trained == 5, model.epochs_trained
data = np.load(sys.argv[2])
history = model.fit(data["X"], data["y"], epochs=5)
np.savez(sys.argv[3], *model.get_weights(), loss=np.array(history.history["loss"]))
model.save(sys.argv[4])
"""


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((100, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(float)
    return X, y


@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum", "adam_dropout_batch_norm"])
def test_ten_epochs_equal_five_saved_loaded_in_a_new_process_and_five_more(
    tmp_path: Path, optimizer: str
) -> None:
    spec = json.loads(json.dumps(SPEC))
    if optimizer == "sgd_momentum":
        spec["optimizer"].update(type="sgd", momentum=0.9, momentum_style="pytorch")
    if optimizer == "adam_dropout_batch_norm":  # the masks' stream and running stats resume too
        spec["layers"][1:1] = [{"type": "batch_norm"}, {"type": "dropout", "rate": 0.3}]
    X, y = _data()
    straight = mf.build(spec)
    history = straight.fit(X, y)
    half = mf.build(spec)
    half.fit(X, y, epochs=5)
    path = tmp_path / "half.microfw"
    half.save(path)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    script = tmp_path / "resume.py"
    script.write_text(RESUME)
    out, again = tmp_path / "out.npz", tmp_path / "again.microfw"
    done = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path / "data.npz"), str(out), str(again)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with np.load(out) as resumed:
        weights = [resumed[f"arr_{i}"] for i in range(len(straight.get_weights()))]
        np.testing.assert_array_equal(resumed["loss"], history.history["loss"][5:])
    for a, b in zip(weights, straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical
    final = mf.load(again)
    assert final.epochs_trained == 10 and final.optimizer.steps == straight.optimizer.steps


def _trained(tmp_path: Path) -> tuple[Path, mf.Sequential]:
    model = mf.build(SPEC)
    model.fit(*_data(), epochs=2)
    path = tmp_path / "model.microfw"
    model.save(path)
    return path, model


def test_the_file_holds_the_optimizer_state_counters_and_streams(tmp_path: Path) -> None:
    path, model = _trained(tmp_path)
    parts = members(path)
    meta = json.loads(parts["meta.json"])
    state = meta["training_state"]
    assert state["epochs_trained"] == 2
    assert state["optimizer"] == {"steps": 14, "epochs": 2}
    assert set(state["streams"]) == {"init", "shuffle", "split"}
    with np.load(io.BytesIO(parts["weights.npz"]), allow_pickle=False) as weights:
        names = set(weights.files)
        np.testing.assert_array_equal(weights["optimizer.m"], model.optimizer.state_arrays()["m"])
    assert {"optimizer.m", "optimizer.v", "optimizer.step"} <= names


def test_a_format_2_file_loads_without_optimizer_state(tmp_path: Path) -> None:
    path, model = _trained(tmp_path)
    parts = members(path)
    meta = json.loads(parts["meta.json"])
    meta["format_version"] = 2
    del meta["training_state"]
    with np.load(io.BytesIO(parts["weights.npz"]), allow_pickle=False) as weights:
        arrays = {n: weights[n] for n in weights.files if not n.startswith("optimizer.")}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    replace(path, **{"meta.json": json.dumps(meta).encode(), "weights.npz": buffer.getvalue()})
    loaded = mf.load(path)
    assert not loaded.optimizer_state_loaded
    assert loaded.epochs_trained == 0 and loaded.optimizer.steps == 0
    assert loaded.optimizer.state_arrays() == {}
    X, _ = _data()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("training_state"), "training_state is missing"),
        (lambda m: m["training_state"].update(epochs_trained=-1), "integers >= 0"),
        (lambda m: m["training_state"]["optimizer"].update(steps="3"), "integers >= 0"),
        (lambda m: m["training_state"]["streams"].update(shuffle={"x": 1}), "stream 'shuffle'"),
        (lambda m: m["training_state"]["streams"].pop("split"), "stream 'split' is missing"),
        (lambda m: m["training_state"].pop("layer_streams"), "'layer_streams' must be"),
        (
            lambda m: m["training_state"]["streams"].update(
                init={"generator": {"bit_generator": "PCG64", "state": "nonsense"}}
            ),
            "stream 'init'",
        ),
    ],
)
def test_a_damaged_training_state_is_refused(tmp_path: Path, change, message: str) -> None:
    path, _ = _trained(tmp_path)
    edit_json(path, "meta.json", change)
    with pytest.raises(mf.ModelFileError, match=message):
        mf.load(path)


def test_a_layer_stream_missing_from_the_file_is_refused(tmp_path: Path) -> None:
    spec = {
        **SPEC,
        "layers": [*SPEC["layers"][:1], {"type": "dropout", "rate": 0.3}, *SPEC["layers"][1:]],
    }
    model = mf.build(spec)
    model.fit(*_data(), epochs=1)
    path = tmp_path / "model.microfw"
    model.save(path)
    (name,) = model.store.streams  # the dropout layer's mask stream
    assert json.loads(members(path)["meta.json"])["training_state"]["layer_streams"].keys() == {
        name
    }
    # Loaded with a fresh stream, a resumed run would draw other masks than the saved run.
    edit_json(path, "meta.json", lambda m: m["training_state"]["layer_streams"].pop(name))
    with pytest.raises(mf.ModelFileError, match=f"stream '{name}' is missing"):
        mf.load(path)


def test_optimizer_state_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    path, _ = _trained(tmp_path)
    with np.load(io.BytesIO(members(path)["weights.npz"]), allow_pickle=False) as weights:
        arrays = {n: weights[n] for n in weights.files if n != "optimizer.v"}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    replace(path, **{"weights.npz": buffer.getvalue()})
    with pytest.raises(mf.ModelFileError, match=r"optimizer state .*keeps state"):
        mf.load(path)


def test_legacy_rng_streams_resume_too(tmp_path: Path) -> None:
    spec = {**SPEC, "rng": "legacy"}
    X, y = _data()
    straight = mf.build(spec)
    straight.fit(X, y, epochs=4)
    half = mf.build(spec)
    half.fit(X, y, epochs=2)
    half.save(tmp_path / "m.microfw")
    resumed = mf.load(tmp_path / "m.microfw")
    resumed.fit(X, y, epochs=2)
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros(73, np.float32)])
def test_optimizer_state_of_another_size_or_dtype_is_refused_at_load(tmp_path: Path, bad) -> None:
    path, model = _trained(tmp_path)
    assert model.store.params.size == 73
    with np.load(io.BytesIO(members(path)["weights.npz"]), allow_pickle=False) as weights:
        arrays = {n: weights[n] for n in weights.files}
    arrays["optimizer.m"] = bad
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    replace(path, **{"weights.npz": buffer.getvalue()})
    with pytest.raises(mf.ModelFileError, match=r"optimizer state optimizer\.m is .*float64\[73\]"):
        mf.load(path)
