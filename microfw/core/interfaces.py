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
import math
from typing import Annotated, Any, ClassVar, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from microfw.core.params import interface_of, parameter_hints, ref, validate_params
from microfw.errors import PluginError

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


class Store(Protocol):
    """Where a layer declares its arrays while it is built: the model's parameter store.

    The model owns the memory: one flat array of parameters, one of their gradients and one of
    non-trainable state (running statistics...), in the model's dtype. :meth:`add` returns a
    view into the parameter array, :meth:`grad` the view of its gradient, :meth:`add_state` a
    view into the state array. Names are local to the layer (``"W"``, ``"b"``); the model
    prefixes them (``layers.0.W``) in model files and :meth:`~microfw.Sequential.weight_names`.
    """

    @property
    def dtype(self) -> np.dtype[Any]:
        """The model's dtype (float64 or float32)."""
        ...

    @property
    def rng(self) -> RNG:
        """The initialisation stream (for a layer that draws more than :meth:`add` does)."""
        ...

    def add(
        self,
        name: str,
        shape: tuple[int, ...],
        init: InitLike,
        regularizer: Regularizer | None = None,
    ) -> Array:
        """Declare a trainable array of ``shape`` initialised by ``init`` and return it.

        ``init`` is an :class:`Initializer` (or any ``(shape, rng) -> array`` callable) or a
        number every element starts at. Optimizers update the returned array in place: keep
        it, never rebind or replace it. A ``regularizer`` adds its penalty on this array to
        the training loss and its gradient to the array's gradient: the model does it after
        every backward pass, so the layer's own ``backward`` never sees it.
        """
        ...

    def grad(self, name: str) -> Array:
        """The gradient array of the trainable array ``name`` (same shape), which
        :meth:`Layer.backward` overwrites."""
        ...

    def add_state(self, name: str, shape: tuple[int, ...], init: InitLike) -> Array:
        """Declare a non-trainable array (saved and loaded with the weights, never stepped by
        an optimizer) and return it; update it in place."""
        ...

    def stream(self, name: str) -> np.random.Generator:
        """A random stream of the layer's own (dropout masks...), derived from the model's
        seed and the layer's full name (``layers.3.mask``), so that a run repeats exactly and
        no other stream (initialisation, shuffling) shifts when a layer draws. Keep it: every
        call returns a new generator in the same starting state."""
        ...


InitLike = Any
"""An :class:`Initializer`, a ``(shape, rng) -> array`` callable or a number."""


@_interface("layer")
class Layer(Plugin, abc.ABC):
    """A step of a :class:`~microfw.Sequential` model, possibly with trainable parameters.

    Lifecycle: constructed from its parameters; :meth:`output_dim` answers width questions
    before any array exists; :meth:`build` declares the layer's arrays in the model's
    :class:`Store` once the input width is known; then :meth:`forward` and :meth:`backward`
    alternate, batch after batch.

    The model owns the arrays: ``self.W = store.add("W", (n_in, units), self.init)`` and
    ``self.dW = store.grad("W")``. Gradients are **overwritten**, never accumulated: each
    :meth:`backward` assigns the gradient of the current batch to the gradient arrays, so
    nobody needs to zero them. Optimizers update the parameter arrays in place.

    Arrays returned by :meth:`forward` with ``training=True`` or by :meth:`backward` may be
    work buffers the layer reuses on its next call (callers consume them before that);
    ``training=False`` returns a fresh array.

    **Training mode.** ``forward(x, training)`` says which mode the model runs in: ``fit``
    runs its batches with ``training=True`` (followed by :meth:`backward`); validation,
    ``evaluate`` and ``predict`` call ``training=False`` (inference). A layer whose two modes
    compute different things (``dropout`` draws masks in training only; ``batch_norm`` uses
    batch statistics in training and running statistics in inference) sets
    :attr:`modes_differ`; an inference forward never changes the model (parameters, state,
    random streams) and is repeatable.

    Speed is not the layer's business: fused and in-place execution are rules registered
    with the ``register_fusions`` hook (see :mod:`microfw.core.fusions`).
    """

    output_range: ClassVar[tuple[float, float] | None] = None
    """Lint metadata: the interval every output lies in (``(0.0, 1.0)`` for softmax,
    ``(-inf, inf)`` for linear); None when unknown or unstated. The spec linter
    (:mod:`microfw.spec.lint`) compares it with what the loss expects."""
    output_kind: ClassVar[str | None] = None
    """Lint metadata: ``"distribution"`` when each output row sums to 1 (softmax),
    ``"probability"`` when each output is a probability on its own (sigmoid), else None."""
    last_layer_advice: ClassVar[str | None] = None
    """Lint metadata: the warning to give when this layer ends a model (dropout), or None."""
    modes_differ: ClassVar[bool] = False
    """True when ``forward(x, training=True)`` computes something else than
    ``forward(x, training=False)`` (dropout, batch normalisation); the contract checks then
    check each mode on its own instead of comparing them."""

    def output_dim(self, n_in: int) -> int:
        """The output width for input width ``n_in``; raise ``ValueError`` if ``n_in`` is unfit.

        The default keeps the width (element-wise layers).
        """
        return n_in

    def build(self, n_in: int, store: Store) -> None:
        """Declare the arrays for inputs of width ``n_in`` in ``store`` (see :class:`Store`).

        Called by the model before the first forward pass, possibly twice (once to count the
        arrays, once to bind them): declare the same arrays each time and keep no other state.
        The default declares nothing.
        """

    @abc.abstractmethod
    def forward(self, x: Array, training: bool = False) -> Array:
        """Map ``x`` ``(n_samples, n_in)`` to ``(n_samples, n_out)``.

        With ``training`` true, keep whatever :meth:`backward` needs (typically ``x`` itself or
        the output); with ``training`` false (inference, the default) nothing needs to be kept.
        """

    @abc.abstractmethod
    def backward(self, dy: Array) -> Array:
        """Given ``dL/dy`` ``(n_samples, n_out)`` of the last training forward, return ``dL/dx``.

        Also overwrite the parameter gradients (see the class docstring). ``dy`` already
        carries the loss's mean over the batch; do not divide by ``n_samples`` again.
        """


