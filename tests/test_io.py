"""Save and load: one zip file, no pickle, atomic writes, checks before building."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cube_plugin import Cube, cube_model
from zip_members import edit_json, npz, replace

import microfw as mf
from microfw import io as mfio

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0.0, 1.0, 1.0, 0.0])


def trained(dtype: str = "float64", registry: mf.Registry | None = None) -> mf.Sequential:
    model = mf.Sequential(
        [
            {"type": "linear", "units": 3, "activation": "tanh"},
            {"type": "linear", "units": 1},
            "sigmoid",
        ],
        input_dim=2,
        loss="bce",
        optimizer={"type": "sgd", "lr": 0.5, "schedule": {"type": "step", "step_size": 10}},
        seed=1,
        dtype=dtype,  # type: ignore[arg-type]
        registry=registry,
    )
    model.fit(XOR_X, XOR_Y, epochs=20)
    return model


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trip_is_bit_identical(tmp_path: Path, dtype: str) -> None:
    model = trained(dtype)
    path = tmp_path / "model.microfw"
    model.save(path)
    loaded = mf.load(path)
    assert loaded.to_spec() == model.to_spec()
    X = np.random.default_rng(0).normal(size=(50, 2))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.predict(X).dtype == np.dtype(dtype)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "model.microfw"
    trained().save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.microfw"]
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["meta.json", "spec.json", "weights.npz"]
        meta = json.loads(archive.read("meta.json"))
        spec = mf.load_spec(archive.read("spec.json").decode())
        with np.load(io.BytesIO(archive.read("weights.npz")), allow_pickle=False) as weights:
            names = sorted(weights.files)
    assert meta["format"] == "microfw-model" and meta["format_version"] == 3
    assert meta["microfw_version"] == mf.__version__
    used = {(p["kind"], p["name"]) for p in meta["plugins"]}
    assert used == {
        ("layer", "linear"),
        ("initializer", "xavier"),
        ("initializer", "zeros"),
        ("activation", "tanh"),
        ("activation", "sigmoid"),
        ("loss", "bce"),
        ("optimizer", "sgd"),
        ("schedule", "step"),
    }
    assert all(p["package"] == "microfw" for p in meta["plugins"])
    assert names == ["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"]
    assert spec.layers[1] == {"type": "tanh"}


@pytest.mark.parametrize("fail_at", ["write", "replace"])
def test_failed_save_leaves_the_old_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    path = tmp_path / "model.microfw"
    old = trained()
    old.save(path)
    before = path.read_bytes()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    if fail_at == "write":
        monkeypatch.setattr(zipfile.ZipFile, "writestr", boom)
    else:
        monkeypatch.setattr(mfio.os, "replace", boom)
    newer = trained()
    newer.fit(XOR_X, XOR_Y, epochs=5)
    with pytest.raises(OSError, match="disk full"):
        newer.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.microfw"]


def test_save_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "model.microfw"
    trained().save(path)
    model = trained()
    model.fit(XOR_X, XOR_Y, epochs=5)
    model.save(path)
    np.testing.assert_array_equal(mf.load(path).predict(XOR_X), model.predict(XOR_X))


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.microfw"
    model = trained()
    model.save(path)
    arrays = dict(zip(model.weight_names(), model.get_weights(), strict=True))
    arrays["layers.0.W"] = np.array([{"evil": 1}, None], dtype=object)
    replace(path, **{"weights.npz": npz(**arrays)})
    with pytest.raises(mf.ModelFileError, match=r"'layers\.0\.W'.*allow_pickle"):
        mf.load(path)


def test_weights_are_checked_against_the_spec(tmp_path: Path) -> None:
    path = tmp_path / "model.microfw"
    model = trained()
    model.save(path)
    arrays = dict(zip(model.weight_names(), model.get_weights(), strict=True))
    arrays["layers.2.W"] = np.zeros((4, 1))
    del arrays["layers.2.b"]
    arrays["extra"] = np.zeros(2)
    replace(path, **{"weights.npz": npz(**arrays)})
    with pytest.raises(mf.ModelFileError) as info:
        mf.load(path)
    message = str(info.value)
    assert "missing array 'layers.2.b'" in message
    assert "unexpected array 'extra'" in message
    assert "layers.2.W is float64[4, 1], the spec needs float64[3, 1]" in message


class NotTheRegisteredSigmoid(mf.Activation):
    """A sigmoid-named class that is not the registered ``sigmoid``."""

    name = "sigmoid"

    def forward(self, x: Any) -> Any:
        return x

    def derivative(self, x: Any, y: Any) -> Any:
        return np.ones_like(x)


@pytest.mark.parametrize(
    ("plugin", "found"),
    [(Cube(), "not registered"), (NotTheRegisteredSigmoid(), "registered as microfw_plugins")],
)
def test_a_plugin_its_name_would_not_load_is_not_saved(
    tmp_path: Path, plugin: mf.Activation, found: str
) -> None:
    model = mf.Sequential([{"type": "linear", "units": 1}, plugin], input_dim=2, loss="bce")
    path = tmp_path / "model.microfw"
    with pytest.raises(mf.PluginError, match=rf"cannot save: the model's activation .*{found}"):
        model.save(path)
    assert list(tmp_path.iterdir()) == []


def test_missing_plugin_names_the_package(tmp_path: Path) -> None:
    model = cube_model()
    path = tmp_path / "cube.microfw"
    model.save(path)
    loaded = mf.load(path, model.registry)
    np.testing.assert_array_equal(loaded.predict(XOR_X), model.predict(XOR_X))
    with pytest.raises(mf.ModelFileError, match=r"activation 'cube' \(from cube-plugins\)"):
        mf.load(path, mf.Registry())


def test_not_a_model_file(tmp_path: Path) -> None:
    path = tmp_path / "model.microfw"
    path.write_bytes(b"not a zip")
    with pytest.raises(mf.ModelFileError, match="not a microfw model file"):
        mf.load(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("spec.json", "{}")
    with pytest.raises(mf.ModelFileError, match=r"lacks \['meta.json', 'weights.npz'\]"):
        mf.load(path)


def test_invalid_spec_inside_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "model.microfw"
    trained().save(path)
    edit_json(path, "spec.json", lambda spec: spec["layers"][0].update(units=-1))
    with pytest.raises(mf.SpecError, match=r"layers\[0\].units"):
        mf.load(path)


def test_saved_file_permissions_follow_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "model.microfw"
    trained().save(path)
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_a_version_1_file_with_positional_array_names_still_loads(tmp_path: Path) -> None:
    model = trained()
    path = tmp_path / "v2.microfw"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(members["meta.json"])
    meta["format_version"] = 1
    with np.load(io.BytesIO(members["weights.npz"]), allow_pickle=False) as weights:
        arrays = {name: weights[name] for name in weights.files}
    positional = {
        name.replace(".W", ".0").replace(".b", ".1"): array for name, array in arrays.items()
    }
    assert sorted(positional) == ["layers.0.0", "layers.0.1", "layers.2.0", "layers.2.1"]
    buffer = io.BytesIO()
    np.savez(buffer, **positional)
    old = tmp_path / "v1.microfw"
    with zipfile.ZipFile(old, "w") as archive:
        archive.writestr("meta.json", json.dumps(meta))
        archive.writestr("spec.json", members["spec.json"])
        archive.writestr("weights.npz", buffer.getvalue())
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    np.testing.assert_array_equal(mf.load(old).predict(X), model.predict(X))
