"""Load (and save) models: one zip file holding ``meta.json``, ``spec.json`` and ``weights.npz``.

Writing lives with the model (:mod:`microfw.nn.modelfile`, so that ``Sequential.save`` needs no
import of this module); reading, which builds a model, lives here.

* ``meta.json``: the format name and version, the microfw version, and every plugin the spec
  uses with the package (and version) that registered it.
* ``spec.json``: the validated spec, every plugin written out in full.
* ``weights.npz``: the model's arrays as its store names them (``layers.0.W``,
  ``layers.0.b``, then non-trainable state such as running statistics), read back with
  ``allow_pickle=False``. Nothing is pickled. Version 1 files (microfw 0.1, arrays named
  ``layers.<layer index>.<param index>``) are read too.

Writing goes to a temporary file in the target's directory, then ``os.replace``: a failure
leaves any previous file untouched. Version 3 also holds the training state (the optimizer's
step counters and buffers, the epochs trained and the random streams), so a loaded model
predicts identically and resumes training where it stopped.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from typing import Any

import numpy as np

from microfw import _json as strict_json
from microfw._files import read_regular
from microfw._npz import Header, read_headers, read_npz
from microfw.core.interfaces import INTERFACES, Array
from microfw.core.registry import Registry, current_registry
from microfw.errors import ModelFileError, NpzError, SpecError, SpecWarning
from microfw.nn.modelfile import (
    FORMAT,
    FORMAT_VERSION,
    META,
    OPTIMIZER_PREFIX,
    SPEC,
    WEIGHTS,
    save,
)
from microfw.nn.sequential import Sequential, build
from microfw.spec import models as spec_module

__all__ = ["FORMAT", "FORMAT_VERSION", "META", "READS", "SPEC", "WEIGHTS", "load", "save"]

READS = (1, 2, 3)
"""The format versions :func:`load` reads."""
MAX_STATE_ARRAYS = 4
"""Optimizer state arrays the size of the parameters a file may hold (amsgrad Adam has 3)."""


def load(path: str | os.PathLike[str], registry: Registry | None = None) -> Sequential:
    """Read a model written by :func:`save`; it predicts bit-identically to the saved one.

    Checks, in order: the container (a readable zip holding the three members, none larger
    than a model within :data:`~microfw.spec.MAX_PARAMETERS` needs), the format version, that
    every plugin it needs is registered (naming the package that provided it), the spec, and
    the weights' names, shapes, dtypes and finiteness. Any problem raises
    :class:`ModelFileError` (or :class:`~microfw.SpecError` for the spec); nothing is
    unpickled and no model is returned.
    """

    registry = registry or current_registry()
    members = _read_members(path)
    meta = _json_member(path, META, members[META])
    _check_meta(path, meta, registry)
    spec = _json_member(path, SPEC, members[SPEC])
    if not isinstance(spec, dict):
        raise ModelFileError(f"{path}: {SPEC} is not a JSON object")
    headers = _weight_headers(path, members[WEIGHTS])  # a damaged container: before any build
    try:  # cheap: the spec bounds the parameters; its arrays say what weights.npz must hold
        with warnings.catch_warnings():  # the spec's advice was given when it was built
            warnings.simplefilter("ignore", SpecWarning)
            model = build(spec, registry)
    except SpecError as exc:
        raise SpecError(exc.problems, source=f"in {path}") from None
    expected = dict(model.store.items())
    if meta["format_version"] == 1:  # arrays named by position (layers.0.1)
        expected = _positional_names(expected)
    saved_state: dict[str, Any] = {}
    if meta["format_version"] >= 3:
        saved_state = _optimizer_headers(path, headers, model.store.params.size)
    arrays = _read_weights(path, members[WEIGHTS], headers, {**expected, **saved_state})
    state = {k[len(OPTIMIZER_PREFIX) :]: arrays.pop(k) for k in saved_state}
    _check_weights(path, arrays, expected)
    for name, array in expected.items():
        np.copyto(array, arrays[name], casting="same_kind")
    model.parameters_changed()
    if meta["format_version"] >= 3:
        _restore_training_state(path, model, meta.get("training_state"), state)
    return model


def _optimizer_headers(path: Any, headers: dict[str, Header], n_params: int) -> dict[str, Any]:
    """The headers of the optimizer's state arrays, bounded before any data is read: at most
    :data:`MAX_STATE_ARRAYS`, none larger than the parameters."""
    found = {k: h for k, h in headers.items() if k.startswith(OPTIMIZER_PREFIX)}
    if len(found) > MAX_STATE_ARRAYS:
        raise ModelFileError(
            f"{path}: {len(found)} optimizer state arrays; at most {MAX_STATE_ARRAYS} are read"
        )
    for name, header in found.items():
        if header.size > max(n_params, 1):
            raise ModelFileError(
                f"{path}: optimizer state {name} is {header}, larger than the model's "
                f"{n_params} parameters"
            )
    return found


def _set_stream_state(stream: Any, saved: Any) -> None:
    if isinstance(stream, np.random.Generator) and isinstance(saved, dict) and "generator" in saved:
        stream.bit_generator.state = saved["generator"]
    elif not isinstance(stream, np.random.Generator) and "random_state" in saved:
        legacy = dict(saved["random_state"])
        inner = dict(legacy["state"])
        inner["key"] = np.asarray(inner["key"], dtype=np.uint32)
        legacy["state"] = inner
        stream.state.set_state(legacy)
    else:
        raise ValueError("the stream's kind differs from the model's")


def _restore_training_state(
    path: Any, model: Sequential, saved: Any, arrays: dict[str, np.ndarray]
) -> None:
    """Put back what :func:`_training_state` and the ``optimizer.*`` arrays saved."""
    where = f"{path}: meta.json training_state"
    if not isinstance(saved, dict):
        raise ModelFileError(f"{where} is missing or not an object")
    counters = saved.get("optimizer")
    numbers = [saved.get("epochs_trained")]
    if isinstance(counters, dict):
        numbers += [counters.get("steps"), counters.get("epochs")]
    if not isinstance(counters, dict) or not all(type(n) is int and n >= 0 for n in numbers):
        raise ModelFileError(
            f"{where}: 'epochs_trained' and optimizer 'steps' and 'epochs' must be integers >= 0"
        )
    streams, layer_streams = saved.get("streams"), saved.get("layer_streams")
    if not isinstance(streams, dict) or not isinstance(layer_streams, dict):
        raise ModelFileError(f"{where}: 'streams' and 'layer_streams' must be objects")
    targets = [
        (name, getattr(model.streams, name), streams) for name in ("init", "shuffle", "split")
    ]
    targets += [(name, stream, layer_streams) for name, stream in model.store.streams.items()]
    for name, stream, states in targets:
        if name not in states:  # a resumed run would draw other numbers than the saved one
            raise ModelFileError(f"{where}: the state of stream {name!r} is missing")
        try:
            _set_stream_state(stream, states[name])
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise ModelFileError(
                f"{where}: stream {name!r} cannot be restored ({type(exc).__name__}: {exc})"
            ) from None
    params = model.store.params
    for name, array in arrays.items():  # flat state: one value per parameter, model's dtype
        if array.ndim == 1 and (array.size != params.size or array.dtype != params.dtype):
            raise ModelFileError(
                f"{path}: optimizer state {OPTIMIZER_PREFIX}{name} is "
                f"{array.dtype}{list(array.shape)}, the model's parameters are "
                f"{params.dtype}[{params.size}]"
            )
    try:
        model.optimizer.load_state_arrays(arrays)
    except ValueError as exc:
        raise ModelFileError(f"{path}: optimizer state in {WEIGHTS}: {exc}") from None
    model.optimizer.steps, model.optimizer.epochs = counters["steps"], counters["epochs"]
    model.epochs_trained = saved["epochs_trained"]
    model.optimizer_state_loaded = True


def _positional_names(arrays: dict[str, Array]) -> dict[str, Array]:
    """Version 1 named a layer's arrays by position (``layers.0.1``); ``arrays`` keyed so."""
    out: dict[str, Array] = {}
    counts: dict[str, int] = {}
    for name, array in arrays.items():
        layer = name.rsplit(".", 1)[0]
        out[f"{layer}.{counts.get(layer, 0)}"] = array
        counts[layer] = counts.get(layer, 0) + 1
    return out


