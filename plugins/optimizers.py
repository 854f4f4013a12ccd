"""Built-in optimizers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import numpy as np
from pydantic import Field

from microfw import Optimizer, hookimpl
from microfw.interfaces import Array


class SGD(Optimizer):
    """p -= lr g; with momentum v = momentum v - lr g, p += v (nesterov: p += momentum v - lr g)."""

    name = "sgd"

    lr: Annotated[float, Field(gt=0)] = 0.01
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    nesterov: bool = False

    def update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        if not hasattr(self, "_scratch"):  # state created on the first step, in parameter order
            size = min(max((p.size for p in params), default=0), _CHUNK)
            self._scratch = np.empty(size, dtype=params[0].dtype if params else float)
            self._velocity = [np.zeros_like(p) for p in params] if self.momentum else []
        scratch = self._scratch
        if not self.momentum:
            for p, g in zip(params, grads, strict=True):
                for pc, gc in _chunks(p, g):
                    pc -= _times(gc, lr, scratch)
            return
        for p, g, v in zip(params, grads, self._velocity, strict=True):
            for pc, gc, vc in _chunks(p, g, v):
                s = _times(gc, lr, scratch)
                vc *= self.momentum
                vc -= s
                if self.nesterov:  # p += momentum v - lr g
                    pc -= s
                    pc += _times(vc, self.momentum, scratch)
                else:
                    pc += vc


_CHUNK = 16384
"""Elements updated at a time: the scratch array stays in cache, and no temporary of a
parameter's size is allocated."""


def _chunks(*arrays: Array) -> Iterator[tuple[Array, ...]]:
    """Aligned flat chunks of at most ``_CHUNK`` elements of same-shaped arrays.

    Arrays that are not all C-contiguous (a flat view would be a copy) come whole.
    """
    if not all(a.flags.c_contiguous for a in arrays):
        yield arrays
        return
    flat = [a.reshape(-1) for a in arrays]
    for start in range(0, flat[0].size, _CHUNK):
        yield tuple(a[start : start + _CHUNK] for a in flat)


def _times(a: Array, factor: float, scratch: Array) -> Array:
    """``a * factor``, in ``scratch`` when ``a`` is a flat chunk that fits."""
    if a.ndim == 1 and a.size <= scratch.size:
        out = scratch[: a.size]
        return np.multiply(a, factor, out=out)
    return a * factor


@hookimpl
def register_optimizers() -> list[type[Optimizer]]:
    return [SGD]
