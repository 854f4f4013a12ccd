"""Damaged and hostile model files: a clear error naming the problem, no code run, no model.

Complements ``test_io.py`` (round trip, layout, the basic refusals): here every byte of a file
is cut or flipped, members are replaced by hostile contents, and saves fail half way.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cube_plugin import cube_model
from zip_members import edit_json, members, npz, replace

import microfw as mf
import microfw.io
from microfw import io as mfio

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([0.0, 1.0, 1.0, 0.0])


def small_model(seed: int = 1, registry: mf.Registry | None = None) -> mf.Sequential:
    model = mf.Sequential(
        [{"type": "linear", "units": 3, "activation": "tanh"}, {"type": "linear", "units": 1}],
        input_dim=2,
        loss={"type": "bce", "from_logits": True},
        seed=seed,
        registry=registry,
    )
    model.fit(X, Y, epochs=3)
    return model


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, mf.Sequential]:
    model = small_model()
    path = tmp_path / "model.microfw"
    model.save(path)
    return path, model


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every model load() starts to build, to prove a refused file built nothing."""
    calls: list[Any] = []
    real = microfw.io.build

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(microfw.io, "build", counting)
    return calls


def loads_identically_or_refuses(path: Path, model: mf.Sequential) -> str:
    """Load ``path``: either the original model (bit for bit) or a MicrofwError; which one."""
    try:
        loaded = mf.load(path)
    except mf.MicrofwError as exc:
        assert str(path) in str(exc)
        return "refused"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    return "loaded"


# -- damaged bytes ---------------------------------------------------------------------------


def test_every_truncation_is_refused(saved: tuple[Path, mf.Sequential], builds: list[Any]) -> None:
    path, _ = saved
    raw = path.read_bytes()
    for n in range(len(raw)):
        path.write_bytes(raw[:n])
        with pytest.raises(mf.ModelFileError, match="not a microfw model file"):
            mf.load(path)
    assert builds == []


def test_every_flipped_byte_is_refused_or_harmless(saved: tuple[Path, mf.Sequential]) -> None:
    # CRCs guard each member; a flip elsewhere (a timestamp, an attribute) changes nothing.
    path, model = saved
    raw = path.read_bytes()
    outcomes = []
    for i in range(len(raw)):
        damaged = bytearray(raw)
        damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        outcomes.append(loads_identically_or_refuses(path, model))
    assert outcomes.count("refused") > 0.8 * len(raw)


@pytest.mark.parametrize(
    ("contents", "message"),
    [
        (b"", "not a microfw model file"),
        (b"PK\x05\x06" + b"\0" * 18, r"lacks \['meta.json', 'spec.json', 'weights.npz'\]"),
        (b"\x93NUMPY garbage", "not a microfw model file"),
    ],
    ids=["empty", "empty zip", "npy magic"],
)
def test_not_a_model_file(tmp_path: Path, builds: list[Any], contents: bytes, message: str) -> None:
    path = tmp_path / "model.microfw"
    path.write_bytes(contents)
    with pytest.raises(mf.ModelFileError, match=message):
        mf.load(path)
    assert builds == []


@pytest.mark.parametrize("member", ["meta.json", "spec.json", "weights.npz"])
def test_a_missing_member_is_named(
    saved: tuple[Path, mf.Sequential], builds: list[Any], member: str
) -> None:
    path, _ = saved
    replace(path, **{member: None})
    with pytest.raises(mf.ModelFileError, match=rf"lacks \['{member}'\]"):
        mf.load(path)
    assert builds == []


