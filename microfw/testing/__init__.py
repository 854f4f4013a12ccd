"""Contract checks for plugins: the very checks microfw runs on its own built-ins.

Use them in a plugin package's tests::

    import microfw.testing

    def test_softsign():
        microfw.testing.check_plugin(Softsign)      # or, once installed: check_plugin("softsign")

:func:`check_plugin` runs every check that applies to the plugin's kind; the individual checks
are public too. Each takes a plugin **class** (constructed with its ``example_params``) or
an **instance** (its parameters are checked; the checks work on copies, so its state is left
alone); a fresh object is made whenever a check needs one. A failing check raises
``AssertionError`` naming the check, the plugin, and by how much it failed.
``registry`` is where nested references such as ``init="xavier"`` resolve (default: the
registry in use, see :func:`microfw.core.registry.current_registry`). A plugin with a required
parameter declares ``example_params`` so that the checks can build it.

The checks each kind gets:

=============  ==========================================================================
layer          check_schema, check_shapes_and_dtypes, check_layer_gradient,
               check_inference_mode, check_fast_paths
activation     check_schema, check_shapes_and_dtypes, check_elementwise,
               check_activation_gradient, check_fast_paths
loss           check_schema, check_shapes_and_dtypes, check_loss_gradient, check_fast_paths
initializer    check_schema, check_initializer
optimizer      check_schema, check_optimizer
schedule       check_schema, check_schedule
regularizer    check_schema, check_regularizer
metric         check_schema, check_metric
=============  ==========================================================================

How the checks judge:

* **Gradients** are compared with central differences ``(f(x + h) - f(x - h)) / 2h`` in
  float64 with ``h = 1e-5``. The error of an element is ``|a - n| / max(|a|, |n|, floor)``
  (``a`` analytic, ``n`` numerical) where ``floor`` is 1e-3 of the largest ``|n|`` (at
  least 1e-8), so entries far smaller than the largest are judged absolutely; every element
  must be within ``rtol`` (default 1e-5). Test points are drawn away from 0 (the usual kink,
  e.g. of ``relu``) and, for losses, inside (0.05, 0.95) (away from probability clipping); a
  plugin with other kinks or another domain passes its own points (``x=``, ``y_pred=``,
  ``y_true=``).
* **Randomness** comes only from ``numpy.random.default_rng(seed)``: the checks are
  deterministic and never touch the global ``numpy.random`` state.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from microfw.core.activation_layer import ActivationLayer
from microfw.core.fusions import Fusion, LossFusion, Rule
from microfw.core.interfaces import (
    INTERFACES,
    Activation,
    Array,
    Initializer,
    Layer,
    Loss,
    Metric,
    Optimizer,
    Plugin,
    Regularizer,
    Schedule,
)
from microfw.core.params import params_model
from microfw.core.registry import (
    Registry,
    current_registry,
    kind_of,
    unknown_name_message,
    using,
)
from microfw.nn.store import ParameterStore
from microfw.spec.schema import json_schema

H = 1e-5
"""The central-difference step."""
RTOL = 1e-5
"""The default relative-error tolerance of the gradient checks."""
SEED = 0
"""The seed of every random test point."""

PluginRef = type[Plugin] | Plugin


# -- running checks ---------------------------------------------------------------------------


def check_plugin(
    plugin: PluginRef | str, *, registry: Registry | None = None, kind: str | None = None
) -> list[str]:
    """Run every contract check that applies to ``plugin``; return the names of the checks run.

    Args:
        plugin: a plugin class, an instance, or a registered name (looked up in ``registry``).
        registry: resolves names and nested references (default: the registry in use).
        kind: the kind to look a name up in, needed only when a name is registered under
            several kinds (e.g. an initializer and a schedule both called ``constant``).

    Raises:
        AssertionError: the first failing check, saying which one and by how much.
    """
    registry = registry if registry is not None else current_registry()
    if isinstance(plugin, str):
        plugin = _lookup(registry, plugin, kind)
    cls = plugin if isinstance(plugin, type) else type(plugin)
    checks = _CHECKS[kind_of(cls)]
    for check in checks:
        check(plugin, registry=registry)
    return [check.__name__ for check in checks]


def _lookup(registry: Registry, name: str, kind: str | None) -> type[Plugin]:
    if kind is not None:
        return registry.get(kind, name)
    entries = [e for e in registry.entries() if e.name == name]
    if not entries:
        names = sorted({e.name for e in registry.entries()})
        raise LookupError(unknown_name_message("plugin", name, names))
    if len(entries) > 1:
        kinds = " and ".join(e.kind for e in entries)
        raise LookupError(f"{name!r} is registered as {kinds}: pass kind=... to choose")
    return entries[0].cls


def _label(plugin: PluginRef) -> str:
    cls = plugin if isinstance(plugin, type) else type(plugin)
    kind = kind_of(cls)
    return f"{kind} {getattr(cls, 'name', '?')!r} ({cls.__module__}.{cls.__qualname__})"


@contextmanager
def _checking(
    check: str,
    plugin: PluginRef,
    interfaces: tuple[type[Plugin], ...],
    registry: Registry | None,
) -> Iterator[Callable[[], Any]]:
    """Yield a factory of plugin instances; report any failure inside as ``AssertionError``."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    if not issubclass(cls, interfaces):
        expected = " or ".join(i.__name__ for i in interfaces)
        raise TypeError(f"{check} checks a {expected} class or instance, got {plugin!r}")

    def make() -> Any:
        return cls(**cls.example_params) if isinstance(plugin, type) else copy.deepcopy(plugin)

    try:
        with using(registry if registry is not None else current_registry()):
            yield make
    except AssertionError as exc:
        raise AssertionError(f"{check} failed for {_label(plugin)}: {exc}") from None
    except Exception as exc:
        raise AssertionError(
            f"{check} failed for {_label(plugin)}: {type(exc).__name__}: {exc}"
        ) from exc


# -- numerical helpers ------------------------------------------------------------------------


