"""The abstract interfaces every plugin implements: the plugin author's manual.

Conventions shared by all kinds:

* ``X`` is ``(n_samples, n_features)``: one row per example. A dense weight is
  ``(n_in, n_out)`` and its bias ``(n_out,)``.
* A plugin declares its parameters as annotated class attributes (``alpha: float = 0.01``).
  They form its schema: pydantic validates them strictly when the plugin is constructed
  (``Cls(alpha=0.2)``, keyword arguments only) and the spec's JSON Schema shows them. A
  parameter annotated with an interface (``init: Initializer = ref("xavier")``) refers to
  another plugin and arrives as an instance.
* Every concrete class carries a ``name``: the public name specs use. A name is API: never
  change what it computes, register a new name instead.
* ``example_params`` gives parameters the contract checks can build the plugin with (needed
  only when a parameter has no default).
* Numeric code keeps the dtype of its inputs (float64 or float32) and never uses the global
  ``numpy.random`` state: randomness comes in as an ``rng`` argument.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from microfw.core.params import interface_of, parameter_hints, ref, validate_params

Array = NDArray[np.floating[Any]]


class RNG(Protocol):
    """The random source initializers draw from (a subset of ``numpy.random.Generator``)."""

    def standard_normal(self, size: tuple[int, ...]) -> Array: ...

    def uniform(self, low: float, high: float, size: tuple[int, ...]) -> Array: ...


class Plugin:
    """Base of every plugin: parameter validation, ``get_params`` and a readable repr."""

    __microfw_interface__: ClassVar[bool] = False
    kind: ClassVar[str]
    name: ClassVar[str]
    example_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        values = validate_params(type(self), params)
        for key, value in values.items():
            setattr(self, key, value)
        self._param_names = tuple(values)

    def get_params(self) -> dict[str, Any]:
        """The parameters as JSON data: nested plugins become ``{"type": name, ...}``."""
        return {key: to_ref(getattr(self, key)) for key in self._param_names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._param_names)
        return f"{type(self).__name__}({args})"


def to_ref(value: Any) -> Any:
    """A plugin instance as spec data (``{"type": name, **params}``); other values unchanged."""
    if isinstance(value, Plugin):
        return {"type": value.name, **value.get_params()}
    return value


def _interface(kind: str):  # type: ignore[no-untyped-def]
    """Mark a class as the interface of one plugin kind."""

    def mark(cls: type) -> type:
        cls.__microfw_interface__ = True  # type: ignore[attr-defined]
        cls.kind = kind  # type: ignore[attr-defined]
        return cls

    return mark


@_interface("layer")
class Layer(Plugin, abc.ABC):
    """A step of a :class:`~microfw.Sequential` model, possibly with trainable parameters.

    Lifecycle: constructed from its parameters; :meth:`output_dim` answers width questions
    before any array exists; :meth:`build` allocates parameters once the input width is known;
    then :meth:`forward` and :meth:`backward` alternate, batch after batch.

    Gradients are **overwritten**, never accumulated: each :meth:`backward` call assigns the
    gradient of the current batch to the arrays :meth:`gradients` returns, so nobody needs to
    zero them. :meth:`parameters` and :meth:`gradients` return lists in the same, stable order;
    optimizers update the parameter arrays in place, so a layer must not rebind them.

    Arrays returned by a training-mode :meth:`forward` or by :meth:`backward` may be work
    buffers the layer reuses on its next call (callers consume them before that); an
    inference-mode forward (``training=False``) returns a fresh array.
    """

    needs_input_grad = True
    """Set to false by the model on its first layer: nobody reads that layer's ``dL/dx``, so
    :meth:`backward` may skip computing it (and return any array, e.g. ``dy``)."""

    output_is_scratch = False
    """True if the array a training-mode :meth:`forward` returns is a work buffer this layer
    never reads again (so the next layer may overwrite it in place); ``linear``'s is."""

    grad_is_scratch = False
    """True if the input gradient :meth:`backward` returns is a work buffer this layer never
    reads again (so the layer before may compute its own gradient over it in place);
    ``linear``'s and ``softmax``'s are."""

    def output_dim(self, n_in: int) -> int:
        """The output width for input width ``n_in``; raise ``ValueError`` if ``n_in`` is unfit.

        The default keeps the width (element-wise layers).
        """
        return n_in

    def build(self, n_in: int, rng: RNG, dtype: np.dtype[Any]) -> None:
        """Allocate parameters for inputs of width ``n_in`` in ``dtype``, drawing from ``rng``.

        Called once, before the first forward pass. The default allocates nothing.
        """

    def parameters(self) -> list[Array]:
        """The trainable arrays, in a stable order (for a dense layer: ``[W, b]``)."""
        return []

    def gradients(self) -> list[Array]:
        """The gradients of the last :meth:`backward`, aligned with :meth:`parameters`."""
        return []

    def adopt(self, params: list[Array], grads: list[Array]) -> None:
        """Optional: keep the parameters and gradients in the given arrays from now on.

        A model packs the parameters of its layers into one contiguous array (and the
        gradients into another) when every layer with parameters implements this, so that an
        optimizer step, a copy or a finiteness check of the whole model is one operation. It
        calls this once, after :meth:`build`, with views shaped like :meth:`parameters` and
        :meth:`gradients` and already holding their values; the layer must then read and
        write those arrays and return them from both methods. Not implementing it is fine.
        """
        raise NotImplementedError

    def defer_bias(self) -> Array | None:
        """Optional: hand the bias to the next layer, which adds it in its own pass.

        Return the bias array ``(n_out,)`` (the one the optimizer updates) and from then on
        leave it out of training-mode :meth:`forward` (inference adds it as before); or return
        None (the default) to keep it. The model asks, once after :meth:`adopt`, when the next
        layer is an activation that declares ``fuses_bias`` and works over this layer's output.
        """
        return None

    @abc.abstractmethod
    def forward(self, x: Array, training: bool = True) -> Array:
        """Map ``x`` ``(n_samples, n_in)`` to ``(n_samples, n_out)``.

        With ``training`` true, keep whatever :meth:`backward` needs (typically ``x`` itself or
        the output); with ``training`` false nothing needs to be kept.
        """

    @abc.abstractmethod
    def backward(self, dy: Array) -> Array:
        """Given ``dL/dy`` ``(n_samples, n_out)`` of the last forward, return ``dL/dx``.

        Also overwrite the parameter gradients (see the class docstring). ``dy`` already
        carries the loss's mean over the batch; do not divide by ``n_samples`` again.
        """


