"""Fusion rules: how consecutive steps of a model may run faster than their plain methods.

A plugin's interface holds plain maths only. Speed is written down separately, as rules a
plugin package returns from its ``register_fusions`` hook, keyed on **exact classes**: a
subclass with maths of its own never receives a fusion it did not ask for. The planner
(:mod:`microfw.nn.plan`) is the only code that reads them; ``Sequential(..., plan="plain")``
ignores them, and :func:`microfw.testing.check_fusion` verifies each rule against the plain
methods of the classes it names.

Two kinds of rule:

* :class:`Fusion`: consecutive layers matching ``pattern`` run as one :class:`Step` that the
  rule builds (for example a dense layer and its activation in one pass, in place).
* :class:`LossFusion`: the last layer and the loss computed together from the last layer's
  *input* (the logits): ``sigmoid`` + ``bce``, ``softmax`` + cross-entropy. The value comes
  from the logits and the gradient is exact however wrong a sample is.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from microfw.core.interfaces import Array, Plugin


class Step(abc.ABC):
    """One planned step of a model's training pass: a layer, or several fused.

    ``forward`` keeps what ``backward`` needs. The planner sets, before the first batch:

    * :attr:`needs_input_grad`: false on the first step, whose ``dL/dx`` nobody reads
      (``backward`` may then return any array);
    * :attr:`dy_is_scratch`: true when the ``dy`` that ``backward`` receives is a buffer
      its producer never reads again, so that ``backward`` may overwrite it.

    A step declares :attr:`grad_is_scratch` when the array its ``backward`` returns is such a
    buffer (the step never reads it again).
    """

    needs_input_grad: bool = True
    dy_is_scratch: bool = False
    grad_is_scratch: bool = False

    @abc.abstractmethod
    def forward(self, x: Array) -> Array:
        """The training-mode output for ``x`` ``(n_samples, n_in)``."""

    @abc.abstractmethod
    def backward(self, dy: Array) -> Array:
        """``dL/dx`` for ``dL/dy``; writes the parameter gradients of the layers it runs."""


@dataclass(frozen=True)
class Fusion:
    """Run consecutive layers whose exact classes are ``pattern`` as one step.

    Attributes:
        pattern: the exact classes, in order. An :class:`~microfw.Activation` class matches
            the core's wrapper of that activation.
        step: ``step(plugins) -> Step``, given the matched plugins (layers, or activations
            for activation entries), already built.
        applies: ``applies(plugins) -> bool``, whether the rule takes these instances (for
            a rule that holds only for some parameter values); default: always.
        name: a short label shown by ``microfw validate`` (default: the plugins' names).
    """

    pattern: tuple[type[Plugin], ...]
    step: Callable[[Sequence[Any]], Step]
    applies: Callable[[Sequence[Any]], bool] | None = None
    name: str = ""

    def label(self) -> str:
        """The rule's label: its ``name`` or the names of its classes joined by ``+``."""
        return self.name or "+".join(getattr(c, "name", c.__name__) for c in self.pattern)


@dataclass(frozen=True)
class LossFusion:
    """Compute the last layer's output and the loss from the last layer's input ``z``.

    Attributes:
        last: the exact class of the last layer (an activation class matches its wrapper).
        loss: the exact loss class.
        forward: ``forward(last_plugin, z) -> y_pred``, the last layer's output.
        value_and_grad: ``value_and_grad(loss, z, y_pred, y_true) -> (value, dL/dz)``, the
            loss's value and its gradient with respect to ``z``; the gradient array is handed
            to the model, which may overwrite it.
        applies: ``applies(last_plugin, loss) -> bool``, whether the rule takes these
            instances (``bce`` only from probabilities); default: always.
        name: a short label shown by ``microfw validate``.
    """

    last: type[Plugin]
    loss: type[Plugin]
    forward: Callable[[Any, Array], Array]
    value_and_grad: Callable[[Any, Array, Array, Array], tuple[float, Array]]
    applies: Callable[[Any, Any], bool] | None = None
    name: str = ""

    def label(self) -> str:
        """The rule's label: its ``name`` or ``last+loss``."""
        names = (getattr(c, "name", c.__name__) for c in (self.last, self.loss))
        return self.name or "+".join(names)


Rule = Fusion | LossFusion
"""A fusion rule of either kind."""
