"""Built-in optimizers, each the ``torch.optim`` update of the same name (``sgd`` by default
Keras's momentum form), over the model's flat parameter array.

State (moments, accumulators) is created on the first step: one flat array per quantity for
all the parameters, stepped in one pass (a compiled kernel from :mod:`.kernels` with numba,
for arrays of at least ``_COMPILED_MIN`` elements; NumPy passes otherwise). ``weight_decay``
(except ``adamw``'s) is added to the gradient, ``g += weight_decay * p``, as in torch.
Gradient clipping is the :class:`~microfw.Optimizer` base's (``clip_norm``, ``clip_value``)
and comes first.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from microfw import Optimizer, hookimpl
from microfw.core.interfaces import Array

from . import kernels

Rate = Annotated[float, Field(gt=0)]
Decay = Annotated[float, Field(ge=0)]
Beta = Annotated[float, Field(ge=0, lt=1)]
Eps = Annotated[float, Field(gt=0)]


class SGD(Optimizer):
    """p -= lr g; momentum "keras": v = mu v - lr g, p += v; "pytorch": b = mu b + g, p -= lr b.

    Nesterov: ``p += mu v - lr g`` (keras) or ``p -= lr (g + mu b)`` (pytorch). The two
    momentum styles agree at a constant rate and part once a schedule changes it (Keras's
    velocity holds past rates, PyTorch's buffer holds only gradients); ``"keras"`` (the
    default) is scikit-learn's ``MLPClassifier`` rule, ``"pytorch"`` is ``torch.optim.SGD``
    (``dampening=0``). ``weight_decay`` adds ``weight_decay * p`` to the gradient in both.
    """

    name = "sgd"

    lr: Annotated[float, Field(gt=0)] = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False
    weight_decay: Decay = 0.0
    momentum_style: Literal["keras", "pytorch"] = "keras"

    def reset_state(self) -> None:
        """Drop the velocities (and chunks); the next step creates them anew, at zero."""
        self.__dict__.pop("_plan", None)
        self.__dict__.pop("_pending", None)

    def _state_name(self) -> str:
        return "velocity" if self.momentum_style == "keras" else "momentum_buffer"

    def state_arrays(self) -> dict[str, Array]:
        pending = self.__dict__.get("_pending")
        if pending is not None:
            return {self._state_name(): pending}
        plan = self.__dict__.get("_plan")
        if plan is None or not plan.with_velocity or plan.flat_velocity is None:
            return {}
        return {self._state_name(): plan.flat_velocity}

    def load_state_arrays(self, arrays: dict[str, Array]) -> None:
        expected = {self._state_name()} if self.momentum > 0 else set()
        if set(arrays) - expected or (arrays and set(arrays) != expected):
            raise ValueError(
                f"sgd (momentum={self.momentum}, momentum_style={self.momentum_style!r}) keeps "
                f"{sorted(expected) or 'no state'}, got {sorted(arrays)}"
            )
        self.reset_state()
        if arrays:
            self._pending = _flat_state(arrays[self._state_name()], self._state_name())

    def update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        if self.weight_decay:
            for p, g in zip(params, grads, strict=True):
                g += p * p.dtype.type(self.weight_decay)
        plan = self.__dict__.get("_plan")
        if plan is None or plan.with_velocity != (self.momentum > 0):
            # State made on the first step, and anew (at zero) if momentum is switched on or off.
            plan = self._plan = _Plan(with_velocity=self.momentum > 0)
        chunks = plan.chunks_for(params, grads)
        if "_pending" in self.__dict__:  # state loaded from a file, put in place now
            _restore(plan.flat_velocity, self.__dict__.pop("_pending"), self._state_name())
        torch = self.momentum_style == "pytorch"
        if plan.compiled:
            step = kernels.sgd_torch_step if torch and self.momentum else kernels.sgd_step
            for p, g, v in plan.compiled:  # one pass each, the same bits as the chunks'
                step(p, g, v, lr, self.momentum, self.nesterov)
        if not self.momentum:
            for pc, gc, _, s in chunks:
                np.multiply(gc, lr, out=s)
                pc -= s
            return
        momentum = self.momentum
        if torch:
            for pc, gc, vc, s in chunks:
                vc *= momentum
                vc += gc  # b = mu b + g
                if self.nesterov:  # p -= lr (g + mu b)
                    np.multiply(vc, momentum, out=s)
                    np.add(gc, s, out=s)
                    s *= lr
                else:
                    np.multiply(vc, lr, out=s)
                pc -= s
            return
        for pc, gc, vc, s in chunks:
            np.multiply(gc, lr, out=s)  # s = lr g
            vc *= momentum
            vc -= s
            if self.nesterov:  # p += momentum v - lr g
                pc -= s
                np.multiply(vc, momentum, out=s)
                pc += s
            else:
                pc += vc


_CHUNK = 16384
"""Elements updated at a time: the scratch array stays in cache, and no temporary of a
parameter's size is allocated."""