@_interface("activation")
class Activation(Plugin, abc.ABC):
    """An element-wise function ``y = f(x)``; the core wraps it as a parameter-free layer.

    Functions that mix elements of a row (softmax) are layers, not activations.

    Lint metadata (class attributes, read by :mod:`microfw.spec.lint`): :attr:`output_range`
    and :attr:`output_kind` as for :class:`Layer`, and :attr:`recommended_init`.
    """

    output_range: ClassVar[tuple[float, float] | None] = None
    """The interval every output lies in, e.g. ``(0.0, 1.0)`` for sigmoid; None: unstated."""
    output_kind: ClassVar[str | None] = None
    """``"probability"`` when each output is a probability (sigmoid), else None."""
    recommended_init: ClassVar[tuple[str, ...]] = ()
    """Initializer names suited to the layer right before this activation (``("he",
    "he_uniform")`` for relu); the linter suggests the first when that layer uses another.
    Empty: no advice."""

    @abc.abstractmethod
    def forward(self, x: Array) -> Array:
        """``f(x)`` element-wise, same shape and dtype as ``x``."""

    @abc.abstractmethod
    def derivative(self, x: Array, y: Array) -> Array:
        """``f'(x)`` element-wise, given ``x`` and ``y = f(x)`` (so sigmoid can use ``y(1-y)``)."""

    # Optional: the same maths in the caller's buffers. The defaults call the two methods
    # above; the contract checks compare an override with them.

    def forward_into(self, x: Array, out: Array) -> None:
        """Write ``f(x)`` into ``out`` (same shape and dtype as ``x``, never ``x`` itself)."""
        np.copyto(out, _same_shape(self, "forward", self.forward(x), x))

    def backward_into(self, x: Array, y: Array, dy: Array, out: Array) -> None:
        """Write ``dy * f'(x)`` into ``out``, which is none of ``x``, ``y``, ``dy``."""
        np.multiply(dy, _same_shape(self, "derivative", self.derivative(x, y), x), out=out)


def _same_shape(plugin: Plugin, method: str, result: Any, x: Array) -> Any:
    """``result`` if it has ``x``'s shape; else a :class:`PluginError` (no silent broadcast)."""
    if np.shape(result) != x.shape:
        raise PluginError(
            f"activation {plugin.name!r}: {method} returned shape {np.shape(result)} for an "
            f"input of shape {x.shape}; an element-wise function keeps the shape"
        )
    return result