# -- hostile members -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "contents", "message"),
    [
        ("meta.json", b"{not json", r"meta.json is not valid JSON \(Expecting"),
        ("meta.json", b"\xff\xfe{}", "meta.json is not valid JSON .*utf-8"),
        ("meta.json", b"[" * 100_000, r"meta.json is not valid JSON \(nested too deeply\)"),
        ("meta.json", b"[]", "meta.json does not describe a 'microfw-model' file"),
        ("meta.json", b'{"format": "keras"}', "does not describe a 'microfw-model' file"),
        ("spec.json", b"{not json", "spec.json is not valid JSON"),
        ("spec.json", b'["linear"]', "spec.json is not a JSON object"),
        ("spec.json", b"[" * 100_000, r"spec.json is not valid JSON \(nested too deeply\)"),
        ("weights.npz", b"garbage", "weights.npz is not an .npz archive"),
        ("weights.npz", b"PK\x03\x04garbage", "weights.npz is damaged"),
    ],
)
def test_hostile_json_and_containers_are_refused(
    saved: tuple[Path, mf.Sequential],
    builds: list[Any],
    member: str,
    contents: bytes,
    message: str,
) -> None:
    path, _ = saved
    replace(path, **{member: contents})
    with pytest.raises(mf.ModelFileError, match=message):
        mf.load(path)
    assert builds == []


@pytest.mark.parametrize(
    "version",
    [4, 99, 0, "1", None, 1.5, [1], True],
    ids=["4", "99", "0", "str", "null", "float", "list", "bool"],
)
def test_every_other_format_version_is_refused(
    saved: tuple[Path, mf.Sequential], builds: list[Any], version: Any
) -> None:
    path, _ = saved
    edit_json(path, "meta.json", lambda meta: meta.update(format_version=version))
    with pytest.raises(
        mf.ModelFileError, match=rf"format version {re.escape(repr(version))}; this microfw"
    ):
        mf.load(path)
    assert builds == []


@pytest.mark.parametrize(
    "plugins",
    [
        "linear",
        ["linear"],
        [{"kind": "layer", "name": "linear"}],
        [{"kind": "gadget", "name": "linear", "package": "microfw"}],
        [{"kind": "layer", "name": ["linear"], "package": "microfw"}],
        [{"kind": "layer", "name": "linear", "package": "microfw", "version": 1}],
    ],
)
def test_malformed_plugin_records_are_refused(
    saved: tuple[Path, mf.Sequential], builds: list[Any], plugins: Any
) -> None:
    path, _ = saved
    edit_json(path, "meta.json", lambda meta: meta.update(plugins=plugins))
    with pytest.raises(mf.ModelFileError, match=r"meta\.json 'plugins' must list objects"):
        mf.load(path)
    assert builds == []


