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
layer          check_schema, check_shapes_and_dtypes, check_layer_gradient, check_fast_paths
activation     check_schema, check_shapes_and_dtypes, check_elementwise,
               check_activation_gradient, check_fast_paths
loss           check_schema, check_shapes_and_dtypes, check_loss_gradient, check_fast_paths
initializer    check_schema, check_initializer
optimizer      check_schema, check_optimizer
schedule       check_schema, check_schedule
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from microfw.core.activation_layer import ActivationLayer
from microfw.core.interfaces import (
    INTERFACES,
    Activation,
    Array,
    Initializer,
    Layer,
    Loss,
    Optimizer,
    Plugin,
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
    """Predictions in (0.05, 0.95) and soft targets in (0, 1) whose rows sum to 1."""
    for k in (3, 2, 1):
        try:
            loss.check_output_dim(k)
        except ValueError:
            continue
        y_pred = rng.uniform(0.05, 0.95, (5, k))
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


def check_layer_gradient(
    plugin: PluginRef,
    *,
    registry: Registry | None = None,
    n_in: int = 4,
    rtol: float = RTOL,
) -> None:
    """``backward`` gives the input gradient and the parameter gradients of the last forward.

    The layer is built for ``n_in`` inputs in float64 and fed 5 standard-normal rows; the
    objective is ``sum(w * forward(x))`` with random ``w`` (so ``dy = w``). Also checked:
    ``parameters()`` and ``gradients()`` align, the parameter arrays are not rebound by
    forward/backward (optimizers update them in place), and a second backward overwrites the
    gradients rather than adding to them. The layer must be deterministic.
    """
    with _checking("check_layer_gradient", plugin, (Layer,), registry) as make:
        layer = make()
        rng = np.random.default_rng(SEED)
        n_out = layer.output_dim(n_in)
        layer.build(n_in, rng, np.dtype(np.float64))
        x = rng.standard_normal((5, n_in))
        w = rng.standard_normal((5, n_out))
        params = list(layer.parameters())
        layer.forward(x, training=True)
        dx = layer.backward(w.copy())
        _check_aligned(params, layer.gradients())
        grads = [np.array(g, dtype=np.float64) for g in layer.gradients()]
        if [id(p) for p in layer.parameters()] != [id(p) for p in params]:
            raise AssertionError("parameters() returns new arrays after forward/backward")

        def objective() -> float:
            return float(np.vdot(w, layer.forward(x, training=True)))

        _compare_gradients(
            "input gradient (backward's return)", dx, _numeric_gradient(objective, x), rtol
        )
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            numeric = _numeric_gradient(objective, p)
            _compare_gradients(f"gradient of parameter {i} (shape {p.shape})", g, numeric, rtol)

        layer.forward(x, training=True)
        layer.backward(w.copy())
        for i, (g, again) in enumerate(zip(grads, layer.gradients(), strict=True)):
            if not np.allclose(again, g, rtol=1e-12, atol=0):
                ratio = np.linalg.norm(again) / max(float(np.linalg.norm(g)), 1e-300)
                raise AssertionError(
                    f"a second backward changed gradient {i} (|second| / |first| = "
                    f"{ratio:.4g}): gradients must be overwritten, not accumulated"
                )


def _check_aligned(params: list[Array], grads: list[Array]) -> None:
    if len(params) != len(grads):
        raise AssertionError(
            f"parameters() has {len(params)} arrays but gradients() has {len(grads)}"
        )
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if np.shape(p) != np.shape(g):
            raise AssertionError(f"parameter {i} has shape {p.shape}, its gradient {np.shape(g)}")


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
    plugin.build(n_in, rng, dtype)
    params = plugin.parameters()
    for i, p in enumerate(params):
        _expect_array(f"parameter {i} ({dtype})", p, None, dtype)  # any shape the layer needs
    x = rng.standard_normal((5, n_in)).astype(dtype)
    y = plugin.forward(x, training=True)
    _expect_array(f"forward({dtype})", y, (5, n_out), dtype)
    dx = plugin.backward(rng.standard_normal((5, n_out)).astype(dtype))
    _expect_array(f"backward({dtype})", dx, x.shape, dtype)
    out = {"forward": y, "backward": dx}
    grads = plugin.gradients()
    _check_aligned(params, grads)
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        _expect_array(f"gradient {i} ({dtype})", g, p.shape, dtype)
        out[f"gradient {i}"] = np.array(g)
    return out


# -- optional fast paths ----------------------------------------------------------------------


def check_fast_paths(plugin: PluginRef, *, registry: Registry | None = None) -> None:
    """The optional fast paths agree with the plain contract, in float64 and float32.

    Activation: ``forward_into`` writes ``forward(x)`` and ``backward_into`` writes
    ``dy * derivative(x, y)``, leaving ``x``, ``y`` and ``dy`` untouched; with
    ``derivative_from_output``, ``derivative(y, y)`` equals ``derivative(x, y)`` and both work
    in place over ``x``; with ``backward_in_place``, the gradient is the same computed over
    ``dy`` itself; with ``fuses_bias``, ``forward_bias_into(x, bias, out)`` writes
    ``forward(x + bias)``, also over ``x``.

    Loss: ``value_and_grad`` returns ``(value, grad)``, and for every registered layer or
    activation it ``fuses_with`` (which must have no parameters), ``fused_value_and_grad``
    equals ``value_and_grad`` followed by the layer's ``backward`` (or declines).

    Layer: an inference-mode forward equals a training-mode one, and with ``needs_input_grad``
    false (and, if the layer implements ``adopt``, after moving to adopted arrays, which it
    must then return) outputs and parameter gradients are the same; with
    ``output_is_scratch``, overwriting forward's output changes neither ``backward``'s result
    nor the parameter gradients, and with ``grad_is_scratch`` overwriting backward's result
    changes neither the parameter gradients nor the next forward and backward; a bias handed
    over by ``defer_bias`` is the parameter array itself, and adding it to the training-mode
    output gives the inference one, with the same gradients.

    Agreement is to 1e-12 relative in float64 and 1e-5 in float32.
    """
    with _checking("check_fast_paths", plugin, (Layer, Activation, Loss), registry) as make:
        for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-5)):
            rng = np.random.default_rng(SEED)
            obj = make()
            if isinstance(obj, Activation):
                _activation_fast_paths(obj, rng, np.dtype(dtype), rtol)
            elif isinstance(obj, Loss):
                y_pred, y_true = (a.astype(dtype) for a in _loss_points(obj, rng))
                value, grad = obj.value_and_grad(y_pred, y_true)
                _expect_same(
                    f"value_and_grad()[0] ({dtype.__name__})",
                    value,
                    obj.value(y_pred, y_true),
                    rtol,
                )
                _expect_same(
                    f"value_and_grad()[1] ({dtype.__name__})", grad, obj.grad(y_pred, y_true), rtol
                )
                _fused_fast_paths(obj, y_true, rng, np.dtype(dtype), rtol)
            else:
                _layer_fast_paths(obj, make(), rng, np.dtype(dtype), rtol)


