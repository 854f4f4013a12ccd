"""The model's parameter store: one flat array of parameters, one of gradients, one of state.

Layers declare their arrays while they are built (``self.W = store.add("W", shape, init)``);
the store hands out views into three flat arrays it owns, in the model's dtype:

* ``params``: every trainable array, layer after layer, in declaration order;
* ``grads``: their gradients, aligned element for element with ``params``;
* ``state``: non-trainable arrays (running statistics), saved with the weights, never stepped.

So an optimizer step, a snapshot, a finiteness check or a save of the whole model is one
operation on one array. Building takes two passes over the layers (one to count, one to bind
the views); :meth:`Layer.build` must declare the same arrays both times.

Layers written for microfw 0.1 (``build(n_in, rng, dtype)``, ``parameters()``,
``gradients()``) keep their own arrays; the store mirrors them (copying their gradients in
after ``backward`` and the parameters back after every update), with a ``DeprecationWarning``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from microfw.core.interfaces import RNG, Array, Layer, Regularizer
from microfw.core.rng import named_stream
from microfw.errors import PluginError


@dataclass(frozen=True)
class Slot:
    """One declared array: its full name, shape, place in a flat array and whether it trains."""

    name: str
    shape: tuple[int, ...]
    offset: int
    trainable: bool

    @property
    def size(self) -> int:
        """The number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))