def _numeric_gradient(f: Callable[[], float], a: Array) -> Array:
    """d f / d a by central differences, perturbing ``a`` in place (and restoring it)."""
    g = np.empty(a.shape)
    for idx in np.ndindex(a.shape):
        orig = a[idx]
        a[idx] = orig + H
        up = f()
        a[idx] = orig - H
        down = f()
        a[idx] = orig
        g[idx] = (up - down) / (2 * H)
    return g


def _compare_gradients(what: str, analytic: Array, numeric: Array, rtol: float) -> None:
    a = np.asarray(analytic, dtype=np.float64)
    if a.shape != numeric.shape:
        raise AssertionError(f"{what} has shape {a.shape}, expected {numeric.shape}")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{what} has non-finite values: {a[~np.isfinite(a)][:5].tolist()}")
    if a.size == 0:
        return
    floor = max(1e-3 * float(np.max(np.abs(numeric))), 1e-8)
    err = np.abs(a - numeric) / np.maximum(np.maximum(np.abs(a), np.abs(numeric)), floor)
    worst = np.unravel_index(np.argmax(err), err.shape)
    if err[worst] > rtol:
        norm_n = float(np.linalg.norm(numeric))
        ratio = f"; |analytic| / |numeric| = {np.linalg.norm(a) / norm_n:.4g}" if norm_n else ""
        raise AssertionError(
            f"{what} differs from central differences: max relative error "
            f"{err[worst]:.3g} > rtol {rtol:g} at index {tuple(int(i) for i in worst)} "
            f"(analytic {a[worst]:.6g}, numeric {numeric[worst]:.6g}); "
            f"{int(np.sum(err > rtol))} of {err.size} element(s) off{ratio}"
        )


def _expect_array(what: str, a: Any, shape: tuple[int, ...] | None, dtype: Any) -> None:
    """``a`` is a numpy array of ``dtype`` and (unless None) ``shape``."""
    if not isinstance(a, np.ndarray):
        raise AssertionError(f"{what} is a {type(a).__name__}, expected a numpy array")
    if shape is not None and a.shape != shape:
        raise AssertionError(f"{what} has shape {a.shape}, expected {shape}")
    if a.dtype != np.dtype(dtype):
        raise AssertionError(f"{what} has dtype {a.dtype}, expected {np.dtype(dtype)}")


def _activation_points(rng: np.random.Generator) -> Array:
    """Values in +-[0.1, 3]: away from 0, the kink of relu-like functions."""
    return rng.choice([-1.0, 1.0], (6, 5)) * rng.uniform(0.1, 3.0, (6, 5))


def _loss_points(loss: Loss, rng: np.random.Generator) -> tuple[Array, Array]:
    """Predictions in (0.05, 0.95) and soft targets in (0, 1) whose rows sum to 1 (integer
    labels for a loss whose :meth:`~microfw.Loss.target_dim` is 1)."""
    for k in (3, 2, 1):
        try:
            loss.check_output_dim(k)
        except ValueError:
            continue
        y_pred = rng.uniform(0.05, 0.95, (5, k))
        if loss.target_dim(k) == 1 and k > 1:  # integer class labels
            return y_pred, rng.integers(0, k, (5, 1)).astype(float)
        if k == 1:
            return y_pred, rng.uniform(0.05, 0.95, (5, 1))
        u = rng.uniform(0.1, 1.0, (5, k))
        return y_pred, u / u.sum(axis=1, keepdims=True)
    raise AssertionError("check_output_dim rejects 1, 2 and 3 outputs: pass y_pred and y_true")


# -- gradient checks --------------------------------------------------------------------------


def check_activation_gradient(
    plugin: PluginRef,
    *,
    registry: Registry | None = None,
    x: Array | None = None,
    rtol: float = RTOL,
) -> None:
    """``derivative(x, forward(x))`` matches central differences of ``forward`` element-wise.

    ``x`` (float64) defaults to values in +-[0.1, 3]; pass points away from your kinks.
    """
    with _checking("check_activation_gradient", plugin, (Activation,), registry) as make:
        act = make()
        x = _activation_points(np.random.default_rng(SEED)) if x is None else x
        x = np.array(x, dtype=np.float64)
        numeric = (act.forward(x + H) - act.forward(x - H)) / (2 * H)
        _compare_gradients("derivative", act.derivative(x, act.forward(x)), numeric, rtol)


def check_loss_gradient(
    plugin: PluginRef,
    *,
    registry: Registry | None = None,
    y_pred: Array | None = None,
    y_true: Array | None = None,
    rtol: float = RTOL,
) -> None:
    """``grad(y_pred, y_true)`` matches central differences of ``value`` (the batch mean).

    Defaults: 5 samples, the first of 3, 2, 1 outputs that ``check_output_dim`` accepts,
    predictions in (0.05, 0.95), soft targets whose rows sum to 1 (which ``check_targets``
    must accept). A factor such as a missing ``1/m`` shows as the ``|analytic| / |numeric|``
    ratio in the message.
    """
    with _checking("check_loss_gradient", plugin, (Loss,), registry) as make:
        loss = make()
        default_pred, default_true = _loss_points(loss, np.random.default_rng(SEED))
        y_pred = np.array(default_pred if y_pred is None else y_pred, dtype=np.float64)
        y_true = np.array(default_true if y_true is None else y_true, dtype=np.float64)
        loss.check_targets(y_true)
        value = loss.value(y_pred, y_true)
        if not isinstance(value, float | np.floating) or not math.isfinite(value):
            raise AssertionError(f"value() returned {value!r}, expected a finite float")
        numeric = _numeric_gradient(lambda: float(loss.value(y_pred, y_true)), y_pred)
        _compare_gradients("grad", loss.grad(y_pred, y_true), numeric, rtol)


def built(layer: Layer, n_in: int, dtype: Any = np.float64, seed: int = SEED) -> ParameterStore:
    """Build ``layer`` for ``n_in`` inputs into a :class:`~microfw.nn.store.ParameterStore` of
    its own (as a model would), initial values drawn from ``default_rng(seed)``, the layer's
    own streams derived from ``SeedSequence(seed)``."""
    store = ParameterStore(
        np.dtype(dtype), np.random.default_rng(seed), np.random.SeedSequence(seed)
    )
    store.build([("layer", layer, n_in)])
    return store


