"""microfw: a small, fast neural-network framework in NumPy built around a plugin registry.

Importing microfw loads no plugin; the registry loads them on first lookup.
"""

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
from microfw.params import ref
from microfw.registry import Registry, default_registry, register

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "DuplicatePluginError",
    "Initializer",
    "Layer",
    "Loss",
    "MicrofwError",
    "Optimizer",
    "Plugin",
    "PluginError",
    "PluginNotFoundError",
    "Problem",
    "Registry",
    "Schedule",
    "SpecError",
    "__version__",
    "default_registry",
    "hookimpl",
    "ref",
    "register",
]
