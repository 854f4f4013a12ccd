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

from microfw.errors import MicrofwError
from microfw.registry import Registry, current_registry
from microfw.spec import load_spec, plugins_of

if TYPE_CHECKING:
    from microfw.model import Sequential

FORMAT = "microfw-model"
FORMAT_VERSION = 1
META, SPEC, WEIGHTS = "meta.json", "spec.json", "weights.npz"


class ModelFileError(MicrofwError, ValueError):
    """A model file cannot be loaded: wrong format, missing plugins, or mismatched weights."""


def save(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` (conventionally ``*.microfw``), atomically."""
    from microfw import __version__

    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "microfw_version": __version__,
        "plugins": [
            _plugin_record(model.registry, kind, name)
            for kind, name in plugins_of([*model.layers, model.loss, model.optimizer])
        ],
    }
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

    Checks, in order: the container and format version, that every plugin it needs is
    registered (naming the package that provided it), the spec, and the weights' names,
    shapes and dtypes, raising :class:`ModelFileError` (or :class:`~microfw.SpecError`).
    """
    from microfw.model import build

    registry = registry or current_registry()
    try:
        with zipfile.ZipFile(path) as archive:
            missing = {META, SPEC, WEIGHTS} - set(archive.namelist())
            if missing:
                raise ModelFileError(f"{path}: not a microfw model, lacks {sorted(missing)}")
            meta = json.loads(archive.read(META))
            _check_meta(path, meta, registry)
            spec = load_spec(archive.read(SPEC).decode("utf-8"), registry)
            raw = archive.read(WEIGHTS)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{path}: not a microfw model file ({exc})") from None
    arrays = _read_weights(path, raw)
    model = build(spec, registry)
    _check_weights(path, arrays, dict(zip(model.weight_names(), model.parameters(), strict=True)))
    model.set_weights([arrays[name] for name in model.weight_names()])
    return model


def _plugin_record(registry: Registry, kind: str, name: str) -> dict[str, Any]:
    provenance = registry.entry(kind, name).provenance
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
    missing = [
        f"{p['kind']} {p['name']!r} (from {_package(p)})"
        for p in meta.get("plugins", [])
        if not registry.has(p["kind"], p["name"])
    ]
    if missing:
        raise ModelFileError(
            f"{path}: needs plugins that are not registered: {'; '.join(missing)}; install "
            "the package(s) named, or allow them via MICROFW_PLUGINS"
        )


def _package(record: dict[str, Any]) -> str:
    version = record.get("version")
    return f"{record['package']} {version}" if version else str(record["package"])


def _read_weights(path: Any, raw: bytes) -> dict[str, np.ndarray]:
    arrays = {}
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        for name in npz.files:
            try:
                arrays[name] = npz[name]
            except ValueError as exc:  # object arrays need pickle, which is refused
                raise ModelFileError(f"{path}: weights.npz array {name!r}: {exc}") from None
    return arrays


def _check_weights(path: Any, arrays: dict[str, np.ndarray], expected: dict[str, Any]) -> None:
    problems = [f"missing array {n!r}" for n in expected if n not in arrays]
    problems += [f"unexpected array {n!r}" for n in arrays if n not in expected]
    for name, param in expected.items():
        a = arrays.get(name)
        if a is not None and (a.shape != param.shape or a.dtype != param.dtype):
            problems.append(
                f"{name} is {a.dtype}{list(a.shape)}, the spec needs {param.dtype}"
                f"{list(param.shape)}"
            )
    if problems:
        raise ModelFileError(f"{path}: weights do not match the spec: {'; '.join(problems)}")