def check_layer_gradient(
    plugin: PluginRef,
    *,
    registry: Registry | None = None,
    n_in: int = 4,
    rtol: float = RTOL,
) -> None:
    """``backward`` gives the input gradient and the parameter gradients of the last forward.

    The layer is built for ``n_in`` inputs in float64 (its arrays in a store, as a model
    builds it) and fed 5 standard-normal rows; the objective is ``sum(w * forward(x))`` with
    random ``w`` (so ``dy = w``). The numerical gradients perturb the store's arrays, so a
    layer that copies its parameters instead of using them fails too. Also checked: a second
    backward overwrites the gradients rather than adding to them. The layer must be
    deterministic given its random streams: every training forward of the check starts the
    streams the layer took from the store (``store.stream``) in the same state, so a dropout
    layer draws the same mask each time.
    """
    with _checking("check_layer_gradient", plugin, (Layer,), registry) as make:
        layer = make()
        rng = np.random.default_rng(SEED)
        n_out = layer.output_dim(n_in)
        store = built(layer, n_in)
        names = store.names(trainable=True)
        params = [store[name] for name in names]
        for p in params:  # so that zero-initialised biases count too
            p += rng.standard_normal(p.shape)
        x = rng.standard_normal((5, n_in))
        w = rng.standard_normal((5, n_out))
        replay = _replayer(store)
        layer.forward(x, training=True)
        dx = layer.backward(w.copy())
        grads = [np.array(store.grad(name), dtype=np.float64) for name in names]

        def objective() -> float:
            replay()
            return float(np.vdot(w, layer.forward(x, training=True)))

        _compare_gradients(
            "input gradient (backward's return)", dx, _numeric_gradient(objective, x), rtol
        )
        for name, p, g in zip(names, params, grads, strict=True):
            numeric = _numeric_gradient(objective, p)
            _compare_gradients(f"gradient of {name[6:]} (shape {p.shape})", g, numeric, rtol)

        replay()
        layer.forward(x, training=True)
        layer.backward(w.copy())
        for name, g in zip(names, grads, strict=True):
            again = store.grad(name)
            if not np.allclose(again, g, rtol=1e-12, atol=0):
                ratio = np.linalg.norm(again) / max(float(np.linalg.norm(g)), 1e-300)
                raise AssertionError(
                    f"a second backward changed the gradient of {name[6:]} (|second| / "
                    f"|first| = {ratio:.4g}): gradients must be overwritten, not accumulated"
                )


def _replayer(store: ParameterStore) -> Callable[[], None]:
    """A function putting every stream the layer took from ``store`` back in its present state."""
    states = {name: g.bit_generator.state for name, g in store.streams.items()}

    def replay() -> None:
        for name, state in states.items():
            store.streams[name].bit_generator.state = state

    return replay


def check_inference_mode(
    plugin: PluginRef, *, registry: Registry | None = None, n_in: int = 4
) -> None:
    """An inference forward (``training=False``) changes nothing and repeats exactly.

    The layer is built in float64 and run in training mode first (forward and backward, so
    that running statistics move away from their initial values); then two inference
    forwards on the same rows must return equal, fresh arrays (neither the input nor an array
    of the store) and leave the parameters, the state and the layer's random streams as they
    were. (Layers whose modes compute the same thing are compared across modes by
    :func:`check_fast_paths`.)
    """
    with _checking("check_inference_mode", plugin, (Layer,), registry) as make:
        layer = make()
        rng = np.random.default_rng(SEED)
        n_out = layer.output_dim(n_in)
        store = built(layer, n_in)
        x = rng.standard_normal((5, n_in))
        layer.forward(x, training=True)
        layer.backward(rng.standard_normal((5, n_out)))
        before = (store.params.copy(), store.state.copy())
        streams = {name: g.bit_generator.state for name, g in store.streams.items()}
        x_before = x.copy()
        first = layer.forward(x, training=False)
        _expect_array("forward(training=False)", first, (5, n_out), np.float64)
        first = first.copy() if first is x else first
        kept = np.array(first)
        second = layer.forward(x, training=False)
        if not np.array_equal(kept, second):
            raise AssertionError("two inference forwards on the same rows differ")
        if any(second is a or np.shares_memory(second, a) for a in (x, store.params, store.state)):
            raise AssertionError(
                "forward(training=False) returned the input or a view of the store's arrays; "
                "it must return a fresh array"
            )
        if not np.array_equal(x, x_before):
            raise AssertionError("forward(training=False) changed its input")
        for what, old, new in (
            ("parameters", before[0], store.params),
            ("state", before[1], store.state),
        ):
            if not np.array_equal(old, new):
                raise AssertionError(f"forward(training=False) changed the model's {what}")
        for name, g in store.streams.items():
            if g.bit_generator.state != streams[name]:
                raise AssertionError(
                    f"forward(training=False) drew from the random stream {name[6:]!r}; "
                    "inference must be deterministic"
                )


def check_elementwise(plugin: PluginRef, *, registry: Registry | None = None) -> None:
    """An activation is element-wise: permuting the inputs permutes ``forward`` and ``derivative``.

    A function that mixes the elements of a row (softmax) must be a :class:`~microfw.Layer`.
    """
    with _checking("check_elementwise", plugin, (Activation,), registry) as make:
        act = make()
        rng = np.random.default_rng(SEED)
        x = _activation_points(rng)
        perm = rng.permutation(x.size)
        xp = x.ravel()[perm].reshape(x.shape)
        y, yp = act.forward(x), act.forward(xp)
        for what, full, permuted in (
            ("forward", y, yp),
            ("derivative", act.derivative(x, y), act.derivative(xp, yp)),
        ):
            moved = np.asarray(full).ravel()[perm]
            if not np.allclose(np.asarray(permuted).ravel(), moved, rtol=1e-12, atol=0):
                raise AssertionError(
                    f"{what} is not element-wise: an element's value depends on the others "
                    "(functions that mix elements are Layers)"
                )


# -- shapes and dtypes ------------------------------------------------------------------------