def _member_limits() -> dict[str, int]:
    """The largest size (bytes, uncompressed) of each member, so a hostile file cannot make
    loading decompress gigabytes: float64 weights of MAX_PARAMETERS, plus headers."""
    return {
        META: 2**20,
        SPEC: spec_module.MAX_SPEC_BYTES,
        WEIGHTS: 8 * spec_module.MAX_PARAMETERS * (1 + MAX_STATE_ARRAYS) + 2**20,
    }


def _read_members(path: Any) -> dict[str, bytes]:
    limits = _member_limits()
    try:
        # A regular file only (a FIFO would block, a device never end), of bounded size.
        raw = read_regular(path, sum(limits.values()) + 2**20)
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            missing = {META, SPEC, WEIGHTS} - set(archive.namelist())
            if missing:
                raise ModelFileError(f"{path}: not a microfw model, lacks {sorted(missing)}")
            for name, limit in limits.items():
                size = archive.getinfo(name).file_size
                if size > limit:
                    raise ModelFileError(
                        f"{path}: {name} would unpack to {size:,} bytes, more than a model "
                        f"within the limits needs ({limit:,})"
                    )
            return {name: archive.read(name) for name in (META, SPEC, WEIGHTS)}
    except ModelFileError:
        raise
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model file ({exc.strerror or exc})") from exc
    except Exception as exc:  # zipfile's many ways to fail on damaged bytes (zlib, struct...)
        message = (
            f"{path}: not a microfw model file, or a damaged one ({type(exc).__name__}: {exc})"
        )
        raise ModelFileError(message) from None