@_interface("activation")
class Activation(Plugin, abc.ABC):
    """An element-wise function ``y = f(x)``; the core wraps it as a parameter-free layer.

    Functions that mix elements of a row (softmax) are layers, not activations.
    """

    @abc.abstractmethod
    def forward(self, x: Array) -> Array:
        """``f(x)`` element-wise, same shape and dtype as ``x``."""

    @abc.abstractmethod
    def derivative(self, x: Array, y: Array) -> Array:
        """``f'(x)`` element-wise, given ``x`` and ``y = f(x)`` (so sigmoid can use ``y(1-y)``)."""

    derivative_from_output = False
    """True if ``derivative(x, y)`` depends on ``x`` only through ``y = f(x)`` (sigmoid, tanh,
    relu): the core may then compute ``y`` over ``x`` with ``forward_into(x, x)`` and call
    ``backward_into(y, y, dy, out)``, saving a buffer. The contract checks verify the claim."""

    # Optional fast paths. The defaults call the two methods above; an activation may override
    # them to work in the caller's buffers. The contract checks compare them with the above.

    def forward_into(self, x: Array, out: Array) -> None:
        """Write ``f(x)`` into ``out`` (same shape and dtype as ``x``; ``x`` itself only when
        :attr:`derivative_from_output` is true)."""
        np.copyto(out, self.forward(x))

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        """Write ``dy * f'(x)`` into ``out``; ``out`` is none of ``x``, ``y``, ``dy`` (``dy``
        itself only when :attr:`backward_in_place` is true)."""
        np.multiply(dy, self.derivative(x, y), out=out)

    backward_in_place = False
    """True if ``backward_into(x, y, dy, dy)`` works, the result overwriting ``dy``: the core
    then computes the gradient over the one the next layer returned (when that layer declares
    ``grad_is_scratch``), keeping fewer arrays in cache. The contract checks verify it."""

    def forward_bias_into(self, x: Array, bias: Array, out: Array) -> None:
        """Write ``f(x + bias)`` into ``out``, ``bias`` ``(n_out,)`` added to every row of a
        2-D ``x`` (``out`` may be ``x``). Called only when :attr:`fuses_bias` is true, so an
        activation declaring it overrides this default."""
        np.copyto(out, self.forward(x + bias))

    fuses_bias = False
    """True if :meth:`forward_bias_into` adds the bias in the same pass as ``f`` (a compiled
    kernel), so that it beats the bias add and :meth:`forward_into` apart. The core then
    hands it the bias of the layer before (see :meth:`Layer.defer_bias`) when it computes
    ``y`` over that layer's output (which needs :attr:`derivative_from_output`). The contract
    checks then compare the result with ``forward(x + bias)``."""