def check_shapes_and_dtypes(plugin: PluginRef, *, registry: Registry | None = None) -> None:
    """Outputs have the promised shapes, float32 stays float32 and float64 stays float64.

    For a layer: parameters, outputs (``output_dim`` wide), input and parameter gradients; for
    an activation: ``forward`` and ``derivative``; for a loss: ``grad`` (``value`` a finite
    float). The float32 results must also agree with the float64 ones to about 1e-4.
    """
    with _checking("check_shapes_and_dtypes", plugin, (Layer, Activation, Loss), registry) as make:
        results = {dtype: _run_in(make, np.dtype(dtype)) for dtype in (np.float64, np.float32)}
        for what, a64 in results[np.float64].items():
            # float32 precision: relative 1e-4
            _expect_same(f"{what} in float32", results[np.float32][what], a64, 1e-4, "float64")


def _run_in(make: Callable[[], Any], dtype: np.dtype[Any]) -> dict[str, Array]:
    """Run the plugin on fixed data cast to ``dtype``; return its outputs, checked, by name."""
    rng = np.random.default_rng(SEED)
    plugin = make()
    if isinstance(plugin, Activation):
        x = _activation_points(rng).astype(dtype)
        y = plugin.forward(x)
        _expect_array(f"forward({dtype})", y, x.shape, dtype)
        d = plugin.derivative(x, y)
        _expect_array(f"derivative({dtype})", d, x.shape, dtype)
        return {"forward": y, "derivative": d}
    if isinstance(plugin, Loss):
        y_pred, y_true = (a.astype(dtype) for a in _loss_points(plugin, rng))
        value = plugin.value(y_pred, y_true)
        if not isinstance(value, float | np.floating) or not math.isfinite(value):
            raise AssertionError(f"value({dtype}) returned {value!r}, expected a finite float")
        g = plugin.grad(y_pred, y_true)
        _expect_array(f"grad({dtype})", g, y_pred.shape, dtype)
        return {"value": np.array(value), "grad": g}
    n_in = 4
    n_out = plugin.output_dim(n_in)
    store = built(plugin, n_in, dtype)
    x = rng.standard_normal((5, n_in)).astype(dtype)
    y = plugin.forward(x, training=True)
    _expect_array(f"forward({dtype})", y, (5, n_out), dtype)
    dx = plugin.backward(rng.standard_normal((5, n_out)).astype(dtype))
    _expect_array(f"backward({dtype})", dx, x.shape, dtype)
    out = {"forward": np.array(y), "backward": np.array(dx)}
    for name in store.names(trainable=True):
        out[f"gradient of {name[6:]}"] = np.array(store.grad(name))
    return out


# -- optional fast paths ----------------------------------------------------------------------


def check_fast_paths(plugin: PluginRef, *, registry: Registry | None = None) -> None:
    """The optional methods agree with the plain contract, in float64 and float32.

    Activation: ``forward_into`` writes ``forward(x)`` and ``backward_into`` writes
    ``dy * derivative(x, y)``, leaving ``x``, ``y`` and ``dy`` untouched. Loss:
    ``value_and_grad`` returns ``(value(...), grad(...))``. Layer: a training-mode forward
    equals an inference-mode one (unless the layer declares ``modes_differ``). Agreement is
    to 1e-12 relative in float64 and 1e-5 in float32. (Fusion rules are checked by
    :func:`check_fusion`.)
    """
    with _checking("check_fast_paths", plugin, (Layer, Activation, Loss), registry) as make:
        for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-5)):
            rng = np.random.default_rng(SEED)
            obj = make()
            label = np.dtype(dtype).name
            if isinstance(obj, Activation):
                _activation_fast_paths(obj, rng, np.dtype(dtype), rtol)
            elif isinstance(obj, Loss):
                y_pred, y_true = (_as(a, dtype) for a in _loss_points(obj, rng))
                value, grad = obj.value_and_grad(y_pred, y_true)
                _expect_same(
                    f"value_and_grad()[0] ({label})", value, obj.value(y_pred, y_true), rtol
                )
                _expect_same(f"value_and_grad()[1] ({label})", grad, obj.grad(y_pred, y_true), rtol)
            else:
                store = built(obj, 4, dtype)
                for _, p in store.items(trainable=True):  # zero-initialised biases count too
                    p += rng.standard_normal(p.shape).astype(dtype)
                x = rng.standard_normal((5, 4)).astype(dtype)
                inference = np.array(obj.forward(x, training=False))
                trained = obj.forward(x, training=True)
                if not obj.modes_differ:  # else each mode is checked on its own
                    _expect_same(f"forward(training=True) ({label})", trained, inference, rtol)


def _activation_fast_paths(
    act: Activation, rng: np.random.Generator, dtype: np.dtype[Any], rtol: float
) -> None:
    x = _activation_points(rng).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = act.forward(x)
    inputs = [a.copy() for a in (x, y, dy)]
    out = np.full_like(x, np.nan)
    act.forward_into(x, out)
    _expect_same(f"forward_into ({dtype})", out, y, rtol)
    expected = dy * act.derivative(x, y)
    out = np.full_like(x, np.nan)
    act.backward_into(x, y, dy, out)
    for name, before, after in zip(("x", "y", "dy"), inputs, (x, y, dy), strict=True):
        if not np.array_equal(before, after):
            raise AssertionError(f"the fast paths changed their input {name}")
    _expect_same(f"backward_into ({dtype})", out, expected, rtol)


# -- fusion rules -----------------------------------------------------------------------------