def _fused_fast_paths(
    loss: Loss, y_true: Array, rng: np.random.Generator, dtype: np.dtype[Any], rtol: float
) -> None:
    """``fused_value_and_grad`` against ``value_and_grad`` then ``backward``, for every
    registered layer and activation the loss says it fuses with."""
    registry = current_registry()
    k = y_true.shape[1]
    for kind in ("layer", "activation"):
        for name in registry.names(kind):
            cls = registry.get(kind, name)
            try:  # each candidate built, as the model's last layer would be
                plugin = cls(**cls.example_params)
                layer = ActivationLayer(plugin) if isinstance(plugin, Activation) else plugin
                if layer.output_dim(k) != k:
                    continue
                layer.build(k, np.random.default_rng(SEED), dtype)
            except Exception:  # another plugin's own problem, which its own checks report
                continue
            if loss.fuses_with(layer):
                _check_fusion(loss, layer, y_true, rng, dtype, rtol)


def _check_fusion(
    loss: Loss,
    layer: Layer,
    y_true: Array,
    rng: np.random.Generator,
    dtype: np.dtype[Any],
    rtol: float,
) -> None:
    if layer.parameters():
        raise AssertionError(f"fuses_with({layer.name!r}), a layer with parameters")
    x = rng.standard_normal(y_true.shape).astype(dtype)
    y_pred = layer.forward(x, training=True)
    fused = loss.fused_value_and_grad(layer, y_pred.copy(), y_true)
    if fused is None:  # declining is allowed (the model then takes the unfused path)
        return
    value, grad = loss.value_and_grad(y_pred, y_true)
    label = f"with the {layer.name!r} layer ({dtype})"
    _expect_same(f"fused_value_and_grad()[0] {label}", fused[0], value, rtol)
    _expect_same(f"fused_value_and_grad()[1] {label}", fused[1], layer.backward(grad), rtol)


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
    if act.derivative_from_output:  # the claim, and the in-place calls the core then makes
        derivative = act.derivative(x, y)
        _expect_same(f"derivative(y, y) ({dtype})", act.derivative(y, y), derivative, rtol)
        z = x.copy()
        act.forward_into(z, z)
        _expect_same(f"forward_into(x, x) ({dtype})", z, y, rtol)
        out = np.full_like(x, np.nan)
        act.backward_into(z, z, dy, out)
        _expect_same(f"backward_into(y, y, dy) ({dtype})", out, expected, rtol)
    if act.backward_in_place:  # the claim: the result may overwrite dy
        out = dy.copy()
        act.backward_into(x, y, out, out)
        _expect_same(f"backward_into(x, y, dy, dy) ({dtype})", out, expected, rtol)
    if not act.fuses_bias:  # the model never calls forward_bias_into then
        return
    bias = rng.standard_normal(x.shape[1]).astype(dtype)
    expected = act.forward(x + bias)
    out = np.full_like(x, np.nan)
    act.forward_bias_into(x, bias, out)
    _expect_same(f"forward_bias_into ({dtype})", out, expected, rtol, "forward(x + bias)")
    z = x.copy()
    act.forward_bias_into(z, bias, z)
    _expect_same(f"forward_bias_into(x, bias, x) ({dtype})", z, expected, rtol, "forward(x + bias)")