class _Declarations:
    """What one layer declared: ordered slots by local name, with their initialisers."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: list[tuple[str, tuple[int, ...], Any, bool]] = []

    def signature(self) -> list[tuple[str, tuple[int, ...], bool]]:
        return [(n, s, t) for n, s, _, t in self.items]


class _LayerStore:
    """The :class:`~microfw.core.interfaces.Store` one layer sees while it is built."""

    def __init__(
        self,
        owner: ParameterStore,
        prefix: str,
        bind: bool,
        expected: list[tuple[str, tuple[int, ...], bool]] | None = None,
        layer_name: str = "",
    ) -> None:
        self._layer_name = layer_name
        self._owner = owner
        self._declared = _Declarations(prefix)
        self._bind = bind
        self._expected = expected
        self._grads: dict[str, Array] = {}

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._owner.dtype

    @property
    def rng(self) -> RNG:
        return self._owner.rng

    def add(
        self,
        name: str,
        shape: tuple[int, ...],
        init: Any,
        regularizer: Regularizer | None = None,
    ) -> Array:
        if regularizer is not None and not isinstance(regularizer, Regularizer):
            raise PluginError(
                f"{self._declared.prefix}.{name}: regularizer must be a Regularizer or None, "
                f"got {regularizer!r}"
            )
        value = self._declare(name, shape, init, trainable=True)
        if regularizer is not None and self._bind:
            where = f"{self._declared.prefix}.{name}"
            self._owner.regularized.append((where, value, self._grads[name], regularizer))
        return value

    def add_state(self, name: str, shape: tuple[int, ...], init: Any) -> Array:
        return self._declare(name, shape, init, trainable=False)

    def stream(self, name: str) -> np.random.Generator:
        where = f"{self._declared.prefix}.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"{where}: stream names must be identifiers, got {name!r}")
        generator = self._owner.stream(where)
        if self._bind:
            self._owner.streams[where] = generator
        return generator

    def grad(self, name: str) -> Array:
        if name not in self._grads:
            known = [n for n, *_ in self._declared.items]
            raise PluginError(
                f"{self._declared.prefix}: grad({name!r}) before add({name!r}) "
                f"(declared trainable arrays: {known})"
            )
        return self._grads[name]

    def _declare(self, name: str, shape: tuple[int, ...], init: Any, *, trainable: bool) -> Array:
        where = f"{self._declared.prefix}.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"{where}: array names must be identifiers, got {name!r}")
        if any(n == name for n, *_ in self._declared.items):
            raise PluginError(f"{where}: declared twice")
        try:
            shape = tuple(int(d) for d in shape)
        except TypeError:
            raise PluginError(f"{where}: shape must be a tuple of ints, got {shape!r}") from None
        if any(d < 0 for d in shape):
            raise PluginError(f"{where}: negative dimension in shape {shape}")
        self._declared.items.append((name, shape, init, trainable))
        if not self._bind:  # counting pass: placeholders, nothing drawn
            value = np.zeros(shape, self.dtype)
            if trainable:
                self._grads[name] = np.zeros(shape, self.dtype)
            return value
        self._check_counted(shape, trainable)
        value, grad = self._owner._bind(where, shape, trainable)
        value[...] = _initial(where, init, shape, self._owner.rng, self.dtype)
        if trainable:
            assert grad is not None
            self._grads[name] = grad
        return value

    def _check_counted(self, shape: tuple[int, ...], trainable: bool) -> None:
        """The binding pass must repeat the counting pass, array for array."""
        expected, got = self._expected or [], self._declared.signature()
        if got != expected[: len(got)]:
            raise PluginError(
                f"{self._declared.prefix}: layer {self._layer_name!r} declared different arrays "
                f"in its two build() calls ({expected} then {got}...); build() must declare "
                "the same arrays every time"
            )


def _initial(where: str, init: Any, shape: tuple[int, ...], rng: RNG, dtype: Any) -> Array:
    if isinstance(init, Real):
        return np.full(shape, float(init), dtype)
    if not callable(init):
        raise PluginError(
            f"{where}: init must be an Initializer, a (shape, rng) -> array callable or a "
            f"number, got {init!r}"
        )
    value = np.asarray(init(shape, rng))
    if value.shape != shape:
        raise PluginError(f"{where}: the initializer returned shape {value.shape}, not {shape}")
    with np.errstate(over="ignore"):
        return value.astype(dtype, copy=False)


class ParameterStore:
    """The flat arrays of one model and the names of the views into them.

    Args:
        dtype: the model's dtype.
        rng: the initialisation stream layers draw their initial values from.
        seeds: the seed sequence layers' own streams (:meth:`stream`) derive from; None
            draws fresh entropy.
    """

    def __init__(
        self, dtype: np.dtype[Any], rng: RNG, seeds: np.random.SeedSequence | None = None
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.rng = rng
        self.seeds = seeds if seeds is not None else np.random.SeedSequence()
        self.streams: dict[str, np.random.Generator] = {}
        """The streams layers took while being bound, by full name."""
        self.params: Array = np.zeros(0, self.dtype)
        self.grads: Array = np.zeros(0, self.dtype)
        self.state: Array = np.zeros(0, self.dtype)
        self.slots: dict[str, Slot] = {}
        self.regularized: list[tuple[str, Array, Array, Regularizer]] = []
        """``(name, array, gradient, regularizer)`` of every array declared with one."""
        self._views: dict[str, Array] = {}
        self._grad_views: dict[str, Array] = {}
        self._mirrors: list[tuple[list[Array], list[Array], list[Array], list[Array]]] = []
        self._cursor = [0, 0]

    # -- building -------------------------------------------------------------------------

    def build(self, layers: list[tuple[str, Layer, int]]) -> None:
        """Build every ``(prefix, layer, n_in)`` into this store (two passes, see module doc)."""
        counted = []
        n_params = n_state = 0
        for prefix, layer, n_in in layers:
            if _is_legacy(layer):
                shapes = _legacy_shapes(layer, n_in, self.dtype)
                counted.append([(str(j), s, True) for j, s in enumerate(shapes)])
                n_params += sum(int(np.prod(s, dtype=np.int64)) for s in shapes)
                continue
            scope = _LayerStore(self, prefix, bind=False)
            layer.build(n_in, scope)
            counted.append(scope._declared.signature())
            for _, shape, trainable in counted[-1]:
                size = int(np.prod(shape, dtype=np.int64))
                if trainable:
                    n_params += size
                else:
                    n_state += size
        self.params = np.zeros(n_params, self.dtype)
        self.grads = np.zeros(n_params, self.dtype)
        self.state = np.zeros(n_state, self.dtype)
        self._cursor = [0, 0]
        self.regularized = []
        for (prefix, layer, n_in), expected in zip(layers, counted, strict=True):
            if _is_legacy(layer):
                self._adopt_legacy(prefix, layer, n_in)
                continue
            scope = _LayerStore(self, prefix, bind=True, expected=expected, layer_name=layer.name)
            layer.build(n_in, scope)
            if scope._declared.signature() != expected:
                raise PluginError(
                    f"{prefix}: layer {layer.name!r} declared different arrays in its two "
                    f"build() calls ({expected} then {scope._declared.signature()}); build() "
                    "must declare the same arrays every time"
                )

    def _bind(
        self, name: str, shape: tuple[int, ...], trainable: bool
    ) -> tuple[Array, Array | None]:
        size = int(np.prod(shape, dtype=np.int64))
        which = 0 if trainable else 1
        offset = self._cursor[which]
        self._cursor[which] += size
        flat = self.params if trainable else self.state
        view = flat[offset : offset + size].reshape(shape)
        grad = self.grads[offset : offset + size].reshape(shape) if trainable else None
        self.slots[name] = Slot(name, shape, offset, trainable)
        self._views[name] = view
        if grad is not None:
            self._grad_views[name] = grad
        return view, grad

    def _adopt_legacy(self, prefix: str, layer: Layer, n_in: int) -> None:
        legacy: Any = layer
        warnings.warn(
            f"{prefix}: layer {layer.name!r} uses the microfw 0.1 contract (build(n_in, rng, "
            "dtype), parameters(), gradients()); its arrays are mirrored in the model's store. "
            "Declare them with store.add() instead (see CHANGELOG.md)",
            DeprecationWarning,
            stacklevel=4,
        )
        legacy.build(n_in, self.rng, self.dtype)
        own_params, own_grads = list(legacy.parameters()), list(legacy.gradients())
        views, grads = [], []
        for j, p in enumerate(own_params):
            view, grad = self._bind(f"{prefix}.{j}", np.shape(p), True)
            view[...] = p
            views.append(view)
            grads.append(grad)
        self._mirrors.append((own_params, own_grads, views, grads))  # type: ignore[arg-type]

    # -- regularisation --------------------------------------------------------------------

    def penalty(self) -> float:
        """The sum of the regularizers' penalties on the current parameters (0.0 without)."""
        return float(sum(reg.value(w) for _, w, _, reg in self.regularized))

    def add_penalty_gradients(self) -> float:
        """Add each regularizer's gradient to its array's gradient; return :meth:`penalty`.

        The model calls it after every backward pass (the gradients hold the loss's then).
        """
        total = 0.0
        for _, w, g, reg in self.regularized:
            total += reg.value(w)
            reg.add_grad(w, g)
        return total

    def stream(self, name: str) -> np.random.Generator:
        """A new generator for the full name ``name``, in a state that depends only on the
        seed sequence and the name (:func:`microfw.core.rng.named_stream`)."""
        return named_stream(self.seeds, name)

    # -- legacy mirrors --------------------------------------------------------------------

    @property
    def mirrored(self) -> bool:
        """Whether some layer keeps its own arrays (the 0.1 contract)."""
        return bool(self._mirrors)

    def pull_gradients(self) -> None:
        """Copy mirrored layers' gradients into :attr:`grads` (after ``backward``)."""
        for _, own_grads, _, grads in self._mirrors:
            for g, view in zip(own_grads, grads, strict=True):
                view[...] = g

    def push_parameters(self) -> None:
        """Copy :attr:`params` into mirrored layers' own arrays (after an update)."""
        for own_params, _, views, _ in self._mirrors:
            for p, view in zip(own_params, views, strict=True):
                p[...] = view

    # -- names -----------------------------------------------------------------------------

    def names(self, *, trainable: bool | None = None) -> list[str]:
        """The full names of the arrays, in store order (trainable first)."""
        slots = sorted(self.slots.values(), key=lambda s: (not s.trainable, s.offset))
        return [s.name for s in slots if trainable is None or s.trainable == trainable]

    def __getitem__(self, name: str) -> Array:
        return self._views[name]

    def grad(self, name: str) -> Array:
        """The gradient view of the trainable array ``name``."""
        return self._grad_views[name]

    def items(self, *, trainable: bool | None = None) -> Iterator[tuple[str, Array]]:
        """``(name, view)`` pairs in store order."""
        for name in self.names(trainable=trainable):
            yield name, self._views[name]


def _is_legacy(layer: Layer) -> bool:
    """A layer written for microfw 0.1: ``build(n_in, rng, dtype)`` with ``parameters()``."""
    if not callable(getattr(layer, "parameters", None)):
        return False
    try:
        params = inspect.signature(layer.build).parameters
    except (TypeError, ValueError):
        return False
    return len(params) == 3


def _legacy_shapes(layer: Layer, n_in: int, dtype: np.dtype[Any]) -> list[tuple[int, ...]]:
    """The shapes of a 0.1 layer's parameters, from a build with a throwaway stream."""
    legacy: Any = layer
    legacy.build(n_in, np.random.default_rng(0), dtype)
    return [tuple(np.shape(p)) for p in legacy.parameters()]