def check_fusion(rule: Rule, *, registry: Registry | None = None) -> None:
    """A fusion rule computes what the plain methods of its classes compute.

    :class:`~microfw.core.fusions.Fusion`: the matched plugins (built from their
    ``example_params``, the layers' arrays in a store) run plain, forward then backward, and as
    the rule's step, on the same random data; outputs, input gradients and every parameter
    gradient must agree, with the input gradient needed or not, and with ``dy`` handed over
    as scratch (which the step may overwrite) or not. :class:`~microfw.core.fusions.LossFusion`:
    the last layer's plain forward, the loss's ``value_and_grad`` and the layer's backward
    against the rule, at logits where the plain loss does not clip. Agreement is to 1e-12
    relative in float64 and 1e-5 in float32.

    Raises:
        AssertionError: naming the rule, what differed and by how much.
    """
    label = f"fusion rule {rule.label()!r}"
    try:
        with using(registry if registry is not None else current_registry()):
            for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-5)):
                if isinstance(rule, Fusion):
                    _check_layer_fusion(rule, np.dtype(dtype), rtol)
                else:
                    _check_loss_fusion(rule, np.dtype(dtype), rtol)
    except AssertionError as exc:
        raise AssertionError(f"check_fusion failed for {label}: {exc}") from None
    except Exception as exc:
        raise AssertionError(
            f"check_fusion failed for {label}: {type(exc).__name__}: {exc}"
        ) from exc


def _as(a: Array, dtype: Any) -> Array:
    out: Array = a.astype(dtype)
    return out


def _instances(classes: tuple[type[Plugin], ...]) -> tuple[list[Any], list[Layer]]:
    plugins: list[Any] = [cls(**cls.example_params) for cls in classes]
    layers = [ActivationLayer(p) if isinstance(p, Activation) else p for p in plugins]
    return plugins, layers


def _check_layer_fusion(rule: Fusion, dtype: np.dtype[Any], rtol: float) -> None:
    n_in = 4
    x = np.random.default_rng(SEED).standard_normal((6, n_in)).astype(dtype)
    results = []
    for mode in ("plain", "fused", "fused, no input gradient", "fused, dy scratch"):
        plugins, layers = _instances(rule.pattern)
        if rule.applies is not None and not rule.applies(plugins):
            raise AssertionError("applies() is false for the classes' example_params")
        store = ParameterStore(dtype, np.random.default_rng(SEED), np.random.SeedSequence(SEED))
        widths = [n_in]
        for layer in layers:
            widths.append(layer.output_dim(widths[-1]))
        store.build(
            [
                (f"layers.{i}", layer, w)
                for i, (layer, w) in enumerate(zip(layers, widths, strict=False))
            ]
        )
        noise = np.random.default_rng(SEED + 1)
        for _, p in store.items(trainable=True):  # so that zero-initialised biases count too
            p += noise.standard_normal(p.shape).astype(dtype)
        dy = np.random.default_rng(SEED + 2).standard_normal((6, widths[-1])).astype(dtype)
        if mode == "plain":
            out = x
            for layer in layers:
                out = layer.forward(out, True)
            out = np.array(out)
            grad = dy.copy()
            for layer in reversed(layers):
                grad = layer.backward(grad)
        else:
            step = rule.step(plugins)
            step.needs_input_grad = mode != "fused, no input gradient"
            step.dy_is_scratch = mode == "fused, dy scratch"
            out = np.array(step.forward(x.copy()))
            given = dy.copy()
            grad = step.backward(given)
            if not step.dy_is_scratch and not np.array_equal(given, dy):
                raise AssertionError(
                    f"backward overwrote dy ({mode}, {dtype}), which it may do only when "
                    "dy_is_scratch is true"
                )
        grads = {name: np.array(store.grad(name)) for name in store.names(trainable=True)}
        results.append((mode, out, np.array(grad), grads))
    _, out0, dx0, grads0 = results[0]
    for mode, out, dx, grads in results[1:]:
        _expect_same(f"output ({mode}, {dtype})", out, out0, rtol, "the plain methods")
        if mode != "fused, no input gradient":
            _expect_same(f"input gradient ({mode}, {dtype})", dx, dx0, rtol, "the plain methods")
        for name, g in grads0.items():
            what = f"gradient of {name} ({mode}, {dtype})"
            _expect_same(what, grads[name], g, rtol, "the plain methods")


def _check_loss_fusion(rule: LossFusion, dtype: np.dtype[Any], rtol: float) -> None:
    (last, loss), (layer, _) = _instances((rule.last, rule.loss))
    if rule.applies is not None and not rule.applies(last, loss):
        raise AssertionError("applies() is false for the classes' example_params")
    rng = np.random.default_rng(SEED)
    k = 3
    if built(layer, k, dtype).params.size:
        raise AssertionError(
            f"the last layer {layer.name!r} has parameters: a loss fusion skips that layer's "
            "backward, so they would get no gradient"
        )
    z = rng.uniform(-2, 2, (6, k)).astype(dtype)
    p_plain = np.array(layer.forward(z.copy(), True))
    if loss.target_dim(k) == 1:  # integer class labels
        y_true = rng.integers(0, k, (6, 1)).astype(dtype)
    else:
        y_true = _targets_like(p_plain, rng).astype(dtype)
    value, g = loss.value_and_grad(p_plain.copy(), y_true)
    dz_plain = np.array(layer.backward(np.array(g)))
    p = rule.forward(last, z.copy())
    fused_value, dz = rule.value_and_grad(loss, z.copy(), np.array(p), y_true)
    what = f"({dtype})"
    _expect_same(f"forward {what}", p, p_plain, rtol, "the layer's forward")
    _expect_same(f"loss value {what}", fused_value, value, rtol, "the loss's value")
    _expect_same(f"gradient {what}", dz, dz_plain, rtol, "value_and_grad then backward")


def _targets_like(p: Array, rng: np.random.Generator) -> Array:
    """Targets in the domain of probability losses: one-hot rows when ``p``'s rows sum to 1
    (a softmax), else 0/1 values."""
    targets: Array
    if np.allclose(p.sum(axis=1), 1):
        targets = np.eye(p.shape[1])[rng.integers(0, p.shape[1], p.shape[0])]
    else:
        targets = rng.integers(0, 2, p.shape).astype(float)
    return targets


def _expect_same(
    what: str, actual: Any, expected: Any, rtol: float, reference: str = "the plain method"
) -> None:
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{what} has shape {a.shape}, expected {e.shape}")
    scale = max(float(np.max(np.abs(e), initial=0.0)), 1e-300)
    err = float(np.max(np.abs(a - e), initial=0.0)) / scale
    if not err <= rtol:  # also catches NaN
        raise AssertionError(f"{what} differs from {reference} by {err:.3g} (relative)")


# -- initializers, optimizers, schedules ------------------------------------------------------


