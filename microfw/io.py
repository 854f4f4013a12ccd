"""Save and load models: one zip file holding ``meta.json``, ``spec.json`` and ``weights.npz``.

* ``meta.json``: the format name and version, the microfw version, and every plugin the spec
  uses with the package (and version) that registered it.
* ``spec.json``: the validated spec, every plugin written out in full.
* ``weights.npz``: the trainable arrays named ``layers.<layer index>.<param index>``, read
  back with ``allow_pickle=False``. Nothing is pickled.

Writing goes to a temporary file in the target's directory, then ``os.replace``: a failure
leaves any previous file untouched. Optimizer state (step counters, momentum buffers) is not
saved: a loaded model predicts identically and starts its learning-rate schedule afresh.
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

from microfw.core.interfaces import INTERFACES
from microfw.core.registry import Registry, current_registry
from microfw.errors import MicrofwError, PluginError, SpecError
from microfw.spec import models as spec_module
from microfw.spec.models import plugins_of

if TYPE_CHECKING:
    from microfw.columns import Columns
    from microfw.nn.sequential import Sequential

FORMAT = "microfw-model"
FORMAT_VERSION = 1
META, SPEC, WEIGHTS = "meta.json", "spec.json", "weights.npz"


class ModelFileError(MicrofwError, ValueError):
    """A model file cannot be loaded: wrong format, missing plugins, or mismatched weights."""


def save(
    model: Sequential, path: str | os.PathLike[str], *, columns: Columns | None = None
) -> None:
    """Write ``model`` to ``path`` (conventionally ``*.microfw``), atomically.

    ``columns``, the names of the data's feature columns and target column it was trained on,
    are kept in ``meta.json`` (see :func:`microfw.columns.saved_columns`).
    """
    from microfw import __version__

    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "microfw_version": __version__,
        "plugins": [
            _plugin_record(model.registry, kind, name, cls)
            for kind, name, cls in plugins_of([*model.layers, model.loss, model.optimizer])
        ],
    }
    if columns is not None:
        meta["columns"] = columns.to_dict()
    weights = io.BytesIO()
    np.savez(weights, **dict(zip(model.weight_names(), model.parameters(), strict=True)))
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
    _check_weights(path, arrays, dict(zip(model.weight_names(), model.parameters(), strict=True)))
    model.set_weights([arrays[name] for name in model.weight_names()])
    return model


def _member_limits() -> dict[str, int]:
    """The largest size (bytes, uncompressed) of each member, so a hostile file cannot make
    loading decompress gigabytes: float64 weights of MAX_PARAMETERS, plus headers."""
    return {META: 2**20, SPEC: 2**24, WEIGHTS: 8 * spec_module.MAX_PARAMETERS + 2**20}


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
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format version {version!r}; this microfw reads version {FORMAT_VERSION}"
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
