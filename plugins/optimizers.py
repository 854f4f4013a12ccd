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
        if self.momentum == 0:
            for p, g in zip(params, grads, strict=True):
                p -= lr * g
            return
        if not hasattr(self, "_velocity"):  # created on the first step, in parameter order
            self._velocity = [np.zeros_like(p) for p in params]
        for p, g, v in zip(params, grads, self._velocity, strict=True):
            v *= self.momentum
            v -= lr * g
            if self.nesterov:
                p += self.momentum * v - lr * g
            else:
                p += v


@hookimpl
def register_optimizers() -> list[type[Optimizer]]:
    return [SGD]
