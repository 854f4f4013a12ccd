"""The spec linter: advice from the metadata plugins declare, for specs that are valid but
probably not what was meant.

Plugins declare, as class attributes (see :mod:`microfw.core.interfaces`):

* layers and activations: ``output_range`` (the interval their outputs lie in) and
  ``output_kind`` (``"probability"``: each output a probability, sigmoid; ``"distribution"``:
  rows summing to 1, softmax); layers: ``last_layer_advice`` (why they should not end a
  model, dropout); activations: ``recommended_init`` (initializers suited to the layer before);
* losses: ``prediction_range`` (refined per instance by ``expected_range()``: ``bce`` with
  ``from_logits`` takes any value) and ``expects`` (the ``output_kind`` they are meant for).

A third-party plugin declares the same attributes and gets the same advice. The rules:

1. a loss expecting predictions in an interval after a last layer whose outputs leave it
   (``bce`` after ``linear``: the sigmoid forgotten);
2. a loss for independent probabilities after rows summing to 1, or the reverse (``softmax``
   then ``bce``);
3. an activation right after a layer whose fan-scaled initializer (its ``variance()``
   depends on the fans) it does not recommend (``relu`` after a ``xavier``/``glorot_*``
   initialised layer: ``he`` suits it); a fixed scale (``normal`` with a chosen ``std``) is
   taken as deliberate;
4. a layer with ``last_layer_advice`` at the end of the model (``dropout``).

:func:`microfw.build` and ``microfw validate`` report each finding as a
:class:`~microfw.SpecWarning` with its spec path; ``microfw validate --strict`` makes them
errors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from microfw.core.activation_layer import ActivationLayer
from microfw.core.interfaces import Initializer, Layer, Loss, Plugin
from microfw.errors import Problem, SpecWarning

_EXAMPLES = {"probability": "sigmoid", "distribution": "softmax"}
"""A built-in plugin of each output kind, to suggest."""


def lint(layers: Sequence[Layer], paths: Sequence[str], loss: Loss | None) -> list[Problem]:
    """The advice for a resolved model: ``layers`` with the spec path of each, and the loss."""
    plugins: list[Any] = [_plugin(layer) for layer in layers]
    found: list[Problem] = []
    if plugins and loss is not None:
        found += _output_rules(plugins[-1], paths[-1], loss)
    for i in range(1, len(plugins)):
        found += _init_rule(plugins[i - 1], paths[i - 1], plugins[i], paths[i])
    if plugins:
        advice = getattr(plugins[-1], "last_layer_advice", None)
        if advice:
            found.append(Problem(paths[-1], f"{_named(plugins[-1])} ends the model: {advice}"))
    return found


def warn(problems: Sequence[Problem], stacklevel: int = 2) -> None:
    """Issue every problem as a :class:`~microfw.SpecWarning` (``stacklevel`` as in
    :func:`warnings.warn`, counted from the caller of this function)."""
    for problem in problems:
        warnings.warn(SpecWarning(problem.path, problem.message), stacklevel=stacklevel + 1)


def _plugin(layer: Layer) -> Plugin:
    return layer.activation if isinstance(layer, ActivationLayer) else layer


def _named(plugin: Plugin) -> str:
    return f"{plugin.kind} {plugin.name!r}"


def _interval(lo: float, hi: float) -> str:
    def text(v: float) -> str:
        return ("-inf" if v < 0 else "inf") if math.isinf(v) else f"{v:g}"

    return f"[{text(lo)}, {text(hi)}]"


def _output_rules(last: Any, path: str, loss: Loss) -> list[Problem]:
    found = []
    expected = loss.expected_range()
    actual = getattr(last, "output_range", None)
    if expected is not None and actual is not None:
        lo, hi = expected
        if actual[0] < lo or actual[1] > hi:
            example = _EXAMPLES.get(loss.expects or "")
            fix = f"end the model with e.g. {example!r}" if example else "change the last layer"
            if getattr(loss, "from_logits", None) is False:  # a loss that can take logits
                fix += f" (or give {loss.name} from_logits=true)"
            found.append(
                Problem(
                    path,
                    f"loss {loss.name!r} expects predictions in {_interval(lo, hi)}, but the last "
                    f"layer, {_named(last)}, outputs values in {_interval(*actual)}: {fix}",
                )
            )
    kind = getattr(last, "output_kind", None)
    if loss.expects and kind and kind != loss.expects:
        if loss.expects == "probability":
            why = "treats each output as an independent probability"
        else:
            why = "expects rows that sum to 1"
        example = _EXAMPLES.get(loss.expects)
        suggestion = f" (after e.g. {example!r})" if example else ""
        found.append(
            Problem(
                "loss",
                f"{_named(last)} gives {kind} outputs, but loss {loss.name!r} {why}{suggestion}",
            )
        )
    return found


def _init_rule(before: Any, before_path: str, plugin: Any, path: str) -> list[Problem]:
    recommended = getattr(plugin, "recommended_init", ())
    init = getattr(before, "init", None)
    if not recommended or not isinstance(init, Initializer) or init.name in recommended:
        return []
    small, large = init.variance(100, 100), init.variance(200, 200)
    if small is None or large is None or small == large:
        return []  # not scaled by the fans (normal with a chosen std...): a deliberate choice
    return [
        Problem(
            f"{before_path}.init",
            f"{_named(plugin)} at {path} follows a layer initialised with {init.name!r}; "
            f"{recommended[0]!r} suits it (keeps the variance of its outputs)",
        )
    ]
