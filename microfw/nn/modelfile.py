"""Writing a model file: one zip of ``meta.json``, ``spec.json`` and ``weights.npz``.

The format is described in :mod:`microfw.io`, which reads it. Writing builds the whole file in
memory, then writes it atomically (a temporary file in the target's directory, then
``os.replace``): a failure leaves any previous file untouched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microfw._files import atomic_write, npz_bytes, zip_bytes
from microfw._version import __version__
from microfw.core.registry import Registry
from microfw.errors import PluginError
from microfw.spec.models import plugins_of

if TYPE_CHECKING:
    from microfw.columns import Columns
    from microfw.nn.sequential import Sequential

FORMAT = "microfw-model"
FORMAT_VERSION = 3
META, SPEC, WEIGHTS = "meta.json", "spec.json", "weights.npz"
OPTIMIZER_PREFIX = "optimizer."
"""The prefix of the optimizer's state arrays in ``weights.npz`` (version 3)."""


def save(
    model: Sequential, path: str | os.PathLike[str], *, columns: Columns | None = None
) -> None:
    """Write ``model`` to ``path`` (conventionally ``*.microfw``), atomically.

    ``columns``, the names of the data's feature columns and target column it was trained on,
    are kept in ``meta.json`` (see :func:`microfw.columns.saved_columns`).
    """
    # Built in memory, then written atomically (temporary file named for its clean-up).
    atomic_write(Path(path), to_bytes(model, columns=columns))


def to_bytes(model: Sequential, *, columns: Columns | None = None) -> bytes:
    """The bytes of the model file :func:`save` writes (for a file, a pickle or a socket)."""
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
    if columns is not None:
        meta["columns"] = columns.to_dict()
    arrays: dict[str, Any] = dict(model.store.items())
    for name, array in model.optimizer.state_arrays().items():
        arrays[OPTIMIZER_PREFIX + name] = array
    archive = {META: json.dumps(meta, indent=2), SPEC: model.to_spec().to_json()}
    return zip_bytes({**archive, WEIGHTS: npz_bytes(arrays)})


def _plugin_record(registry: Registry, kind: str, name: str, cls: type) -> dict[str, Any]:
    """The record of one plugin the model uses; it must be the one its name loads."""
    entry = registry.entry_of(kind, name, cls)
    if entry is None:
        holder = registry.entry(kind, name) if registry.has(kind, name) else None
        found = (
            f"registered as {holder.cls.__module__}.{holder.cls.__qualname__}"
            if holder
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


def _stream_state(stream: Any) -> dict[str, Any]:
    """A random stream's state as JSON data (a Generator's bit generator, or a RandomState)."""
    if isinstance(stream, np.random.Generator):
        return {"generator": stream.bit_generator.state}
    legacy = stream.state.get_state(legacy=False)  # LegacyRNG over a RandomState
    legacy["state"] = {**legacy["state"], "key": legacy["state"]["key"].tolist()}
    return {"random_state": legacy}


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
        # The layers' own streams (dropout masks), so a resumed run draws what it would have.
        "layer_streams": {
            name: _stream_state(generator) for name, generator in model.store.streams.items()
        },
    }
