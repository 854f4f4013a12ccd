"""microfw: a small, fast neural-network framework in NumPy built around a plugin registry.

Importing microfw loads no plugin; the registry loads them on first lookup.
"""

from microfw.core.activation_layer import ActivationLayer
from microfw.core.buffers import WorkBuffer
from microfw.core.hookspecs import hookimpl
from microfw.core.interfaces import (
    Activation,
    Array,
    Initializer,
    Layer,
    Loss,
    Optimizer,
    Plugin,
    Schedule,
)
from microfw.core.params import ref
from microfw.core.registry import Registry, default_registry, register
from microfw.errors import (
    DuplicatePluginError,
    MicrofwError,
    PluginError,
    PluginNotFoundError,
    Problem,
    SpecError,
)
from microfw.io import ModelFileError, load
from microfw.nn.sequential import Sequential, build
from microfw.spec.models import ModelSpec, TrainingSpec, load_spec
from microfw.spec.schema import json_schema
from microfw.train.callbacks import Callback, CostLogger, EarlyStopping, ProgressBar
from microfw.train.loop import History, TrainingError

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # TrainingAnimation needs matplotlib (the plot extra): imported on first use only.
    if name == "TrainingAnimation":
        from microfw.animation import TrainingAnimation

        return TrainingAnimation
    raise AttributeError(f"module 'microfw' has no attribute {name!r}")


__all__ = [
    "Activation",
    "ActivationLayer",
    "Array",
    "Callback",
    "CostLogger",
    "DuplicatePluginError",
    "EarlyStopping",
    "History",
    "Initializer",
    "Layer",
    "Loss",
    "MicrofwError",
    "ModelFileError",
    "ModelSpec",
    "Optimizer",
    "Plugin",
    "PluginError",
    "PluginNotFoundError",
    "Problem",
    "ProgressBar",
    "Registry",
    "Schedule",
    "Sequential",
    "SpecError",
    "TrainingAnimation",
    "TrainingError",
    "TrainingSpec",
    "WorkBuffer",
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