_COMPILED_MIN = 4096
"""Arrays from this size take the compiled step (with numba); below it, calling either path
costs more than the arithmetic (the benchmarks' XOR workload shows it)."""


class _Plan:
    """SGD's state: velocities (in parameter order) and the flat chunks the update walks.

    The chunks ``(param, grad, velocity, scratch)`` cover every parameter in pieces of at most
    ``_CHUNK`` elements; updating piece by piece in one small scratch array needs no temporary
    of a parameter's size. With numba, arrays of at least ``_COMPILED_MIN`` elements are in
    ``compiled`` instead, as whole flat ``(param, grad, velocity)`` triples for the compiled
    step. Both are made once and remade only when other arrays are passed.
    """

    def __init__(self, *, with_velocity: bool) -> None:
        self.with_velocity = with_velocity
        self.params: list[Array] = []
        self.grads: list[Array] = []
        self.velocity: list[Array] = []
        self.flat_velocity: Array | None = None
        self.compiled: list[tuple[Array, Array, Array]] = []  # (param, grad, velocity), flat
        self.chunks: list[tuple[Array, Array, Array, Array]] = []

    def chunks_for(
        self, params: list[Array], grads: list[Array]
    ) -> list[tuple[Array, Array, Array, Array]]:
        """The chunks of these arrays (the same lists as last time: no work at all)."""
        if params is self.params and grads is self.grads:
            return self.chunks
        if not _same_arrays(params, self.params):
            self.flat_velocity, self.velocity = (
                _flat_zeros(params) if self.with_velocity else (None, [])
            )
        if not _same_arrays(params, self.params) or not _same_arrays(grads, self.grads):
            self.chunks = self._chunk(params, grads)
        self.params, self.grads = params, grads
        return self.chunks

    def _chunk(
        self, params: list[Array], grads: list[Array]
    ) -> list[tuple[Array, Array, Array, Array]]:
        largest = max((p.size for p in params), default=0)
        scratch = np.empty(min(largest, _CHUNK), dtype=params[0].dtype if params else float)
        velocity = self.velocity or params  # without momentum the slot is unused
        chunks = []
        self.compiled = []
        for p, g, v in zip(params, grads, velocity, strict=True):
            if not (p.flags.c_contiguous and g.flags.c_contiguous):
                raise ValueError(
                    f"sgd updates parameters in place through flat views; an array of shape "
                    f"{p.shape} is not contiguous (a layer must expose its own arrays)"
                )
            flat = [a.reshape(-1) for a in (p, g, v)]
            if p.size >= _COMPILED_MIN and kernels.available():
                self.compiled.append((flat[0], flat[1], flat[2]))
                continue
            for start in range(0, p.size, _CHUNK):
                pc, gc, vc = (a[start : start + _CHUNK] for a in flat)
                chunks.append((pc, gc, vc, scratch[: pc.size]))
        return chunks


