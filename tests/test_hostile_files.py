"""Hostile model files, data files and paths, and interrupted saves (issue 11, items 1, 6, 7,
9, 10 and 13; ``format_version: true`` and duplicate JSON keys in model files).

Memory is measured with ``tracemalloc``, which sees NumPy's allocations: a file that makes
microfw allocate what an ``.npy`` header declares fails the peak bound.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zip_members import edit_json, members, replace

import microfw as mf
from microfw.cli.main import main
from microfw.data import DataError, load_data

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([0.0, 1.0, 1.0, 0.0])
GIB = 2**30


def small_model(seed: int = 1) -> mf.Sequential:
    return mf.Sequential(
        [{"type": "linear", "units": 3, "activation": "tanh"}, {"type": "linear", "units": 1}],
        input_dim=2,
        loss={"type": "bce", "from_logits": True},
        seed=seed,
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, mf.Sequential]:
    model = small_model()
    path = tmp_path / "model.microfw"
    model.save(path)
    return path, model


def npy_declaring(shape: tuple[int, ...], dtype: str = "<f8", data: bytes = b"") -> bytes:
    """An .npy file whose header declares ``shape`` but which holds only ``data``."""
    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def npz_of(**members: bytes) -> bytes:
    """An .npz (a deflated zip) of raw ``name.npy`` members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return buffer.getvalue()


def peak_bytes(call: Callable[[], Any]) -> tuple[int, BaseException | None]:
    """The peak of traced memory during ``call`` and the exception it raised (or None)."""
    tracemalloc.start()
    try:
        call()
        error = None
    except (Exception, MemoryError) as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, error


# -- 1. a zip bomb inside weights.npz ----------------------------------------------------------


def bomb_weights(model: mf.Sequential, name: str, shape: tuple[int, ...]) -> bytes:
    """The model's weights with ``name`` replaced by a header declaring ``shape`` (float64)."""
    arrays = {}
    for key, weight in zip(model.weight_names(), model.get_weights(), strict=True):
        buffer = io.BytesIO()
        np.save(buffer, weight)
        arrays[key] = buffer.getvalue()
    arrays[name] = npy_declaring(shape)
    return npz_of(**arrays)


@pytest.mark.parametrize(
    "shape",
    [(2**17, 2**10), (2, 2**26), (2**27,)],  # 1 GiB each, of float64
    ids=["rows", "columns", "flat"],
)
def test_an_inner_header_declaring_a_huge_array_is_refused_before_reading(
    saved: tuple[Path, mf.Sequential], shape: tuple[int, ...]
) -> None:
    path, model = saved
    replace(path, **{"weights.npz": bomb_weights(model, "layers.0.W", shape)})
    assert path.stat().st_size < 10_000
    peak, error = peak_bytes(lambda: mf.load(path))
    assert isinstance(error, mf.ModelFileError), error
    assert peak < 20_000_000, f"loading allocated {peak:,} bytes"
    assert "layers.0.W" in str(error) and "the spec needs float64[2, 3]" in str(error)