@_interface("loss")
class Loss(Plugin, abc.ABC):
    """A training objective comparing predictions with targets, both ``(n_samples, n_outputs)``.

    :meth:`value` is a **mean over the batch** (each plugin documents its exact reduction, e.g.
    ``1/(2m)`` times the sum of squares), so losses of batches of different sizes compare;
    :meth:`grad` is the gradient of exactly that value, so it already contains the ``1/m``.
    """

    @abc.abstractmethod
    def value(self, y_pred: Array, y_true: Array) -> float:
        """The loss of the batch, a Python float."""

    @abc.abstractmethod
    def grad(self, y_pred: Array, y_true: Array) -> Array:
        """``d value / d y_pred``, shape and dtype of ``y_pred``."""

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        """``(value, grad)`` in one call; override to share work between the two.

        The fit loop calls this once per batch. The gradient array may be a work buffer the
        loss reuses on its next call.
        """
        return self.value(y_pred, y_true), self.grad(y_pred, y_true)

    def fuses_with(self, layer: Layer) -> bool:
        """Optional fusion: whether :meth:`fused_value_and_grad` handles ``layer`` as the last
        layer (e.g. ``bce`` with a sigmoid, whose combined gradient is ``(p - y) / n``).

        Only for a layer without parameters; the model then skips its ``backward``.
        """
        return False

    def fused_value_and_grad(
        self, layer: Layer, y_pred: Array, y_true: Array
    ) -> tuple[float, Array] | None:
        """``(value, d value / d input of layer)`` where ``y_pred`` is ``layer``'s output, or
        None to decline this batch (the model then calls :meth:`value_and_grad` and
        ``layer.backward``). Called only when :meth:`fuses_with` is true. It must agree with
        that unfused path to rounding (:func:`microfw.testing.check_fast_paths` compares them
        at points inside the loss's domain). The gradient array is handed to the model, which
        may overwrite it: return a new array or a buffer the loss does not read again.
        """
        return None

    def check_output_dim(self, n_outputs: int) -> None:
        """Raise ``ValueError`` if a model with ``n_outputs`` outputs cannot use this loss."""

    def check_targets(self, y_true: Array) -> None:
        """Raise ``ValueError`` naming the offending values if targets lie outside the domain."""

    def decision_threshold(self) -> float:
        """The model output at and above which a one-column prediction counts as class 1.

        Used by accuracy (``y_pred >= threshold``). The default 0.5 suits outputs that are
        probabilities; a loss computed from logits (e.g. ``bce`` with ``from_logits``) returns
        0.0, where the sigmoid crosses 0.5.
        """
        return 0.5


@_interface("initializer")
class Initializer(Plugin, abc.ABC):
    """Draws initial parameter values: ``(shape, rng) -> array`` of float64.

    For a weight, ``shape`` is ``(n_in, n_out)``, so fan-in is ``shape[0]`` and fan-out
    ``shape[-1]``; for a bias ``(n_out,)`` both are ``shape[0]``. Draw only from ``rng`` with
    ``rng.standard_normal(shape)`` or ``rng.uniform(low, high, shape)``: microfw's legacy mode
    passes an adapter that reproduces the seed tutorials' draws.
    """

    @abc.abstractmethod
    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        """A new float64 array of ``shape``."""

    def variance(self, fan_in: int, fan_out: int) -> float | None:
        """The variance the values are drawn with, for the contract checks (None: unstated)."""
        return None


@_interface("schedule")
class Schedule(Plugin, abc.ABC):
    """Learning-rate annealing: the rate after ``t`` completed epochs or optimizer steps.

    ``per`` says which counter ``t`` is: ``"epoch"`` (the rate changes between epochs) or
    ``"step"`` (it changes after every mini-batch update).
    """

    per: Literal["epoch", "step"] = "epoch"

    @abc.abstractmethod
    def __call__(self, lr0: float, t: int) -> float:
        """The rate after ``t >= 0`` epochs or steps, from initial rate ``lr0`` (t=0 gives lr0)."""


@_interface("optimizer")
class Optimizer(Plugin, abc.ABC):
    """Updates parameters in place from their gradients.

    The fit loop calls :meth:`step` once per mini-batch and :meth:`end_epoch` after each
    epoch; the learning rate follows ``schedule``. State (momentum buffers...) is created
    lazily on the first step, one entry per parameter in the order given, and reused after.
    """

    lr: float = 0.01
    schedule: Schedule = ref("constant")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.steps = 0
        self.epochs = 0

    @property
    def learning_rate(self) -> float:
        """The rate the next step uses."""
        t = self.steps if self.schedule.per == "step" else self.epochs
        return self.schedule(self.lr, t)

    def step(self, params: list[Array], grads: list[Array]) -> None:
        """Update every array of ``params`` in place, using ``grads`` aligned with it."""
        # A Python float: a NumPy float64 rate would turn float32 arithmetic into float64.
        self.update(params, grads, float(self.learning_rate))
        self.steps += 1

    def end_epoch(self) -> None:
        """Advance the epoch counter of a per-epoch schedule."""
        self.epochs += 1

    def reset_state(self) -> None:
        """Forget the state past gradients built up (momentum buffers...), keeping the step
        and epoch counters. ``fit`` calls it when training diverges, as that state holds the
        diverging updates; the next step starts afresh. The default has no state to forget."""

    @abc.abstractmethod
    def update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        """Apply one update with learning rate ``lr``, in place."""


INTERFACES: dict[str, type[Plugin]] = {
    cls.kind: cls for cls in (Layer, Activation, Loss, Initializer, Optimizer, Schedule)
}
"""The plugin kinds and their interfaces, in the order specs mention them."""


def parameter_interfaces(cls: type) -> dict[str, type]:
    """The parameters of ``cls`` that refer to other plugins, with the interface they expect."""
    out = {}
    for name, hint in parameter_hints(cls).items():
        interface = interface_of(hint)
        if interface is not None:
            out[name] = interface
    return out