class _OnlyRNG:
    """Exposes only the :class:`~microfw.core.interfaces.RNG` methods initializers may call."""

    def __init__(self, seed: int) -> None:
        self._gen = np.random.default_rng(seed)

    def standard_normal(self, size: tuple[int, ...]) -> Array:
        return self._gen.standard_normal(size)

    def uniform(self, low: float, high: float, size: tuple[int, ...]) -> Array:
        return self._gen.uniform(low, high, size)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"an initializer may call only rng.standard_normal(shape) and "
            f"rng.uniform(low, high, shape), not rng.{name}"
        )


def check_initializer(
    plugin: PluginRef, *, registry: Registry | None = None, shape: tuple[int, int] = (400, 100)
) -> None:
    """Draws are float64 of the asked shape, repeat under a seed, match ``variance()``.

    On a ``shape`` draw (fan-in ``shape[0]``, fan-out ``shape[1]``, non-square so a swap
    shows) the sample variance must lie within 6 standard errors of ``variance(fan_in,
    fan_out)`` (skipped if it returns None); the standard error ``sqrt((m4 - s^4) / n)`` is
    estimated from the sample's own fourth moment, so it fits normal and uniform draws alike.
    Also checked: a bias shape ``(n,)``; the same seed gives identical arrays and another seed
    different ones (unless the variance is 0); only ``rng.standard_normal`` and
    ``rng.uniform`` are used (so the legacy adapter works); the global ``numpy.random`` state
    is left alone.
    """
    with _checking("check_initializer", plugin, (Initializer,), registry) as make:
        init = make()
        global_state = _global_state()
        a = init(shape, _OnlyRNG(SEED))
        _expect_array("the draw", a, shape, np.float64)
        _expect_array("a bias draw", init((7,), _OnlyRNG(SEED)), (7,), np.float64)
        if not np.all(np.isfinite(a)):
            raise AssertionError("the draw has non-finite values")
        if not np.array_equal(init(shape, _OnlyRNG(SEED)), a):
            raise AssertionError("two draws with the same seed differ: draw only from `rng`")
        if _global_state() != global_state:
            raise AssertionError("the global numpy.random state changed: draw only from `rng`")
        stated = init.variance(*shape)
        if stated is None:
            return
        if stated > 0 and np.array_equal(init(shape, _OnlyRNG(SEED + 1)), a):
            raise AssertionError("two different seeds gave the same draw: draw from `rng`")
        sample = float(np.var(a))
        se = math.sqrt(max(float(np.mean((a - a.mean()) ** 4)) - sample**2, 0.0) / a.size)
        if abs(sample - stated) > 6 * se:
            ratio = f" (ratio {sample / stated:.4g})" if stated else ""
            raise AssertionError(
                f"sample variance {sample:.6g} of {a.size} values differs from variance"
                f"{shape} = {stated:.6g}{ratio} by more than 6 standard errors ({6 * se:.3g})"
            )


def _global_state() -> tuple[Any, ...]:
    name, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return name, np.asarray(key).tobytes(), pos, has_gauss, gauss


def _quadratic_grads(
    params: Sequence[NDArray[Any]],
    centres: Sequence[NDArray[Any]],
    curvature: Sequence[NDArray[Any]],
) -> list[Array]:
    """Gradients of :func:`_quadratic`, in the parameters' dtype."""
    return [
        (c * (p - m)).astype(p.dtype) for p, m, c in zip(params, centres, curvature, strict=True)
    ]


def _quadratic(
    params: Sequence[NDArray[Any]],
    centres: Sequence[NDArray[Any]],
    curvature: Sequence[NDArray[Any]],
) -> float:
    """0.5 * sum(c * (p - centre)^2): convex, minimum 0 at the centres."""
    return 0.5 * sum(
        float(np.sum(c * (p.astype(np.float64) - m) ** 2))
        for p, m, c in zip(params, centres, curvature, strict=True)
    )


def check_optimizer(
    plugin: PluginRef, *, registry: Registry | None = None, steps: int = 20
) -> None:
    """Steps descend a convex quadratic, updating the parameter arrays in place.

    The toy loss is ``0.5 * sum(c * (p - centre)^2)`` over three parameters of different shapes
    (so state created in the wrong order or shape shows), curvatures ``c`` in [0.5, 2], run
    with the optimizer's own (example) parameters, in float64 and in float32 (which must stay
    float32); each step is one full-batch epoch (``end_epoch`` follows it). The first step must
    lower the loss, and the loss after ``steps`` steps must be below the loss after the first
    (methods with momentum may rise and fall in between). An optimizer that implements
    ``reset_state()`` must keep its counters and then step exactly as a new one with those
    counters. State must be created lazily: the
    optimizer is constructed without parameters. An optimizer that implements
    ``state_arrays()``: a new one given its counters and its state through
    ``load_state_arrays()`` must then step bit-identically to it (what resuming from a model
    file needs).
    """
    with _checking("check_optimizer", plugin, (Optimizer,), registry) as make:
        rng = np.random.default_rng(SEED)
        shapes = [(3, 2), (4,), (1, 5)]
        centres = [rng.standard_normal(s) for s in shapes]
        curvature = [rng.uniform(0.5, 2.0, s) for s in shapes]
        start = [
            m + rng.choice([-1.0, 1.0], s) * rng.uniform(1.0, 2.0, s)
            for m, s in zip(centres, shapes, strict=True)
        ]
        for dtype in (np.float64, np.float32):
            where = f"in {np.dtype(dtype)}"
            opt = make()
            params = [p.astype(dtype) for p in start]
            held = list(params)
            losses = [_quadratic(params, centres, curvature)]
            for k in range(1, steps + 1):
                opt.step(params, _quadratic_grads(params, centres, curvature))
                opt.end_epoch()
                replaced = [
                    i for i, (p, q) in enumerate(zip(params, held, strict=True)) if p is not q
                ]
                if replaced:
                    raise AssertionError(
                        f"step {k} replaced params{replaced} instead of updating them in place"
                    )
                for i, p in enumerate(params):
                    _expect_array(f"parameter {i} after step {k}", p, shapes[i], dtype)
                losses.append(_quadratic(params, centres, curvature))
            trace = ", ".join(f"{v:.4g}" for v in losses[:6])
            if not losses[1] < losses[0]:
                raise AssertionError(
                    f"{where}, the first step did not lower the convex loss "
                    f"0.5 * sum(c (p - centre)^2): {losses[0]:.6g} -> {losses[1]:.6g}"
                )
            if not losses[-1] < losses[1]:
                raise AssertionError(
                    f"{where}, the loss after {steps} steps ({losses[-1]:.6g}) is not below the "
                    f"loss after the first ({losses[1]:.6g}); losses: {trace}, ..."
                )
            _check_state_round_trip(make, opt, params, centres, curvature, where)
            if type(opt).reset_state is Optimizer.reset_state:
                continue  # no state to forget
            counters = (opt.steps, opt.epochs)
            opt.reset_state()
            if (opt.steps, opt.epochs) != counters:
                raise AssertionError(f"{where}, reset_state() changed the step or epoch counter")
            # Reset, it steps as a new optimizer with the same counters would.
            fresh = make()
            fresh.steps, fresh.epochs = counters
            fresh_params = [p.copy() for p in params]
            grads = _quadratic_grads(params, centres, curvature)
            opt.step(params, grads)
            fresh.step(fresh_params, grads)
            rtol = 1e-12 if dtype == np.float64 else 1e-5
            for i, (p, q) in enumerate(zip(params, fresh_params, strict=True)):
                _expect_same(f"{where}, parameter {i} after reset_state() and a step", p, q, rtol)


