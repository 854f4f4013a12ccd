"""microfw: a small, fast neural-network framework in NumPy built around a plugin registry.

Importing microfw loads no plugin; the registry loads them on first lookup.
"""

from microfw.activation_layer import ActivationLayer
from microfw.buffers import WorkBuffer
from microfw.callbacks import Callback, CostLogger, EarlyStopping, ProgressBar
from microfw.errors import (
    DuplicatePluginError,
    MicrofwError,
    PluginError,
    PluginNotFoundError,
    Problem,
    SpecError,
)
from microfw.hookspecs import hookimpl
from microfw.interfaces import (
    Activation,
    Initializer,
    Layer,
    Loss,
    Optimizer,
    Plugin,
    Schedule,
)
from microfw.io import ModelFileError, load
from microfw.model import Sequential, build
from microfw.params import ref
from microfw.registry import Registry, default_registry, register
from microfw.schema import json_schema
from microfw.spec import ModelSpec, TrainingSpec, load_spec
from microfw.training import History, TrainingError

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "ActivationLayer",
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
