"""microfw: a small, fast neural-network framework in NumPy built around a plugin registry.

Importing microfw loads no plugin; the registry loads them on first lookup. ``mf.testing``
(the contract checks for plugin authors) is imported on first access, as ``numpy.testing`` is.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING

from microfw._version import __version__
from microfw.core.activation_layer import ActivationLayer
from microfw.core.buffers import WorkBuffer
from microfw.core.hookspecs import hookimpl
from microfw.core.interfaces import (
    Activation,
    Array,
    Initializer,
    Layer,
    Loss,
    Metric,
    Optimizer,
    Plugin,
    Regularizer,
    Schedule,
)
from microfw.core.params import ref
from microfw.core.registry import Registry, default_registry, register
from microfw.errors import (
    DataError,
    DuplicatePluginError,
    JSONTextError,
    MicrofwError,
    MissingExtraError,
    ModelFileError,
    NotRegularFileError,
    NpzError,
    OnnxExportError,
    PlotError,
    PluginError,
    PluginNotFoundError,
    Problem,
    SpaceError,
    SpecError,
    SpecWarning,
    SweepError,
    TooLargeError,
    TrainingError,
    WorkerError,
)
from microfw.io import load
from microfw.nn.sequential import Sequential, build
from microfw.spec.models import ModelSpec, TrainingSpec, load_spec
from microfw.spec.schema import json_schema
from microfw.train.callbacks import (
    Callback,
    CostLogger,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ProgressBar,
    ReduceLROnPlateau,
)
from microfw.train.loop import History

__all__ = [
    "Activation",
    "ActivationLayer",
    "Array",
    "CSVLogger",
    "Callback",
    "CostLogger",
    "DataError",
    "DuplicatePluginError",
    "EarlyStopping",
    "History",
    "Initializer",
    "JSONTextError",
    "Layer",
    "Loss",
    "Metric",
    "MicrofwError",
    "MissingExtraError",
    "ModelCheckpoint",
    "ModelFileError",
    "ModelSpec",
    "NotRegularFileError",
    "NpzError",
    "OnnxExportError",
    "Optimizer",
    "PlotError",
    "Plugin",
    "PluginError",
    "PluginNotFoundError",
    "Problem",
    "ProgressBar",
    "ReduceLROnPlateau",
    "Registry",
    "Regularizer",
    "Schedule",
    "Sequential",
    "SpaceError",
    "SpecError",
    "SpecWarning",
    "SweepError",
    "TooLargeError",
    "TrainingAnimation",
    "TrainingError",
    "TrainingSpec",
    "WorkBuffer",
    "WorkerError",
    "__version__",
    "build",
    "default_registry",
    "hookimpl",
    "json_schema",
    "load",
    "load_spec",
    "ref",
    "register",
]

if _TYPE_CHECKING:  # type checkers see the module; at run time __getattr__ imports it
    from microfw import testing as testing

_LAZY_SUBMODULES = ("testing",)
"""Submodules reachable as attributes of ``microfw`` but imported only on first access."""


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f"{__name__}.{name}")  # also sets it as an attribute
    if name == "TrainingAnimation":  # needs matplotlib (the plot extra): on first use only
        from microfw.animation import TrainingAnimation

        return TrainingAnimation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_SUBMODULES, "TrainingAnimation"})