@_interface("loss")
class Loss(Plugin, abc.ABC):
    """A training objective comparing predictions with targets, both ``(n_samples, n_outputs)``.

    :meth:`value` is a **mean over the batch** (each plugin documents its exact reduction, e.g.
    ``1/(2m)`` times the sum of squares), so losses of batches of different sizes compare;
    :meth:`grad` is the gradient of exactly that value, so it already contains the ``1/m``.

    Lint metadata (class attributes, read by :mod:`microfw.spec.lint`):
    :attr:`prediction_range` and :attr:`expects`.
    """

    prediction_range: ClassVar[tuple[float, float] | None] = None
    """The interval predictions must lie in (``(0.0, 1.0)`` for a loss on probabilities);
    None: any. :meth:`expected_range` may refine it per instance."""
    expects: ClassVar[str | None] = None
    """``"probability"`` (each output a probability on its own, bce) or ``"distribution"``
    (rows summing to 1, cross-entropy): the ``output_kind`` the last layer should have."""

    def expected_range(self) -> tuple[float, float] | None:
        """The interval this instance's predictions must lie in (default
        :attr:`prediction_range`; ``bce`` with ``from_logits`` takes any value)."""
        return self.prediction_range

    def target_dim(self, n_outputs: int) -> int:
        """The number of target columns for a model with ``n_outputs`` outputs (default: the
        same). A loss on integer class labels returns 1: its targets are ``(n_samples, 1)``
        labels in ``0 .. n_outputs - 1`` (a 1-D ``y`` is accepted as that column)."""
        return n_outputs

    @abc.abstractmethod
    def value(self, y_pred: Array, y_true: Array) -> float:
        """The loss of the batch, a Python float."""

    @abc.abstractmethod
    def grad(self, y_pred: Array, y_true: Array) -> Array:
        """``d value / d y_pred``, shape and dtype of ``y_pred``."""

    def value_and_grad(self, y_pred: Array, y_true: Array) -> tuple[float, Array]:
        """``(value, grad)`` in one call; override to share work between the two.

        The fit loop calls this once per batch (unless a fusion rule computes both from the
        last layer's input). The gradient array may be a work buffer the loss reuses on its
        next call.
        """
        return self.value(y_pred, y_true), self.grad(y_pred, y_true)

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
    starts_at_lr0: ClassVar[bool] = True
    """False for a schedule that deliberately starts below ``lr0`` (a warm-up): the contract
    check then asks the rate at ``t=0`` to lie in ``[0, lr0]`` instead of being ``lr0``."""

    @abc.abstractmethod
    def __call__(self, lr0: float, t: int) -> float:
        """The rate after ``t >= 0`` epochs or steps, from initial rate ``lr0`` (t=0 gives lr0)."""


@_interface("regularizer")
class Regularizer(Plugin, abc.ABC):
    """A penalty on one parameter array, added to the training loss (Keras's regularizers).

    Layers take them as parameters (``kernel_regularizer: Regularizer | None = None``) and pass
    them to :meth:`Store.add`; the model adds :meth:`value` to every batch's loss (so
    ``History``'s ``loss`` includes it, as in Keras) and :meth:`grad` to the array's gradient.
    """

    @abc.abstractmethod
    def value(self, w: Array) -> float:
        """The penalty on ``w``, a Python float."""

    @abc.abstractmethod
    def grad(self, w: Array) -> Array:
        """``d value / d w``, shape and dtype of ``w``."""

    def add_grad(self, w: Array, g: Array) -> None:
        """``g += grad(w)`` in place; override to avoid the temporary."""
        g += self.grad(w)


