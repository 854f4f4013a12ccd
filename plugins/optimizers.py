"""Built-in optimizers."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from microfw import Optimizer, hookimpl
from microfw.core.interfaces import Array

from . import kernels


class SGD(Optimizer):
    """p -= lr g; with momentum v = momentum v - lr g, p += v (nesterov: p += momentum v - lr g)."""

    name = "sgd"

    lr: Annotated[float, Field(gt=0)] = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False

    def reset_state(self) -> None:
        """Drop the velocities (and chunks); the next step creates them anew, at zero."""
        self.__dict__.pop("_plan", None)

    def update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        plan = self.__dict__.get("_plan")
        if plan is None or plan.with_velocity != (self.momentum > 0):
            # State made on the first step, and anew (at zero) if momentum is switched on or off.
            plan = self._plan = _Plan(with_velocity=self.momentum > 0)
        chunks = plan.chunks_for(params, grads)
        for p, g, v in plan.compiled:  # one pass each, the same bits as the chunks'
            kernels.sgd_step(p, g, v, lr, self.momentum, self.nesterov)
        if not self.momentum:
            for pc, gc, _, s in chunks:
                np.multiply(gc, lr, out=s)
                pc -= s
            return
        momentum = self.momentum
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
        self.compiled: list[tuple[Array, Array, Array]] = []  # (param, grad, velocity), flat
        self.chunks: list[tuple[Array, Array, Array, Array]] = []

    def chunks_for(
        self, params: list[Array], grads: list[Array]
    ) -> list[tuple[Array, Array, Array, Array]]:
        """The chunks of these arrays (the same lists as last time: no work at all)."""
        if params is self.params and grads is self.grads:
            return self.chunks
        if not _same_arrays(params, self.params):
            self.velocity = [np.zeros_like(p) for p in params] if self.with_velocity else []
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


@hookimpl
def register_optimizers() -> list[type[Optimizer]]:
    return [SGD]
