"""Built-in initializers. A weight is ``(n_in, n_out)``: fan-in ``shape[0]``, fan-out ``shape[-1]``.

Each scales a draw after taking it (``standard_normal(shape) * std``), exactly as the seed
tutorials wrote it, so that their numbers reproduce through a legacy RNG adapter.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from microfw import Initializer, hookimpl
from microfw.core.interfaces import RNG, Array


class Plain(Initializer):
    """N(0, 1) * 0.01 (the seeds' "plain"; variance 1e-4)."""

    name = "plain"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        out: Array = rng.standard_normal(shape) * 0.01
        return out

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 1e-4


class Xavier(Initializer):
    """N(0, 1) / sqrt(n_in): the seed tutorials' "xavier", which is LeCun-normal (var 1/n_in)."""

    name = "xavier"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        # Divided, not multiplied by 1/sqrt(n_in): the seeds' exact expression, bit for bit.
        out: Array = rng.standard_normal(shape) / np.sqrt(shape[0])
        return out

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 1.0 / fan_in


class He(Initializer):
    """N(0, 1) * sqrt(2 / n_in) (He-normal, for ReLU layers; variance 2/n_in)."""

    name = "he"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        out: Array = rng.standard_normal(shape) * np.sqrt(2 / shape[0])
        return out

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 2.0 / fan_in


class GlorotUniform(Initializer):
    """U(-l, l) with l = sqrt(6 / (n_in + n_out)) (variance 2/(n_in + n_out))."""

    name = "glorot_uniform"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        limit = np.sqrt(6 / (shape[0] + shape[-1]))
        out: Array = rng.uniform(-limit, limit, shape)
        return out

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 2.0 / (fan_in + fan_out)


class GlorotNormal(Initializer):
    """N(0, 1) * sqrt(2 / (n_in + n_out)): the true Glorot (Xavier) normal initializer."""

    name = "glorot_normal"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        out: Array = rng.standard_normal(shape) * np.sqrt(2 / (shape[0] + shape[-1]))
        return out

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 2.0 / (fan_in + fan_out)


class Normal(Initializer):
    """N(0, 1) * std (variance std^2; the second seed tutorial uses std = 0.1)."""

    name = "normal"

    std: Annotated[float, Field(gt=0)] = 0.05

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        out: Array = rng.standard_normal(shape) * self.std
        return out

    def variance(self, fan_in: int, fan_out: int) -> float:
        return self.std**2


class Zeros(Initializer):
    """All zeros (the default bias initializer)."""

    name = "zeros"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        return np.zeros(shape)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 0.0


@hookimpl
def register_initializers() -> list[type[Initializer]]:
    from .more_initializers import INITIALIZERS

    return [Plain, Xavier, He, GlorotUniform, GlorotNormal, Normal, Zeros, *INITIALIZERS]