def _check_state_round_trip(
    make: Callable[[], Any],
    opt: Optimizer,
    params: list[Any],
    centres: Sequence[NDArray[Any]],
    curvature: Sequence[NDArray[Any]],
    where: str,
) -> None:
    """A fresh optimizer given ``opt``'s counters and ``state_arrays()`` (through
    ``load_state_arrays``) steps exactly as ``opt`` does: what resuming from a file needs.
    Skipped for an optimizer that does not implement ``state_arrays`` (its state, if any, is
    not saved: a resumed run starts it afresh)."""
    if type(opt).state_arrays is Optimizer.state_arrays:
        return
    state = {name: np.array(a, copy=True) for name, a in opt.state_arrays().items()}
    for name, a in state.items():
        if not name.isidentifier():
            raise AssertionError(f"{where}, state_arrays() name {name!r} is not an identifier")
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
            raise AssertionError(f"{where}, state array {name!r} is not a numeric numpy array")
    fresh = make()
    fresh.steps, fresh.epochs = opt.steps, opt.epochs
    fresh.load_state_arrays(state)
    mine, theirs = list(params), [p.copy() for p in params]  # opt keeps stepping its arrays
    for _ in range(3):
        opt.step(mine, _quadratic_grads(mine, centres, curvature))
        fresh.step(theirs, _quadratic_grads(theirs, centres, curvature))
    for i, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        if not np.array_equal(a, b):
            raise AssertionError(
                f"{where}, parameter {i}: an optimizer given the state_arrays() of another "
                "steps differently from it (load_state_arrays must restore every quantity)"
            )


def check_schedule(plugin: PluginRef, *, registry: Registry | None = None) -> None:
    """``t = 0`` gives ``lr0``; every rate up to ``t = 1000`` and at ``10**6`` is finite, >= 0.

    A schedule with ``starts_at_lr0 = False`` (a warm-up) may start anywhere in ``[0, lr0]``.

    Also checked: ``per`` is ``"epoch"`` or ``"step"``.
    """
    with _checking("check_schedule", plugin, (Schedule,), registry) as make:
        schedule = make()
        if schedule.per not in ("epoch", "step"):
            raise AssertionError(f"per is {schedule.per!r}, expected 'epoch' or 'step'")
        for lr0 in (0.1, 1.0):
            first = schedule(lr0, 0)
            if not schedule.starts_at_lr0:
                if not 0 <= first <= lr0 * (1 + 1e-12):
                    raise AssertionError(f"the rate at t=0 is {first!r}, expected in [0, {lr0}]")
            elif not math.isclose(first, lr0, rel_tol=1e-12):
                raise AssertionError(f"the rate at t=0 is {first!r}, expected lr0 = {lr0}")
            for t in [*range(1001), 10**6]:
                lr = schedule(lr0, t)
                if not isinstance(lr, int | float | np.floating) or not (
                    math.isfinite(lr) and lr >= 0
                ):
                    raise AssertionError(
                        f"the rate at t={t} is {lr!r}, expected a finite float >= 0"
                    )


def check_regularizer(
    plugin: PluginRef,
    *,
    registry: Registry | None = None,
    w: Array | None = None,
    rtol: float = RTOL,
) -> None:
    """``grad`` matches central differences of ``value``; dtypes kept; no penalty at zero.

    ``w`` (float64, default values in +-[0.1, 3] of shape (4, 3), away from the kink of
    ``l1``) is the test point. Also checked: ``value`` is a finite float >= 0 and is 0 with
    gradient 0 for an all-zero array; ``grad`` of a float32 array is float32 and agrees with
    the float64 one to 1e-5; ``add_grad(w, g)`` adds ``grad(w)`` to ``g`` in place; ``w`` is
    left untouched.
    """
    with _checking("check_regularizer", plugin, (Regularizer,), registry) as make:
        reg = make()
        w = _activation_points(np.random.default_rng(SEED))[:4, :3] if w is None else w
        w = np.array(w, dtype=np.float64)
        before = w.copy()
        value = reg.value(w)
        if not isinstance(value, float | np.floating) or not (math.isfinite(value) and value >= 0):
            raise AssertionError(f"value() returned {value!r}, expected a finite float >= 0")
        g = reg.grad(w)
        _expect_array("grad(float64)", g, w.shape, np.float64)
        if not np.array_equal(w, before):
            raise AssertionError("value() or grad() changed w")
        numeric = _numeric_gradient(lambda: float(reg.value(w)), w)
        _compare_gradients("grad", g, numeric, rtol)
        w32 = w.astype(np.float32)
        g32 = reg.grad(w32)
        _expect_array("grad(float32)", g32, w.shape, np.float32)
        _expect_same("grad in float32", g32, g, 1e-5, "float64")
        zero = np.zeros_like(w)
        if reg.value(zero) != 0 or np.any(reg.grad(zero) != 0):
            raise AssertionError("an all-zero array has a non-zero penalty or gradient")
        acc = np.ones_like(w)
        reg.add_grad(w, acc)
        _expect_same("add_grad(w, ones)", acc, 1 + g, 1e-12, "1 + grad(w)")