def _layer_fast_paths(
    layer: Layer, twin: Layer, rng: np.random.Generator, dtype: np.dtype[Any], rtol: float
) -> None:
    n_in = 4
    n_out = layer.output_dim(n_in)
    layer.build(n_in, np.random.default_rng(SEED), dtype)
    twin.build(n_in, np.random.default_rng(SEED), dtype)
    twin.needs_input_grad = False
    for p, q in zip(layer.parameters(), twin.parameters(), strict=True):
        noise = rng.standard_normal(np.shape(p))  # so that zero-initialised biases count too
        p += noise.astype(p.dtype)
        q += noise.astype(q.dtype)
    adopted = type(twin).adopt is not Layer.adopt
    if adopted:  # the twin also moves to arrays the caller owns, as a packing model does
        params = [p.copy() for p in twin.parameters()]
        grads = [np.zeros_like(g) for g in twin.gradients()]
        twin.adopt(params, grads)
        for what, given, now in (
            ("parameters()", params, twin.parameters()),
            ("gradients()", grads, twin.gradients()),
        ):
            if len(now) != len(given) or any(a is not b for a, b in zip(now, given, strict=False)):
                raise AssertionError(f"after adopt(), {what} must return the adopted arrays")
    x = rng.standard_normal((5, n_in)).astype(dtype)
    dy = rng.standard_normal((5, n_out)).astype(dtype)
    inference = np.array(layer.forward(x, training=False))
    trained = layer.forward(x, training=True)
    _expect_same(f"forward(training=True) ({dtype})", trained, inference, rtol)
    dx = np.array(layer.backward(dy.copy()))
    grads = [np.array(g) for g in layer.gradients()]
    label = "needs_input_grad=False" + (" after adopt()" if adopted else "")
    _expect_same(f"forward with {label} ({dtype})", twin.forward(x, training=True), inference, rtol)
    twin.backward(dy.copy())
    for i, (g, g_twin) in enumerate(zip(grads, twin.gradients(), strict=True)):
        _expect_same(f"gradient {i} with {label} ({dtype})", g_twin, g, rtol)
    if layer.output_is_scratch:  # the claim, and the overwrite in place the core then allows
        layer.forward(x, training=True)[...] = np.nan
        label = "forward's output overwritten (output_is_scratch)"
        _expect_same(f"backward with {label} ({dtype})", layer.backward(dy.copy()), dx, rtol)
        for i, (g, again) in enumerate(zip(grads, layer.gradients(), strict=True)):
            _expect_same(f"gradient {i} with {label} ({dtype})", again, g, rtol)
    if layer.grad_is_scratch:  # the claim, and the overwrite in place the core then allows
        layer.forward(x, training=True)
        layer.backward(dy.copy())[...] = np.nan
        label = "backward's result overwritten (grad_is_scratch)"
        for i, (g, again) in enumerate(zip(grads, layer.gradients(), strict=True)):
            _expect_same(f"gradient {i} with {label} ({dtype})", again, g, rtol)
        layer.forward(x, training=True)
        _expect_same(f"backward again with {label} ({dtype})", layer.backward(dy.copy()), dx, rtol)
    bias = twin.defer_bias()
    if bias is not None:  # the bias the optimizer updates, then left out of training only
        if not any(bias is p for p in twin.parameters()):
            raise AssertionError("defer_bias() must return the bias array parameters() holds")
        label = "after defer_bias()"
        trained = np.array(twin.forward(x, training=True)) + bias
        _expect_same(f"forward(training=True) + bias {label} ({dtype})", trained, inference, rtol)
        twin.backward(dy.copy())
        for i, (g, g_twin) in enumerate(zip(grads, twin.gradients(), strict=True)):
            _expect_same(f"gradient {i} {label} ({dtype})", g_twin, g, rtol)
        again = twin.forward(x, training=False)
        _expect_same(f"forward(training=False) {label} ({dtype})", again, inference, rtol)


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
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return name, key.tobytes(), pos, has_gauss, gauss


