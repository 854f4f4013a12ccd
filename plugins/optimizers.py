"""Built-in optimizers."""

from __future__ import annotations

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
            self._scratch = [np.empty_like(p) for p in params]
            self._velocity = [np.zeros_like(p) for p in params] if self.momentum else []
        if not self.momentum:
            for p, g, s in zip(params, grads, self._scratch, strict=True):
                np.multiply(g, lr, out=s)
                p -= s
            return
        for p, g, v, s in zip(params, grads, self._velocity, self._scratch, strict=True):
            np.multiply(g, lr, out=s)
            v *= self.momentum
            v -= s
            if self.nesterov:  # p += momentum v - lr g
                p -= s
                np.multiply(v, self.momentum, out=s)
                p += s
            else:
                p += v


@hookimpl
def register_optimizers() -> list[type[Optimizer]]:
    return [SGD]