# -- metrics --------------------------------------------------------------------------------


class _ProbabilityLoss(Loss):
    """A stand-in loss for the metric checks: probabilities, class 1 from 0.5."""

    name = "_check_metric_loss"

    def value(self, y_pred: Array, y_true: Array) -> float:
        return 0.0

    def grad(self, y_pred: Array, y_true: Array) -> Array:
        return np.zeros_like(y_pred)


def check_metric(plugin: PluginRef, *, registry: Registry | None = None) -> None:
    """Batches accumulate to the score of one batch holding them all, and nothing leaks.

    On 40 rows of one output (predictions in (0, 1), 0/1 targets of both classes, a loss
    whose decision threshold is 0.5): the result is a finite float; updating with batches of
    7, 13 and 20 rows gives the one-batch result (to 1e-12 relative); the batches' arrays
    may be overwritten after :meth:`~microfw.Metric.update` (they are work buffers) without
    changing the result, and are left untouched by it; :meth:`~microfw.Metric.start` forgets
    earlier batches.
    """
    with _checking("check_metric", plugin, (Metric,), registry) as make:
        rng = np.random.default_rng(SEED)
        y_true = np.zeros((40, 1))
        y_true[rng.permutation(40)[:17]] = 1.0
        y_pred = np.clip(0.35 * y_true + rng.uniform(0.05, 0.65, (40, 1)), 0.01, 0.99)
        loss = _ProbabilityLoss()
        whole = make()
        whole.start(loss, y_true)
        whole.update(y_pred.copy(), y_true.copy())
        expected = whole.result()
        if not isinstance(expected, float | np.floating) or not math.isfinite(expected):
            raise AssertionError(f"result() returned {expected!r}, expected a finite float")
        metric = make()
        metric.start(loss, y_true[:10])
        metric.update(y_pred[:10].copy(), y_true[:10].copy())
        metric.start(loss, y_true)  # forgets the batch above
        for lo, hi in ((0, 7), (7, 20), (20, 40)):
            p, t = y_pred[lo:hi].copy(), y_true[lo:hi].copy()
            kept = (p.copy(), t.copy())
            metric.update(p, t)
            if not (np.array_equal(p, kept[0]) and np.array_equal(t, kept[1])):
                raise AssertionError("update() changed its input arrays")
            p[...] = 0.5  # the caller reuses its buffers for the next batch
            t[...] = 1 - t
        _expect_same("the result over 3 batches", metric.result(), expected, 1e-12, "one batch")


# -- schema -----------------------------------------------------------------------------------


def check_schema(plugin: PluginRef, *, registry: Registry | None = None) -> None:
    """The plugin builds by name from its parameters through its schema and round-trips.

    ``registry.create(kind, {"type": name, **params})`` must give an instance of the class,
    where ``params`` is ``example_params`` for a class and ``get_params()`` for an instance;
    ``get_params()`` must be JSON data that builds an equal plugin again; the class must carry
    a docstring (its first line, the formula, is the schema's description);
    :func:`microfw.json_schema` of the registry must render and show every parameter. A class
    not registered in ``registry`` is checked in a fresh :class:`~microfw.Registry` with the
    class registered in-process.
    """
    cls = plugin if isinstance(plugin, type) else type(plugin)
    registry = registry if registry is not None else current_registry()
    with _checking("check_schema", plugin, tuple(INTERFACES.values()), registry):
        kind = kind_of(cls)
        if not (cls.__doc__ or "").strip():
            raise AssertionError("the class has no docstring (a one-line formula is expected)")
        if not registry.has(kind, cls.name):
            registry = Registry()
            registry.register(cls)
        elif registry.get(kind, cls.name) is not cls:
            other = registry.get(kind, cls.name)
            raise AssertionError(
                f"the name {cls.name!r} is registered to {other.__module__}.{other.__qualname__}"
            )
        params = cls.example_params if isinstance(plugin, type) else plugin.get_params()
        built = registry.create(kind, {"type": cls.name, **params})
        if type(built) is not cls:
            raise AssertionError(f"create() built a {type(built).__name__}, not {cls.__name__}")
        data = built.get_params()
        try:
            json.dumps(data)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"get_params() is not JSON data ({exc}): {data!r}") from None
        again = registry.create(kind, {"type": cls.name, **data}).get_params()
        if again != data:
            raise AssertionError(f"get_params() does not round-trip: {data!r} -> {again!r}")
        key = f"{kind}.{cls.name}"
        defs = json_schema(registry)["$defs"]
        missing = sorted(
            set(params_model(cls).model_fields) - set(defs.get(key, {}).get("properties", {}))
        )
        if key not in defs or missing:
            raise AssertionError(f"the spec's JSON Schema lacks {key} or its parameters {missing}")


_CHECK_KINDS: dict[type[Plugin], tuple[Callable[..., None], ...]] = {
    Layer: (
        check_schema,
        check_shapes_and_dtypes,
        check_layer_gradient,
        check_inference_mode,
        check_fast_paths,
    ),
    Activation: (
        check_schema,
        check_shapes_and_dtypes,
        check_elementwise,
        check_activation_gradient,
        check_fast_paths,
    ),
    Loss: (check_schema, check_shapes_and_dtypes, check_loss_gradient, check_fast_paths),
    Initializer: (check_schema, check_initializer),
    Optimizer: (check_schema, check_optimizer),
    Schedule: (check_schema, check_schedule),
    Regularizer: (check_schema, check_regularizer),
    Metric: (check_schema, check_metric),
}
_CHECKS = {interface.kind: checks for interface, checks in _CHECK_KINDS.items()}