def _quadratic_grads(
    params: list[Array], centres: list[Array], curvature: list[Array]
) -> list[Array]:
    """Gradients of :func:`_quadratic`, in the parameters' dtype."""
    return [
        (c * (p - m)).astype(p.dtype) for p, m, c in zip(params, centres, curvature, strict=True)
    ]


def _quadratic(params: list[Array], centres: list[Array], curvature: list[Array]) -> float:
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
    optimizer is constructed without parameters.
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


def check_schedule(plugin: PluginRef, *, registry: Registry | None = None) -> None:
    """``t = 0`` gives ``lr0``; every rate up to ``t = 1000`` and at ``10**6`` is finite, >= 0.

    Also checked: ``per`` is ``"epoch"`` or ``"step"``.
    """
    with _checking("check_schedule", plugin, (Schedule,), registry) as make:
        schedule = make()
        if schedule.per not in ("epoch", "step"):
            raise AssertionError(f"per is {schedule.per!r}, expected 'epoch' or 'step'")
        for lr0 in (0.1, 1.0):
            first = schedule(lr0, 0)
            if not math.isclose(first, lr0, rel_tol=1e-12):
                raise AssertionError(f"the rate at t=0 is {first!r}, expected lr0 = {lr0}")
            for t in [*range(1001), 10**6]:
                lr = schedule(lr0, t)
                if not isinstance(lr, int | float | np.floating) or not (
                    math.isfinite(lr) and lr >= 0
                ):
                    raise AssertionError(
                        f"the rate at t={t} is {lr!r}, expected a finite float >= 0"
                    )


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
        params = cls.example_params if plugin is cls else plugin.get_params()
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
    Layer: (check_schema, check_shapes_and_dtypes, check_layer_gradient, check_fast_paths),
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
}
_CHECKS = {interface.kind: checks for interface, checks in _CHECK_KINDS.items()}