class Payload:
    """Unpickling this creates the directory ``marker``: code execution, made visible."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def test_a_pickle_in_the_weights_is_never_run(
    saved: tuple[Path, mf.Sequential], builds: list[Any], tmp_path: Path
) -> None:
    path, model = saved
    # The payload is live: numpy with allow_pickle=True would run it.
    control = tmp_path / "control"
    with np.load(io.BytesIO(npz(w=np.array([Payload(control)]))), allow_pickle=True) as live:
        live["w"]
    assert control.is_dir()

    marker = tmp_path / "pwned"
    arrays = dict(zip(model.weight_names(), model.get_weights(), strict=True))
    arrays["layers.0.W"] = np.array([Payload(marker)], dtype=object)
    replace(path, **{"weights.npz": npz(**arrays)})
    with pytest.raises(mf.ModelFileError, match=r"'layers\.0\.W'.*allow_pickle"):
        mf.load(path)
    # The whole weights member as a bare pickle (np.load would unpickle it) is refused too.
    replace(path, **{"weights.npz": pickle.dumps(Payload(marker))})
    with pytest.raises(mf.ModelFileError, match=r"weights\.npz is not an \.npz archive"):
        mf.load(path)
    assert not marker.exists()
    assert builds == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.astype(np.float32), r"layers.0.W is float32\[2, 3\], the spec needs float64"),
        (lambda w: w.astype(np.int64), r"layers.0.W is int64\[2, 3\]"),
        (lambda w: w.astype(">f8"), r"layers.0.W is >f8\[2, 3\]"),
        (lambda w: w.T, r"layers.0.W is float64\[3, 2\], the spec needs float64\[2, 3\]"),
        (lambda w: w[0], r"layers.0.W is float64\[3\]"),
        (lambda w: np.float64(1.0), r"layers.0.W is float64\[\]"),
        (lambda w: np.full_like(w, np.nan), "layers.0.W holds NaN or infinite values"),
        (lambda w: np.full_like(w, -np.inf), "layers.0.W holds NaN or infinite values"),
    ],
    ids=["float32", "int", "big-endian", "transposed", "1-d", "0-d", "nan", "inf"],
)
def test_weights_that_disagree_with_the_spec_are_refused(
    saved: tuple[Path, mf.Sequential], change: Callable[[Any], Any], message: str
) -> None:
    path, model = saved
    arrays = dict(zip(model.weight_names(), model.get_weights(), strict=True))
    arrays["layers.0.W"] = change(arrays["layers.0.W"])
    replace(path, **{"weights.npz": npz(**arrays)})
    with pytest.raises(mf.ModelFileError, match=message):
        mf.load(path)


def test_a_member_of_the_npz_that_is_not_an_array_is_refused(
    saved: tuple[Path, mf.Sequential],
) -> None:
    path, model = saved
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as inner:
        for name, weight in zip(model.weight_names(), model.get_weights(), strict=True):
            array = io.BytesIO()
            np.save(array, weight)
            inner.writestr(f"{name}.npy", array.getvalue())
        # np.load hands back the raw bytes of a member that is not in .npy format.
        inner.writestr("layers.0.W", b"#!/bin/sh\nrm -rf /\n")
    replace(path, **{"weights.npz": buffer.getvalue()})
    with pytest.raises(mf.ModelFileError, match=r"layers\.0\.W is not an \.npy array"):
        mf.load(path)


def test_oversized_members_are_refused_before_decompressing(
    saved: tuple[Path, mf.Sequential], monkeypatch: pytest.MonkeyPatch, builds: list[Any]
) -> None:
    path, _ = saved
    # Two megabytes of zeros compress to a few kilobytes: a zip bomb, in small.
    contents = {**members(path), "weights.npz": npz(**{"layers.0.W": np.zeros(2**18)})}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    assert path.stat().st_size < 20_000
    monkeypatch.setattr(microfw.spec.models, "MAX_PARAMETERS", 1000)
    with pytest.raises(mf.ModelFileError, match=r"weights.npz would unpack to 2,097,\d+ bytes"):
        mf.load(path)
    assert builds == []


# -- plugins ---------------------------------------------------------------------------------


def cube_model_file(tmp_path: Path) -> Path:
    path = tmp_path / "cube.microfw"
    cube_model().save(path)
    return path


def test_a_plugin_missing_from_meta_is_named_by_the_spec(tmp_path: Path, builds: list[Any]) -> None:
    # A file whose meta.json does not list the plugin (edited, or from elsewhere): the spec
    # check still names it, and the file.
    path = cube_model_file(tmp_path)

    def drop_cube(meta: dict[str, Any]) -> None:
        meta["plugins"] = [p for p in meta["plugins"] if p["name"] != "cube"]

    edit_json(path, "meta.json", drop_cube)
    with pytest.raises(mf.SpecError) as info:
        mf.load(path, mf.Registry())
    (problem,) = info.value.problems
    assert (
        problem.path == "layers[1].type" and "unknown layer or activation 'cube'" in problem.message
    )
    assert str(path) in str(info.value)
    assert len(builds) == 1  # the spec check is build's own, before any weights exist


def test_a_plugin_named_in_meta_is_checked_before_building(
    tmp_path: Path, builds: list[Any]
) -> None:
    path = cube_model_file(tmp_path)
    with pytest.raises(mf.ModelFileError) as info:
        mf.load(path, mf.Registry())
    assert "activation 'cube' (from cube-plugins)" in str(info.value)
    assert "MICROFW_PLUGINS" in str(info.value)
    assert builds == []


# -- the file system -------------------------------------------------------------------------


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(mf.ModelFileError, match="cannot read the model file"):
        mf.load(tmp_path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        mf.ModelFileError, match=r"cannot read the model file \(No such file"
    ) as info:
        mf.load(tmp_path / "nope.microfw")
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_an_unreadable_file_is_refused(saved: tuple[Path, mf.Sequential]) -> None:
    path, _ = saved
    path.chmod(0)
    try:
        try:
            path.open("rb").close()
        except PermissionError:
            pass
        else:
            pytest.skip("this user (root?) reads files with mode 000")
        with pytest.raises(mf.ModelFileError, match=r"cannot read the model file \(Permission"):
            mf.load(path)
    finally:
        path.chmod(0o644)


def test_a_permission_error_is_refused_even_as_root(
    saved: tuple[Path, mf.Sequential], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same path as above, for when the tests run as root (which reads mode 000 files).
    path, _ = saved

    def denied(file: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(mfio.zipfile, "ZipFile", denied)
    with pytest.raises(mf.ModelFileError, match=r"cannot read the model file \(Permission denied"):
        mf.load(path)


# -- saving over a model that fails half way -------------------------------------------------


def fail_on_call(n: int, real: Callable[..., Any], error: BaseException) -> Callable[..., Any]:
    """``real``, except that its n-th call (from 1) raises ``error``."""
    calls = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n:
            raise error
        return real(*args, **kwargs)

    return wrapper


FAILURES: dict[str, Callable[[pytest.MonkeyPatch], type[BaseException]]] = {
    # test_io covers the first member write and os.replace.
    "encoding the weights": lambda mp: (
        mp.setattr(
            np.lib.format,
            "write_array",
            fail_on_call(1, np.lib.format.write_array, OSError("no memory")),
        )
        or OSError
    ),
    "the third member": lambda mp: (
        mp.setattr(
            zipfile.ZipFile,
            "writestr",
            fail_on_call(3, zipfile.ZipFile.writestr, OSError("disk full")),
        )
        or OSError
    ),
    "opening the temporary file": lambda mp: (
        mp.setattr(mfio.os, "fdopen", fail_on_call(1, os.fdopen, OSError("too many files")))
        or OSError
    ),
    "fsync": lambda mp: (
        mp.setattr(mfio.os, "fsync", fail_on_call(1, os.fsync, OSError("fsync"))) or OSError
    ),
    "chmod": lambda mp: (
        mp.setattr(mfio.os, "chmod", fail_on_call(1, os.chmod, PermissionError("chmod")))
        or PermissionError
    ),
    "Ctrl-C while writing": lambda mp: (
        mp.setattr(
            zipfile.ZipFile,
            "writestr",
            fail_on_call(2, zipfile.ZipFile.writestr, KeyboardInterrupt()),
        )
        or KeyboardInterrupt
    ),
}


@pytest.mark.parametrize("where", FAILURES)
def test_a_failed_save_keeps_the_old_file_and_leaves_no_temporary_file(
    saved: tuple[Path, mf.Sequential], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    path, old = saved
    before = path.read_bytes()
    newer = small_model(seed=2)
    # A new file is never chmod-ed: it is created with the umask's mode.
    fresh = () if where == "chmod" else (path.with_name("fresh.microfw"),)
    for target in (path, *fresh):
        error = FAILURES[where](monkeypatch)
        with pytest.raises(error):
            newer.save(target)
        monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.microfw"]
    np.testing.assert_array_equal(mf.load(path).predict(X), old.predict(X))


def test_saving_onto_a_directory_fails_and_leaves_it_alone(tmp_path: Path) -> None:
    target = tmp_path / "models"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(OSError):
        small_model().save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["models"]
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
