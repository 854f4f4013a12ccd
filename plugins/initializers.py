"""Built-in initializers. Fan-in is ``shape[0]`` of a ``(n_in, n_out)`` weight."""

from __future__ import annotations

import numpy as np

from microfw import Initializer, hookimpl
from microfw.interfaces import RNG, Array


class Xavier(Initializer):
    """N(0, 1) / sqrt(n_in): the seed tutorials' "xavier", which is LeCun-normal (var 1/n_in)."""

    name = "xavier"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        return rng.standard_normal(shape) / np.sqrt(shape[0])

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 1.0 / fan_in


class Zeros(Initializer):
    """All zeros (the default bias initializer)."""

    name = "zeros"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        return np.zeros(shape)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 0.0


@hookimpl
def register_initializers() -> list[type[Initializer]]:
    return [Xavier, Zeros]
