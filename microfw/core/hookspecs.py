"""The plugin contract: one hook per plugin kind, and one for fusion rules.

A plugin module (or any object) implements some of these hooks with ``@microfw.hookimpl`` and
is found through the ``microfw`` entry-point group::

    [project.entry-points.microfw]
    my_plugins = "my_package.plugins"

Each ``register_<kind>s`` hook takes no arguments and returns a list of classes. Every class
must subclass the interface of its kind, be concrete, and carry a ``name`` that is unique
within its kind (layers and activations share one namespace, as both appear in a spec's
``layers``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from microfw.core.fusions import Rule
    from microfw.core.interfaces import (
        Activation,
        Initializer,
        Layer,
        Loss,
        Metric,
        Optimizer,
        Regularizer,
        Schedule,
    )

PROJECT = "microfw"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_layers() -> list[type[Layer]]:
    """Return :class:`~microfw.Layer` subclasses (e.g. ``linear``, ``softmax``)."""
    raise NotImplementedError


@hookspec
def register_activations() -> list[type[Activation]]:
    """Return :class:`~microfw.Activation` subclasses (element-wise functions)."""
    raise NotImplementedError


@hookspec
def register_losses() -> list[type[Loss]]:
    """Return :class:`~microfw.Loss` subclasses."""
    raise NotImplementedError


@hookspec
def register_initializers() -> list[type[Initializer]]:
    """Return :class:`~microfw.Initializer` subclasses."""
    raise NotImplementedError


@hookspec
def register_optimizers() -> list[type[Optimizer]]:
    """Return :class:`~microfw.Optimizer` subclasses."""
    raise NotImplementedError


@hookspec
def register_schedules() -> list[type[Schedule]]:
    """Return :class:`~microfw.Schedule` subclasses (learning-rate annealing)."""
    raise NotImplementedError


@hookspec
def register_regularizers() -> list[type[Regularizer]]:
    """Return :class:`~microfw.Regularizer` subclasses (penalties on parameter arrays)."""
    raise NotImplementedError


@hookspec
def register_metrics() -> list[type[Metric]]:
    """Return :class:`~microfw.Metric` subclasses (scores ``fit`` and ``evaluate`` report)."""
    raise NotImplementedError


@hookspec
def register_fusions() -> list[Rule]:
    """Return fusion rules (:class:`~microfw.core.fusions.Fusion` and
    :class:`~microfw.core.fusions.LossFusion`): how consecutive steps of a model may run
    faster than their plain methods, keyed on exact classes.

    Optional: a plugin that returns none is run through its plain methods. The planner
    (:mod:`microfw.nn.plan`) is the only reader of the rules; ``microfw validate`` shows which
    apply to a spec, and :func:`microfw.testing.check_fusion` checks a rule against the plain
    methods. Two packages may not register rules for the same pattern.
    """
    raise NotImplementedError


HOOKS: dict[str, str] = {
    "layer": "register_layers",
    "activation": "register_activations",
    "loss": "register_losses",
    "initializer": "register_initializers",
    "optimizer": "register_optimizers",
    "schedule": "register_schedules",
    "regularizer": "register_regularizers",
    "metric": "register_metrics",
}
"""The hook that registers each plugin kind."""

FUSION_HOOK = "register_fusions"
"""The hook that registers fusion rules."""