def _json_member(path: Any, name: str, raw: bytes) -> Any:
    try:  # strict: a key given twice, or an integer too long to read, is refused
        return strict_json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ModelFileError(f"{path}: {name} is not valid JSON ({reason})") from None


def _check_meta(path: Any, meta: Any, registry: Registry) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: meta.json does not describe a {FORMAT!r} file")
    version = meta.get("format_version")
    if type(version) is not int or version not in READS:  # not true, nor 1.0
        raise ModelFileError(
            f"{path}: format version {version!r}; this microfw reads versions "
            f"{', '.join(map(str, READS))}"
        )
    records = meta.get("plugins", [])
    if not isinstance(records, list) or not all(map(_is_record, records)):
        raise ModelFileError(
            f"{path}: meta.json 'plugins' must list objects with string 'kind' (one of "
            f"{', '.join(INTERFACES)}), 'name' and 'package'"
        )
    absent = [p for p in records if not registry.has(p["kind"], p["name"])]
    # Registered by a script (mf.register in __main__): no package to install.
    scripts = [p for p in absent if p["package"] == "__main__"]
    if scripts:
        p = scripts[0]
        others = "; ".join(_describe(q) for q in absent if q is not p)
        raise ModelFileError(
            f"{path}: needs the {p['kind']} {p['name']!r}, which was defined in module "
            f"{p['package']} (a script, not a package): define that class and register it "
            f"(@mf.register, name {p['name']!r}) before loading"
            + (f"; also missing: {others}" if others else "")
        )
    if absent:
        raise ModelFileError(
            f"{path}: needs plugins that are not registered: "
            f"{'; '.join(map(_describe, absent))}; install the package(s) named, or allow them "
            "via MICROFW_PLUGINS"
        )


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and record.get("kind") in INTERFACES
        and all(isinstance(record.get(key), str) for key in ("name", "package"))
        and isinstance(record.get("version"), str | None)
    )


def _describe(record: dict[str, Any]) -> str:
    return f"{record['kind']} {record['name']!r} (from {_package(record)})"


def _package(record: dict[str, Any]) -> str:
    version = record.get("version")
    return f"{record['package']} {version}" if version else str(record["package"])


def _weight_headers(path: Any, raw: bytes) -> dict[str, Header]:
    """The inner .npy headers of weights.npz, read without any array data."""
    # An .npz is a zip; anything else np.load would read as .npy or try to unpickle.
    if not raw.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ModelFileError(f"{path}: weights.npz is not an .npz archive")
    try:
        return read_headers(io.BytesIO(raw), max_member_bytes=_member_limits()[WEIGHTS])
    except NpzError as exc:
        raise ModelFileError(f"{path}: weights.npz is damaged or refused: {exc}") from None


def _read_weights(
    path: Any, raw: bytes, headers: dict[str, Header], expected: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The arrays of weights.npz, once every inner header agrees with ``expected`` (the
    built model's arrays): no array data is read, so no declared size allocated, before."""
    problems = [f"missing array {n!r}" for n in expected if n not in headers]
    problems += [f"unexpected array {n!r}" for n in headers if n not in expected]
    for name, header in headers.items():
        param = expected.get(name)
        if param is not None and (header.shape != param.shape or header.dtype != param.dtype):
            problems.append(f"{name} is {header}, the spec needs {param.dtype}{list(param.shape)}")
    if problems:
        raise ModelFileError(f"{path}: weights do not match the spec: {'; '.join(problems)}")

    def check(name: str, header: Header) -> None:  # the same bytes, parsed again
        if header != headers.get(name):
            raise NpzError(f"array {name!r} changed while it was read")

    biggest = max((p.nbytes for p in expected.values()), default=0)
    try:
        return read_npz(io.BytesIO(raw), check, max_member_bytes=biggest + 2**16)
    except NpzError as exc:
        raise ModelFileError(f"{path}: weights.npz: {exc}") from None


def _check_weights(path: Any, arrays: dict[str, np.ndarray], expected: dict[str, Any]) -> None:
    problems = [f"missing array {n!r}" for n in expected if n not in arrays]
    problems += [f"unexpected array {n!r}" for n in arrays if n not in expected]
    for name, param in expected.items():
        a = arrays.get(name)
        if not isinstance(a, np.ndarray):  # np.load gives the bytes of a member not in .npy
            problems += [] if a is None else [f"{name} is not an .npy array"]
        elif a.shape != param.shape or a.dtype != param.dtype:
            problems.append(
                f"{name} is {a.dtype}{list(a.shape)}, the spec needs {param.dtype}"
                f"{list(param.shape)}"
            )
        elif not np.isfinite(a).all():
            problems.append(f"{name} holds NaN or infinite values")
    if problems:
        raise ModelFileError(f"{path}: weights do not match the spec: {'; '.join(problems)}")