def _same_arrays(a: list[Array], b: list[Array]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _flat_zeros(params: list[Array], value: float = 0.0) -> tuple[Array, list[Array]]:
    """One flat array the size of all ``params`` together (filled with ``value``), and its
    views shaped as each parameter."""
    dtype = params[0].dtype if params else np.dtype(np.float64)
    flat = np.full(sum(p.size for p in params), value, dtype)
    views, start = [], 0
    for p in params:
        views.append(flat[start : start + p.size].reshape(p.shape))
        start += p.size
    return flat, views


def _flat_state(a: Any, name: str) -> Array:
    """A loaded state array, checked to be a finite 1-D float array; copied."""
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind != "f":
        raise ValueError(f"state array {name!r} must be 1-D floats, got {a.dtype}{list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"state array {name!r} holds NaN or infinite values")
    out: Array = a.copy()
    return out


def _restore(target: Array | None, loaded: Array, name: str) -> None:
    """Copy loaded state into the state just created for the parameters."""
    if target is None or target.shape != loaded.shape or target.dtype != loaded.dtype:
        have = "none" if target is None else f"{target.dtype}{list(target.shape)}"
        raise ValueError(
            f"the loaded state array {name!r} is {loaded.dtype}{list(loaded.shape)}, but the "
            f"parameters stepped need {have}"
        )
    np.copyto(target, loaded)


def _contiguous_flat(a: Array) -> Array:
    if not a.flags.c_contiguous:
        raise ValueError(
            f"optimizers update parameters in place through flat views; an array of shape "
            f"{a.shape} is not contiguous (a layer must expose its own arrays)"
        )
    return a.reshape(-1)


class _State:
    """The state of one optimizer over one list of parameters: a flat array per quantity
    (views per parameter), the step count, and a scratch array for the NumPy passes."""

    def __init__(self, params: list[Array], quantities: dict[str, float]) -> None:
        self.params = params
        self.flat: dict[str, Array] = {}
        per_param: dict[str, list[Array]] = {}
        for name, initial in quantities.items():
            self.flat[name], views = _flat_zeros(params, initial)
            per_param[name] = [v.reshape(-1) for v in views]
        self.views = [{name: per_param[name][i] for name in quantities} for i in range(len(params))]
        self.t = 0
        largest = max((p.size for p in params), default=0)
        dtype = params[0].dtype if params else np.dtype(np.float64)
        self.scratch = (np.empty(largest, dtype), np.empty(largest, dtype))


def _with_decay(p: Array, g: Array, weight_decay: float, scratch: Array) -> Array:
    """``g + weight_decay p`` in ``scratch`` (torch's coupled weight decay), or ``g`` itself."""
    if not weight_decay:
        return g
    np.multiply(p, p.dtype.type(weight_decay), out=scratch)
    np.add(g, scratch, out=scratch)
    return scratch


class _Stateful(Optimizer):
    """An optimizer whose state is flat arrays created lazily (:class:`_State`): subclasses
    name their quantities (:meth:`_quantities`) and step one flat parameter (:meth:`_step`)."""

    _uses_compiled: ClassVar[bool] = False

    def _quantities(self) -> dict[str, float]:
        """The state arrays, by name, with their initial value."""
        raise NotImplementedError

    def _step(
        self,
        p: Array,
        g: Array,
        state: dict[str, Array],
        scratch: tuple[Array, Array],
        lr: float,
        t: int,
    ) -> None:
        """Update the flat parameter ``p`` in place; ``t`` is this step's number, from 1."""
        raise NotImplementedError

    def reset_state(self) -> None:
        """Drop the state; the next step creates it anew (its own step count from 0)."""
        self.__dict__.pop("_state", None)
        self.__dict__.pop("_pending", None)

    def state_arrays(self) -> dict[str, Array]:
        pending = self.__dict__.get("_pending")
        if pending is not None:
            return dict(pending)
        state: _State | None = self.__dict__.get("_state")
        if state is None:
            return {}
        return {**state.flat, "step": np.array(state.t, dtype=np.int64)}

    def load_state_arrays(self, arrays: dict[str, Array]) -> None:
        expected = {*self._quantities(), "step"}
        if set(arrays) != expected:
            raise ValueError(
                f"{self.name} (with these parameters) keeps state {sorted(expected)}, got "
                f"{sorted(arrays)}"
            )
        step = np.asarray(arrays["step"])
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise ValueError(f"state 'step' must be an integer >= 0, got {step!r}")
        loaded: dict[str, Array] = {
            name: _flat_state(a, name) for name, a in arrays.items() if name != "step"
        }
        if len({a.size for a in loaded.values()}) > 1:
            raise ValueError(f"state arrays of different sizes: {sorted(loaded)}")
        self.reset_state()
        self._pending = {**loaded, "step": np.array(int(step), dtype=np.int64)}

    def update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        state: _State | None = self.__dict__.get("_state")
        quantities = self._quantities()
        if (
            state is None
            or not _same_arrays(params, state.params)
            or state.flat.keys() != quantities.keys()  # e.g. amsgrad switched on: anew
        ):
            state = self._state = _State(params, quantities)
            pending = self.__dict__.pop("_pending", None)
            if pending is not None:
                for name, target in state.flat.items():
                    _restore(target, pending[name], name)
                state.t = int(pending["step"])
        state.t += 1
        for p, g, views in zip(params, grads, state.views, strict=True):
            pf, gf = _contiguous_flat(p), _contiguous_flat(g)
            scratch = (state.scratch[0][: pf.size], state.scratch[1][: pf.size])
            self._step(pf, gf, views, scratch, lr, state.t)


class Adam(_Stateful):
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr m^ / (sqrt(v^) + eps) (torch)."""

    name = "adam"
    decoupled: ClassVar[bool] = False

    lr: Rate = 0.001
    beta_1: Beta = 0.9
    beta_2: Beta = 0.999
    eps: Eps = 1e-8
    weight_decay: Decay = 0.0
    amsgrad: bool = False

    def _quantities(self) -> dict[str, float]:
        names = ("m", "v", "v_max") if self.amsgrad else ("m", "v")
        return dict.fromkeys(names, 0.0)

    def _step(
        self,
        p: Array,
        g: Array,
        state: dict[str, Array],
        scratch: tuple[Array, Array],
        lr: float,
        t: int,
    ) -> None:
        m, v = state["m"], state["v"]
        v_max = state.get("v_max", v)
        wd = self.weight_decay
        if p.size >= _COMPILED_MIN and kernels.available():
            kernels.adam_step(
                p,
                g,
                m,
                v,
                v_max,
                lr=lr,
                beta_1=self.beta_1,
                beta_2=self.beta_2,
                eps=self.eps,
                weight_decay=wd,
                decoupled=self.decoupled,
                amsgrad=self.amsgrad,
                step=t,
            )
            return
        # The kernel's operations, in its order, as whole-array passes.
        dt = p.dtype.type
        s1, s2 = scratch
        if self.decoupled:
            p *= dt(1 - lr * wd)
        else:
            g = _with_decay(p, g, wd, s1)
        m *= dt(self.beta_1)
        np.multiply(g, dt(1 - self.beta_1), out=s2)
        m += s2
        np.multiply(g, dt(1 - self.beta_2), out=s2)  # ((1 - b2) g) g, torch's order
        s2 *= g
        v *= dt(self.beta_2)
        v += s2
        if self.amsgrad:
            np.maximum(v_max, v, out=v_max)
        np.sqrt(v_max if self.amsgrad else v, out=s2)
        s2 /= dt(math.sqrt(1 - self.beta_2**t))
        s2 += dt(self.eps)
        np.divide(m, s2, out=s2)
        s2 *= dt(lr / (1 - self.beta_1**t))
        p -= s2


class AdamW(Adam):
    """p *= 1 - lr weight_decay, then Adam without weight decay in g (torch.optim.AdamW)."""

    name = "adamw"
    decoupled = True

    weight_decay: Decay = 0.01


class RMSprop(_Stateful):
    """s = rho s + (1 - rho) g^2; p -= lr g / (sqrt(s) + eps) (torch.optim.RMSprop, rho = alpha).

    ``centered``: the denominator is ``sqrt(s - a^2) + eps`` with ``a = rho a + (1 - rho) g``;
    ``momentum`` > 0: ``b = momentum b + g / denominator`` and ``p -= lr b``.
    """

    name = "rmsprop"

    lr: Rate = 0.01
    rho: Beta = 0.99
    eps: Eps = 1e-8
    weight_decay: Decay = 0.0
    momentum: Beta = 0.0
    centered: bool = False

    def _quantities(self) -> dict[str, float]:
        names = ["square_avg"]
        if self.centered:
            names.append("grad_avg")
        if self.momentum > 0:
            names.append("momentum_buffer")
        return dict.fromkeys(names, 0.0)

    def _step(
        self,
        p: Array,
        g: Array,
        state: dict[str, Array],
        scratch: tuple[Array, Array],
        lr: float,
        t: int,
    ) -> None:
        if p.size >= _COMPILED_MIN and kernels.available():
            kernels.rmsprop_step(
                p,
                g,
                state["square_avg"],
                state.get("grad_avg", p),  # unused unless centered
                state.get("momentum_buffer", p),  # unused without momentum
                lr=lr,
                rho=self.rho,
                eps=self.eps,
                weight_decay=self.weight_decay,
                momentum=self.momentum,
                centered=self.centered,
            )
            return
        dt = p.dtype.type
        s1, s2 = scratch
        g = _with_decay(p, g, self.weight_decay, s1)
        rho = dt(self.rho)
        square_avg = state["square_avg"]
        square_avg *= rho
        np.multiply(g, dt(1 - self.rho), out=s2)  # ((1 - rho) g) g, torch's order
        s2 *= g
        square_avg += s2
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg *= rho
            np.multiply(g, dt(1 - self.rho), out=s2)
            grad_avg += s2
            np.multiply(grad_avg, grad_avg, out=s2)
            np.subtract(square_avg, s2, out=s2)
            np.sqrt(s2, out=s2)
        else:
            np.sqrt(square_avg, out=s2)
        s2 += dt(self.eps)
        np.divide(g, s2, out=s2)
        if self.momentum > 0:
            buf = state["momentum_buffer"]
            buf *= dt(self.momentum)
            buf += s2
            np.multiply(buf, dt(lr), out=s2)
        else:
            s2 *= dt(lr)
        p -= s2


class Adagrad(_Stateful):
    """s += g^2; p -= lr / (1 + (t - 1) lr_decay) g / (sqrt(s) + eps) (torch.optim.Adagrad)."""

    name = "adagrad"

    lr: Rate = 0.01
    eps: Eps = 1e-10
    weight_decay: Decay = 0.0
    initial_accumulator_value: Decay = 0.0
    lr_decay: Decay = 0.0

    def _quantities(self) -> dict[str, float]:
        return {"sum": self.initial_accumulator_value}

    def _step(
        self,
        p: Array,
        g: Array,
        state: dict[str, Array],
        scratch: tuple[Array, Array],
        lr: float,
        t: int,
    ) -> None:
        decayed = lr / (1 + (t - 1) * self.lr_decay)
        if p.size >= _COMPILED_MIN and kernels.available():
            kernels.adagrad_step(
                p, g, state["sum"], lr=decayed, eps=self.eps, weight_decay=self.weight_decay
            )
            return
        dt = p.dtype.type
        s1, s2 = scratch
        g = _with_decay(p, g, self.weight_decay, s1)
        accumulator = state["sum"]
        np.multiply(g, g, out=s2)
        accumulator += s2
        np.sqrt(accumulator, out=s2)
        s2 += dt(self.eps)
        np.divide(g, s2, out=s2)
        s2 *= dt(decayed)
        p -= s2


@hookimpl
def register_optimizers() -> list[type[Optimizer]]:
    return [SGD, Adam, AdamW, RMSprop, Adagrad]
