"""The planner: the one reader of fusion rules, deciding how a model's training pass runs.

``plan="fast"`` (the default) matches the registered rules (:mod:`microfw.core.fusions`)
against the model's layers and loss, by exact class: a loss rule at the end first, then
layer patterns from the first layer on (longest first). What no rule covers runs through its
plain methods, activations in reused buffers (``forward_into``/``backward_into``).
``plan="plain"`` runs every plugin's plain ``forward``/``backward``/``value_and_grad``. Both
compute the same maths; they agree to rounding wherever the plain loss does not clip.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from microfw.core.activation_layer import ActivationLayer
from microfw.core.buffers import WorkBuffer
from microfw.core.fusions import Fusion, LossFusion, Step
from microfw.core.interfaces import Activation, Array, Layer, Loss, Plugin

PlanMode = Literal["fast", "plain"]
PLAN_MODES: tuple[PlanMode, ...] = ("fast", "plain")


class LayerStep(Step):
    """A layer's own ``forward(x, training=True)`` and ``backward``."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    def forward(self, x: Array) -> Array:
        return self.layer.forward(x, True)

    def backward(self, dy: Array) -> Array:
        return self.layer.backward(dy)


class BufferedActivation(Step):
    """An activation through ``forward_into``/``backward_into``, in buffers reused per batch.

    Only where the class that defines ``forward`` (``derivative``) also defines, or inherits
    unchanged from a subclass of it, ``forward_into`` (``backward_into``): a subclass that
    changes the maths but inherits its parent's buffered methods runs the interface's
    defaults, which call its own ``forward`` and ``derivative``.
    """

    grad_is_scratch = True

    def __init__(self, activation: Activation) -> None:
        self.activation = activation
        cls = type(activation)
        self._forward_into = (
            activation.forward_into
            if _consistent(cls, "forward_into", "forward")
            else partial(Activation.forward_into, activation)
        )
        self._backward_into = (
            activation.backward_into
            if _consistent(cls, "backward_into", "derivative")
            else partial(Activation.backward_into, activation)
        )
        self._y, self._dx = WorkBuffer(), WorkBuffer()

    def forward(self, x: Array) -> Array:
        y = self._y.get(x.shape, x.dtype)
        self._forward_into(x, y)
        self._x, self._out = x, y
        return y

    def backward(self, dy: Array) -> Array:
        dx = self._dx.get(dy.shape, dy.dtype)
        self._backward_into(self._x, self._out, dy, dx)
        return dx


def _consistent(cls: type, fast: str, plain: str) -> bool:
    """Whether ``cls``'s ``fast`` method was written with (or after) its ``plain`` one."""
    fast_owner = next(c for c in cls.__mro__ if fast in c.__dict__)
    plain_owner = next(c for c in cls.__mro__ if plain in c.__dict__)
    return fast_owner is Activation or issubclass(fast_owner, plain_owner)


class Head:
    """The loss at the end of the pass: ``(value, dL/d(last step's output), y_pred)``."""

    grad_is_scratch = False

    def __init__(self, loss: Loss) -> None:
        self.loss = loss

    def __call__(self, out: Array, y: Array) -> tuple[float, Array, Array]:
        value, grad = self.loss.value_and_grad(out, y)
        return value, grad, out


class FusedHead(Head):
    """A :class:`LossFusion`: the last layer's output and the loss from that layer's input."""

    grad_is_scratch = True

    def __init__(self, loss: Loss, rule: LossFusion, last: Plugin) -> None:
        super().__init__(loss)
        self.rule, self.last = rule, last

    def __call__(self, z: Array, y: Array) -> tuple[float, Array, Array]:
        p = self.rule.forward(self.last, z)
        value, grad = self.rule.value_and_grad(self.loss, z, p, y)
        return value, grad, p


@dataclass
class Plan:
    """How one model's training pass runs: its steps, its head and the rules applied."""

    mode: PlanMode
    steps: list[Step]
    head: Head
    applied: list[tuple[str, str]] = field(default_factory=list)
    """``(layers, rule label)`` for every rule used, e.g. ``("layers[0..1]", "linear+relu")``."""


def plugin_of(layer: Layer) -> Plugin:
    """The plugin a rule's pattern names: the activation inside the core's wrapper."""
    return layer.activation if isinstance(layer, ActivationLayer) else layer


def make_plan(
    layers: Sequence[Layer],
    loss: Loss,
    rules: Sequence[Fusion | LossFusion],
    mode: PlanMode = "fast",
    parameterised: Collection[int] = (),
) -> Plan:
    """Plan ``layers`` then ``loss`` with ``rules`` (see the module docstring).

    ``parameterised`` lists the indices of layers with trainable arrays: a loss rule never
    takes such a last layer (its backward, which writes their gradients, would be skipped).
    """
    if mode not in PLAN_MODES:
        raise ValueError(f"plan must be one of {', '.join(PLAN_MODES)}, got {mode!r}")
    if mode == "plain":
        return _link(Plan(mode, [LayerStep(layer) for layer in layers], Head(loss)))
    body = list(layers)
    head: Head = Head(loss)
    applied: list[tuple[str, str]] = []
    fused_loss: list[tuple[str, str]] = []  # listed after the layers' rules: layer order
    last = plugin_of(body[-1]) if body else None
    for rule in (r for r in rules if isinstance(r, LossFusion)):
        if last is None or type(last) is not rule.last or type(loss) is not rule.loss:
            continue
        if len(body) - 1 in parameterised:
            continue
        if rule.applies is None or rule.applies(last, loss):
            head = FusedHead(loss, rule, last)
            fused_loss.append((f"layers[{len(body) - 1}]", rule.label()))
            body.pop()
            break
    fusions = sorted(
        (r for r in rules if isinstance(r, Fusion)), key=lambda r: len(r.pattern), reverse=True
    )
    steps: list[Step] = []
    i = 0
    while i < len(body):
        step = _fused(body, i, fusions, applied)
        if step is not None:
            steps.append(step[0])
            i += step[1]
            continue
        layer = body[i]
        if isinstance(layer, ActivationLayer):
            steps.append(BufferedActivation(layer.activation))
        else:
            steps.append(LayerStep(layer))
        i += 1
    return _link(Plan(mode, steps, head, applied + fused_loss))


def _fused(
    body: list[Layer], i: int, fusions: list[Fusion], applied: list[tuple[str, str]]
) -> tuple[Step, int] | None:
    for rule in fusions:
        n = len(rule.pattern)
        window = [plugin_of(layer) for layer in body[i : i + n]]
        if len(window) < n or any(
            type(p) is not c for p, c in zip(window, rule.pattern, strict=True)
        ):
            continue
        if rule.applies is not None and not rule.applies(window):
            continue
        applied.append((f"layers[{i}..{i + n - 1}]" if n > 1 else f"layers[{i}]", rule.label()))
        return rule.step(window), n
    return None


def _link(plan: Plan) -> Plan:
    """Tell each step whether its input gradient is read and whether its ``dy`` is scratch."""
    steps = plan.steps
    for i, step in enumerate(steps):
        step.needs_input_grad = i > 0
        after: Any = steps[i + 1] if i + 1 < len(steps) else plan.head
        step.dy_is_scratch = bool(after.grad_is_scratch)
    return plan
