"""Save and load models: one zip file holding ``meta.json``, ``spec.json`` and ``weights.npz``.

* ``meta.json``: the format name and version, the microfw version, and every plugin the spec
  uses with the package (and version) that registered it.
* ``spec.json``: the validated spec, every plugin written out in full.
* ``weights.npz``: the model's arrays as its store names them (``layers.0.W``,
  ``layers.0.b``, then non-trainable state such as running statistics), read back with
  ``allow_pickle=False``. Nothing is pickled. Version 1 files (microfw 0.1, arrays named
  ``layers.<layer index>.<param index>``) are read too.

Writing goes to a temporary file in the target's directory, then ``os.replace``: a failure
leaves any previous file untouched.

Version 3 adds what resuming training needs, so that ``fit`` on a loaded model continues
bit-identically to a run never interrupted: ``meta.json``'s ``training_state`` holds the
number of epochs trained, the optimizer's step and epoch counters (which drive its schedule)
and the state of the model's random streams (``init``, ``shuffle``, ``split``, as
``numpy.random`` bit-generator states); ``weights.npz`` holds the optimizer's state arrays as
``optimizer.<name>`` (``optimizer.m``, ``optimizer.v``, ``optimizer.step``...). Files of
versions 1 and 2 load as before, with no optimizer state (``model.optimizer_state_loaded`` is
false: the schedule and moments start afresh).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microfw._version import __version__
from microfw.core.interfaces import INTERFACES
from microfw.core.registry import Registry, current_registry
from microfw.errors import ModelFileError, PluginError, SpecError
from microfw.spec import models as spec_module
from microfw.spec.models import plugins_of

if TYPE_CHECKING:
    from microfw.nn.sequential import Sequential

FORMAT = "microfw-model"
FORMAT_VERSION = 3
READS = (1, 2, 3)
"""The format versions :func:`load` reads."""
META, SPEC, WEIGHTS = "meta.json", "spec.json", "weights.npz"
OPTIMIZER_PREFIX = "optimizer."
"""The prefix of the optimizer's state arrays in ``weights.npz`` (version 3)."""
MAX_STATE_ARRAYS = 4
"""Optimizer state arrays the size of the parameters a file may hold (amsgrad Adam has 3)."""