def test_an_inner_header_disagreeing_with_its_member_size_is_refused(
    saved: tuple[Path, mf.Sequential],
) -> None:
    # The declared shape is the expected one, but the member holds less data than declared.
    path, model = saved
    replace(path, **{"weights.npz": bomb_weights(model, "layers.0.W", (2, 3))})
    with pytest.raises(mf.ModelFileError, match=r"declares float64\[2, 3\] \(48 bytes"):
        mf.load(path)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_the_command_line_refuses_a_weights_bomb_in_one_line(
    saved: tuple[Path, mf.Sequential],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    path, model = saved
    replace(path, **{"weights.npz": bomb_weights(model, "layers.2.W", (2**27, 1))})
    data = tmp_path / "data.csv"
    data.write_text("a,b,y\n0,1,1\n")
    peak, error = peak_bytes(lambda: main([command, str(path), "--data", str(data)]))
    assert error is None
    err = capsys.readouterr().err
    assert err.startswith("microfw: error: ") and err.count("\n") == 1, err
    assert "layers.2.W is float64[134217728, 1], the spec needs float64[3, 1]" in err
    assert peak < 20_000_000


# -- 1 and 6. data .npz files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": npy_declaring((2**27, 1))}, r"declares float64\[134217728, 1\] \(1,073,741,824"),
        ({"X": npy_declaring((10**12,))}, r"X declares shape \[1000000000000\]: .* the limit"),
        ({"X": npy_declaring((10**6, 10**6), "|u1")}, r"more than the limit"),
        ({"X": npy_declaring((4, 2)), "y": npy_declaring((4,))}, r"declares float64\[4, 2\]"),
        ({"X": b"#!/bin/sh\nrm -rf /\n"}, r"array 'X' is not a readable \.npy array"),
        ({"X": npy_declaring((2, 2), "|O")}, r"'X' holds Python objects .* allow_pickle=False"),
        ({"X": npy_declaring((2, 2), "<U3")}, r"X must hold bool, integer or float numbers"),
    ],
    ids=["1 GiB", "8 TB", "1 TB of bytes", "truncated", "not npy", "objects", "strings"],
)
def test_data_npz_headers_are_checked_before_any_data_is_read(
    tmp_path: Path, arrays: dict[str, bytes], message: str
) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(npz_of(**arrays))
    peak, error = peak_bytes(lambda: load_data(path, need_target=False))
    assert isinstance(error, DataError), repr(error)
    assert str(error).startswith(f"{path}: ")
    assert peak < 20_000_000, f"reading allocated {peak:,} bytes"
    assert re.search(message, str(error)), str(error)


def test_a_data_npz_of_the_wrong_width_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(npz_of(X=npy_declaring((2**26, 4))))  # 2 GiB declared, 4 columns
    with pytest.raises(DataError, match=r"X declares shape \[67108864, 4\]; the model expects"):
        load_data(path, need_target=False, n_features=2)
    np.savez(path, X=np.zeros((3, 2)), y=np.zeros(3))
    assert load_data(path, n_features=2).X.shape == (3, 2)