@_interface("optimizer")
class Optimizer(Plugin, abc.ABC):
    """Updates parameters in place from their gradients.

    The fit loop calls :meth:`step` once per mini-batch and :meth:`end_epoch` after each
    epoch; the learning rate follows ``schedule``. State (momentum buffers...) is created
    lazily on the first step and reused after; :meth:`state_arrays` exposes it (one array per
    state quantity, flat over all the parameters in the order given) so a model file can
    save it and :meth:`load_state_arrays` put it back.

    Gradient clipping happens here, in :meth:`step`, for every optimizer, before
    :meth:`update`: ``clip_norm`` scales all the gradients together as
    ``torch.nn.utils.clip_grad_norm_`` does (total 2-norm ``n`` over every parameter; when
    ``n > clip_norm`` each gradient is multiplied by ``clip_norm / (n + 1e-6)``), then
    ``clip_value`` clips each element to ``[-clip_value, clip_value]``
    (``torch.nn.utils.clip_grad_value_``). The gradient arrays are clipped in place.
    """

    lr: float = 0.01
    schedule: Schedule = ref("constant")
    clip_norm: Annotated[float, Field(gt=0)] | None = None
    clip_value: Annotated[float, Field(gt=0)] | None = None

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
        """Update every array of ``params`` in place, using ``grads`` aligned with it
        (clipped first, in place, when ``clip_norm`` or ``clip_value`` is set)."""
        if self.clip_norm is not None:
            clip_grad_norm(grads, self.clip_norm)
        if self.clip_value is not None:
            for g in grads:
                np.clip(g, -self.clip_value, self.clip_value, out=g)
        # A Python float: a NumPy float64 rate would turn float32 arithmetic into float64.
        self._rate = rate = float(self.learning_rate)
        self.update(params, grads, rate)
        self.steps += 1

    def last_rate(self) -> float:
        """The rate the latest step used (the next one's before any step)."""
        if "_rate" in self.__dict__:
            return float(self.__dict__["_rate"])
        t = self.steps - 1 if self.schedule.per == "step" else self.epochs
        return float(self.schedule(self.lr, max(t, 0)))

    def end_epoch(self) -> None:
        """Advance the epoch counter of a per-epoch schedule."""
        self.epochs += 1

    def reset_state(self) -> None:
        """Forget the state past gradients built up (momentum buffers...), keeping the step
        and epoch counters. ``fit`` calls it when training diverges, as that state holds the
        diverging updates; the next step starts afresh. The default has no state to forget."""

    def state_arrays(self) -> dict[str, Array]:
        """The state built so far, by name (``{"m": ..., "v": ...}``): one flat array per
        quantity over all the parameters (1-D, their size and dtype, which loading checks;
        0-d arrays such as a step count are kept as they are), or ``{}`` before the first step.
        The default (no state) is ``{}``. Names are identifiers; the arrays are the live ones
        (copy to keep)."""
        return {}

    def load_state_arrays(self, arrays: dict[str, Array]) -> None:
        """Take ``arrays`` (as :meth:`state_arrays` returned them) as the state the next step
        continues from; raise ``ValueError`` naming what does not fit. The default accepts only
        ``{}``."""
        if arrays:
            raise ValueError(f"optimizer {self.name!r} keeps no state, got arrays {sorted(arrays)}")

    @abc.abstractmethod
    def update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        """Apply one update with learning rate ``lr``, in place."""


def clip_grad_norm(grads: list[Array], max_norm: float) -> float:
    """Scale ``grads`` in place so that their total 2-norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_``: with ``n`` the 2-norm of all the gradients together,
    multiply each by ``max_norm / (n + 1e-6)`` when that is below 1. Returns ``n``."""
    total = math.sqrt(sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= coef
    return total


@_interface("metric")
class Metric(Plugin, abc.ABC):
    """A score of predictions against targets, accumulated batch by batch.

    ``fit`` (per epoch, on the training batches and on the validation set), ``evaluate`` and
    the CLI call :meth:`start` once, :meth:`update` for every batch, then :meth:`result`.
    Arrays handed to :meth:`update` may be work buffers reused for the next batch: copy what
    you keep, and keep only what the score needs (counts and sums where the metric allows).
    The result is logged under the metric's ``name`` (``val_<name>`` on validation data).
    """

    greater_is_better: ClassVar[bool] = True
    """Whether a larger result is better (``EarlyStopping(mode="auto")`` reads it)."""

    @abc.abstractmethod
    def start(self, loss: Loss, y_true: Array) -> None:
        """Forget earlier batches. ``loss`` is the model's (its
        :meth:`~Loss.decision_threshold` says where class 1 starts for one output);
        ``y_true`` holds every target the coming batches will show, to choose how to read
        them (one-hot rows, labels, 0/1 columns); do not keep it. Raise ``ValueError`` if the
        metric cannot score such targets."""

    @abc.abstractmethod
    def update(self, y_pred: Array, y_true: Array) -> None:
        """Add one batch: ``y_pred`` ``(m, n_outputs)``, ``y_true`` as the model's targets."""

    @abc.abstractmethod
    def result(self) -> float:
        """The score of every batch since :meth:`start`, a Python float."""


INTERFACES: dict[str, type[Plugin]] = {
    cls.kind: cls
    for cls in (Layer, Activation, Loss, Initializer, Optimizer, Schedule, Regularizer, Metric)
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