def save(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` (conventionally ``*.microfw``), atomically."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "microfw_version": __version__,
        "plugins": [
            _plugin_record(model.registry, kind, name, cls)
            for kind, name, cls in plugins_of([*model.layers, model.loss, model.optimizer])
        ],
        "training_state": _training_state(model),
    }
    weights = io.BytesIO()
    arrays: dict[str, Any] = dict(model.store.items())
    for name, array in model.optimizer.state_arrays().items():
        arrays[OPTIMIZER_PREFIX + name] = array
    np.savez(weights, **arrays)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(META, json.dumps(meta, indent=2))
                archive.writestr(SPEC, model.to_spec().to_json())
                archive.writestr(WEIGHTS, weights.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike[str], registry: Registry | None = None) -> Sequential:
    """Read a model written by :func:`save`; it predicts bit-identically to the saved one.

    Checks, in order: the container (a readable zip holding the three members, none larger
    than a model within :data:`~microfw.spec.MAX_PARAMETERS` needs), the format version, that
    every plugin it needs is registered (naming the package that provided it), the spec, and
    the weights' names, shapes, dtypes and finiteness. Any problem raises
    :class:`ModelFileError` (or :class:`~microfw.SpecError` for the spec); nothing is
    unpickled and no model is returned.
    """
    from microfw.nn.sequential import build

    registry = registry or current_registry()
    members = _read_members(path)
    meta = _json_member(path, META, members[META])
    _check_meta(path, meta, registry)
    spec = _json_member(path, SPEC, members[SPEC])
    if not isinstance(spec, dict):
        raise ModelFileError(f"{path}: {SPEC} is not a JSON object")
    arrays = _read_weights(path, members[WEIGHTS])
    try:
        model = build(spec, registry)
    except SpecError as exc:
        raise SpecError(exc.problems, source=f"in {path}") from None
    if meta["format_version"] == 1:
        arrays = _positional_names(arrays, model.weight_names())
    state = {}
    if meta["format_version"] >= 3:
        state = {
            k[len(OPTIMIZER_PREFIX) :]: arrays.pop(k)
            for k in list(arrays)
            if k.startswith(OPTIMIZER_PREFIX)
        }
    expected = dict(model.store.items())
    _check_weights(path, arrays, expected)
    for name, array in expected.items():
        np.copyto(array, arrays[name], casting="same_kind")
    model.parameters_changed()
    if meta["format_version"] >= 3:
        _restore_training_state(path, model, meta.get("training_state"), state)
    return model


def _stream_state(stream: Any) -> dict[str, Any]:
    """A random stream's state as JSON data (a Generator's bit generator, or a RandomState)."""
    if isinstance(stream, np.random.Generator):
        return {"generator": stream.bit_generator.state}
    legacy = stream.state.get_state(legacy=False)  # LegacyRNG over a RandomState
    legacy["state"] = {**legacy["state"], "key": legacy["state"]["key"].tolist()}
    return {"random_state": legacy}


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


def _training_state(model: Sequential) -> dict[str, Any]:
    """What resuming needs besides the arrays (see the module docstring)."""
    streams = model.streams
    return {
        "epochs_trained": model.epochs_trained,
        "optimizer": {"steps": model.optimizer.steps, "epochs": model.optimizer.epochs},
        "streams": {
            "init": _stream_state(streams.init),
            "shuffle": _stream_state(streams.shuffle),
            "split": _stream_state(streams.split),
        },
    }


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
    streams = saved.get("streams")
    if not isinstance(streams, dict):
        raise ModelFileError(f"{where}: 'streams' must be an object")
    for name in ("init", "shuffle", "split"):
        try:
            _set_stream_state(getattr(model.streams, name), streams.get(name))
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


def _positional_names(arrays: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Version 1 named a layer's arrays by position (``layers.0.1``): rename them as now."""
    by_layer: dict[str, list[str]] = {}
    for name in names:
        by_layer.setdefault(name.rsplit(".", 1)[0], []).append(name)
    out = {}
    for old, array in arrays.items():
        layer, _, index = old.rpartition(".")
        own = by_layer.get(layer, [])
        new = own[int(index)] if index.isdigit() and int(index) < len(own) else old
        out[new] = array
    return out


def _member_limits() -> dict[str, int]:
    """The largest size (bytes, uncompressed) of each member, so a hostile file cannot make
    loading decompress gigabytes: float64 weights of MAX_PARAMETERS, plus headers."""
    weights = 8 * spec_module.MAX_PARAMETERS * (1 + MAX_STATE_ARRAYS) + 2**20
    return {META: 2**20, SPEC: 2**24, WEIGHTS: weights}


def _read_members(path: Any) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            missing = {META, SPEC, WEIGHTS} - set(archive.namelist())
            if missing:
                raise ModelFileError(f"{path}: not a microfw model, lacks {sorted(missing)}")
            for name, limit in _member_limits().items():
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
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ModelFileError(f"{path}: {name} is not valid JSON ({reason})") from None


def _plugin_record(registry: Registry, kind: str, name: str, cls: type) -> dict[str, Any]:
    """The record of one plugin the model uses; it must be the one its name loads."""
    entry = registry.entry(kind, name) if registry.has(kind, name) else None
    if entry is None or entry.cls is not cls:
        found = (
            f"registered as {entry.cls.__module__}.{entry.cls.__qualname__}"
            if entry
            else "not registered"
        )
        raise PluginError(
            f"cannot save: the model's {kind} {name!r} is {cls.__module__}.{cls.__qualname__}, "
            f"but that name is {found}, so the file could not be loaded as saved; register "
            "the class (mf.register) and build the model with it"
        )
    provenance = entry.provenance
    return {
        "kind": kind,
        "name": name,
        "package": provenance.package,
        "version": provenance.version,
    }


def _check_meta(path: Any, meta: Any, registry: Registry) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: meta.json does not describe a {FORMAT!r} file")
    version = meta.get("format_version")
    if type(version) is not int or version not in READS:
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
    missing = [
        f"{p['kind']} {p['name']!r} (from {_package(p)})"
        for p in records
        if not registry.has(p["kind"], p["name"])
    ]
    if missing:
        raise ModelFileError(
            f"{path}: needs plugins that are not registered: {'; '.join(missing)}; install "
            "the package(s) named, or allow them via MICROFW_PLUGINS"
        )


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and record.get("kind") in INTERFACES
        and all(isinstance(record.get(key), str) for key in ("name", "package"))
        and isinstance(record.get("version"), str | None)
    )


def _package(record: dict[str, Any]) -> str:
    version = record.get("version")
    return f"{record['package']} {version}" if version else str(record["package"])


def _read_weights(path: Any, raw: bytes) -> dict[str, np.ndarray]:
    # An .npz is a zip; anything else np.load would read as .npy or try to unpickle.
    if not raw.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise ModelFileError(f"{path}: weights.npz is not an .npz archive")
    arrays = {}
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            for name in npz.files:
                try:
                    arrays[name] = npz[name]
                except ValueError as exc:  # object arrays need pickle, which is refused
                    raise ModelFileError(f"{path}: weights.npz array {name!r}: {exc}") from None
    except ModelFileError:
        raise
    except Exception as exc:  # damaged .npz: zipfile, zlib or the .npy header parser
        message = f"{path}: weights.npz is damaged ({type(exc).__name__}: {exc})"
        raise ModelFileError(message) from None
    return arrays


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
