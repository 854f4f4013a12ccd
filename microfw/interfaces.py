"""Deprecated: the interfaces moved to :mod:`microfw.core.interfaces` in 0.2.

Import them from ``microfw`` (``from microfw import Activation, Array``). This alias keeps
plugins written for 0.1 working and will be removed in 0.3.
"""

import warnings

from microfw.core.interfaces import (
    RNG,
    Activation,
    Array,
    Initializer,
    Layer,
    Loss,
    Optimizer,
    Plugin,
    Schedule,
)

warnings.warn(
    "microfw.interfaces is deprecated: import from microfw (e.g. `from microfw import Array`)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "RNG",
    "Activation",
    "Array",
    "Initializer",
    "Layer",
    "Loss",
    "Optimizer",
    "Plugin",
    "Schedule",
]