@pytest.mark.parametrize(
    ("name", "contents", "message"),
    [
        ("empty.npz", b"", "not a readable .npz archive"),
        ("raw.npz", b"PK\x05\x06" + b"\0" * 18, "no array 'X'"),
    ],
)
def test_empty_and_odd_npz_files_are_one_line_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    saved: tuple[Path, mf.Sequential],
    name: str,
    contents: bytes,
    message: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(contents)
    model, _ = saved
    assert main(["predict", str(model), "--data", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("microfw: error: ") and err.count("\n") == 1, err
    assert message in err


def test_a_member_that_is_not_an_array_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], saved: tuple[Path, mf.Sequential]
) -> None:
    # np.load hands back the raw bytes of a member without the .npy suffix: X.dtype failed.
    path = tmp_path / "odd.npz"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("X", b"1,2\n3,4\n")
    path.write_bytes(buffer.getvalue())
    model, _ = saved
    assert main(["predict", str(model), "--data", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f"microfw: error: {path}: member X is not an .npy array\n"


# -- 9. CSV ------------------------------------------------------------------------------------


def test_a_repeated_column_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("y,x,y\n0,1,0\n1,2,1\n")
    with pytest.raises(DataError, match=r"column name\(s\) 'y' appear more than once"):
        load_data(path, "y")


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("y,x1,x2\n1,2,3\n".encode("utf-8-sig"))
    data = load_data(path, "y")
    assert data.feature_names == ("x1", "x2")
    np.testing.assert_array_equal(data.y, [1.0])


# 1_000, Arabic-Indic and fullwidth digits: Python's float() reads them all.
@pytest.mark.parametrize(
    "cell", ["1_000", "\u0661\u0662", "\uff11", "0x10", "1e", "--1", "", "1 2"]
)
def test_only_plain_decimal_numbers_are_read(tmp_path: Path, cell: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"x,y\n{cell},1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2, column 'x': not a number"):
        load_data(path, "y")


def test_usual_number_forms_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,d,e,y\n 1 ,-2.5,+.5,1e3,3.,0\n1E-2,0,-0,7,8,1\n")
    data = load_data(path, "y")
    np.testing.assert_array_equal(data.X, [[1, -2.5, 0.5, 1000, 3], [0.01, 0, 0, 7, 8]])


# -- 13. paths: byte-order marks, FIFOs, devices ---------------------------------------------

SPEC = {
    "spec_version": 1,
    "input_dim": 2,
    "layers": [{"type": "linear", "units": 1}],
    "loss": "squared_error",
}


def test_json_text_with_a_byte_order_mark_is_json(tmp_path: Path) -> None:
    assert mf.build("\ufeff" + json.dumps(SPEC)).input_dim == 2
    path = tmp_path / "spec.json"
    path.write_bytes(json.dumps(SPEC).encode("utf-8-sig"))
    assert mf.build(path).input_dim == 2


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO nobody writes to. A call that blocks on it (the old behaviour) is released after
    30 s by a helper that opens and closes it, and the test then fails: that the helper had
    to step in is the test, not how long the call took (a busy machine may be slow)."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    done, rescued = threading.Event(), threading.Event()

    def unblock() -> None:
        if not done.wait(30):
            rescued.set()
            with open(path, "wb"):
                pass

    helper = threading.Thread(target=unblock, daemon=True)
    helper.start()
    yield path
    done.set()
    if helper.is_alive():  # it may wait in open() for a reader: give it one
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        helper.join(5)
        os.close(fd)
    assert not rescued.is_set(), "the call blocked on the FIFO until the helper opened it"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: mf.load(p), mf.ModelFileError, "not a regular file"),
        (lambda p: mf.load_spec(p), mf.SpecError, "not a regular file"),
        (lambda p: mf.build(p), mf.SpecError, "FIFO"),
        (lambda p: load_data(p, "y"), DataError, "not a regular file"),
    ],
    ids=["load", "load_spec", "build", "load_data"],
)
def test_a_fifo_is_refused_at_once(
    fifo: Path, call: Callable[[Path], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call(fifo)


def test_fit_on_a_fifo_spec_is_a_one_line_error(
    fifo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n0,1,1\n")
    assert main(["fit", str(fifo), "--data", str(data), "--target", "y"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("microfw: error: invalid spec") and "FIFO" in err


def test_fit_on_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b,y\n0,1,1\n")

    def limit_memory() -> None:  # the old code read until MemoryError: let it fail fast
        resource.setrlimit(resource.RLIMIT_AS, (2 * GIB, 2 * GIB))

    result = subprocess.run(
        [sys.executable, "-m", "microfw", "fit", "/dev/zero", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "/dev/zero" in result.stderr and "device, not a regular file" in result.stderr


def test_a_spec_file_over_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mf.spec.models, "MAX_SPEC_BYTES", 100)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**SPEC, "padding": "x" * 100}))
    with pytest.raises(mf.SpecError, match="larger than the limit of 100 bytes"):
        mf.load_spec(path)


# -- model files: format_version true, duplicate keys, huge integers --------------------------


@pytest.mark.parametrize("version", [True, 1.0])
def test_a_format_version_that_only_equals_1_is_refused(
    saved: tuple[Path, mf.Sequential], version: Any
) -> None:
    path, _ = saved
    edit_json(path, "meta.json", lambda meta: meta.update(format_version=version))
    with pytest.raises(mf.ModelFileError, match=rf"format version {version!r}; this microfw"):
        mf.load(path)


def test_a_key_given_twice_in_a_model_file_is_refused_with_its_path(
    saved: tuple[Path, mf.Sequential],
) -> None:
    path, _ = saved
    spec = members(path)["spec.json"].decode()
    assert '"units": 3' in spec
    replace(path, **{"spec.json": spec.replace('"units": 3', '"units": 3, "units": 300').encode()})
    with pytest.raises(mf.ModelFileError, match=r"layers\[0\]\.units: key 'units' appears more"):
        mf.load(path)


def test_huge_integers_in_a_model_file_are_clear_errors(
    saved: tuple[Path, mf.Sequential],
) -> None:
    path, _ = saved
    spec = members(path)["spec.json"].decode()
    replace(path, **{"spec.json": spec.replace('"units": 3', '"units": 1' + "0" * 309).encode()})
    with pytest.raises(mf.SpecError, match=r"layers\[0\]: the model would have about 1e\+309"):
        mf.load(path)
    replace(path, **{"spec.json": spec.replace('"units": 3', '"units": 1' + "0" * 5000).encode()})
    with pytest.raises(mf.ModelFileError, match="an integer of 5001 digits, too long to read"):
        mf.load(path)
    meta = members(path)["meta.json"].decode()
    replace(
        path,
        **{
            "spec.json": spec.encode(),
            "meta.json": meta.replace(
                '"format_version": 3', '"format_version": 3' + "0" * 5000
            ).encode(),
        },
    )
    with pytest.raises(mf.ModelFileError, match=r"meta\.json is not valid JSON"):
        mf.load(path)


# -- 7 and 10. saves: temporary files and the umask ------------------------------------------


def test_a_new_model_file_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        small_model().save(tmp_path / "private.microfw")
    finally:
        os.umask(old)
    assert (tmp_path / "private.microfw").stat().st_mode & 0o777 == 0o600
    # A replaced file keeps its mode.
    (tmp_path / "private.microfw").chmod(0o640)
    small_model(seed=2).save(tmp_path / "private.microfw")
    assert (tmp_path / "private.microfw").stat().st_mode & 0o777 == 0o640


def test_ctrl_c_right_after_the_temporary_file_is_created_removes_it(
    saved: tuple[Path, mf.Sequential], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = saved
    before = path.read_bytes()
    real_open = os.open

    def interrupted(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(file, flags, *args, **kwargs)
        if flags & os.O_CREAT:  # the temporary file now exists: Ctrl-C lands here
            os.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(os, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        small_model(seed=2).save(path)
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.microfw"]
    assert path.read_bytes() == before


def test_ctrl_c_while_a_member_is_closed_stays_a_keyboard_interrupt(
    saved: tuple[Path, mf.Sequential], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Interrupted inside a member's close, zipfile's own close used to raise
    # "ValueError: Can't close the ZIP file while there is an open writing handle".
    path, _ = saved
    before = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(), "w") as archive, archive.open("m", "w") as writer:
        member_close = type(writer).close

    def interrupted(self: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(type(writer), "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
        small_model(seed=2).save(path)
    monkeypatch.setattr(type(writer), "close", member_close)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.microfw"]
    assert path.read_bytes() == before


SAVE_THAT_HANGS = """
import os, sys, time
import microfw as mf
os.fsync = lambda fd: time.sleep(120)  # the temporary file is written: hang before renaming
model = mf.Sequential([{"type": "linear", "units": 1}], input_dim=2, loss="squared_error")
model.save(sys.argv[1])
"""


def test_the_next_save_removes_the_temporary_file_of_a_killed_save(tmp_path: Path) -> None:
    path = tmp_path / "model.microfw"
    small_model().save(path)
    process = subprocess.Popen([sys.executable, "-c", SAVE_THAT_HANGS, str(path)])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(list(tmp_path.iterdir())) == 2, "the killed save left no temporary file"
    # A temporary file of a live process (this one, by its name) is never touched.
    from microfw._files import temp_name

    live = temp_name(path)
    live.write_bytes(b"being written")
    small_model(seed=2).save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, live.name])
    mf.load(path)
