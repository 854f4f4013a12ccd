"""More initializers. A weight is ``(n_in, n_out)``: fan-in ``shape[0]``, fan-out ``shape[-1]``;
a bias ``(n,)`` counts ``n`` for both."""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import Field

from microfw import Initializer
from microfw.core.interfaces import RNG, Array

TRUNCATION = 2.0
"""truncated_normal redraws values beyond this many standard deviations."""


class HeUniform(Initializer):
    """U(-l, l) with l = sqrt(6 / n_in) (He-uniform; variance 2/n_in), for ReLU layers."""

    name = "he_uniform"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        limit = math.sqrt(6 / shape[0])
        return rng.uniform(-limit, limit, shape)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 2.0 / fan_in


class LecunUniform(Initializer):
    """U(-l, l) with l = sqrt(3 / n_in) (LeCun-uniform; variance 1/n_in), for SELU layers."""

    name = "lecun_uniform"

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        limit = math.sqrt(3 / shape[0])
        return rng.uniform(-limit, limit, shape)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 1.0 / fan_in


class Orthogonal(Initializer):
    """gain * Q, Q from the QR decomposition of an N(0, 1) draw with the signs of diag(R).

    Saxe et al. 2014, as torch.nn.init.orthogonal_ and Keras: orthonormal columns when
    n_in >= n_out, else orthonormal rows; variance gain^2 / max(n_in, n_out).

    A 1-D shape (a bias) is one row: a random unit vector times ``gain``.
    """

    name = "orthogonal"

    gain: Annotated[float, Field(gt=0)] = 1.0

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        matrix = (1, shape[0]) if len(shape) == 1 else (shape[0], math.prod(shape[1:]))
        a = rng.standard_normal(matrix)
        tall = a.shape[0] >= a.shape[1]
        q, r = np.linalg.qr(a if tall else a.T)
        q *= np.sign(np.diag(r))  # the unique Q with a positive diagonal of R: uniform
        out: Array = (q if tall else q.T).reshape(shape) * self.gain
        return out

    def variance(self, fan_in: int, fan_out: int) -> float:
        return self.gain**2 / max(fan_in, fan_out)


class Constant(Initializer):
    """Every element equal to ``value``."""

    name = "constant"

    value: float = 0.0

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        return np.full(shape, self.value, dtype=np.float64)

    def variance(self, fan_in: int, fan_out: int) -> float:
        return 0.0


class TruncatedNormal(Initializer):
    """N(0, 1) * std, values beyond 2 std redrawn (Keras's TruncatedNormal).

    Variance std^2 (1 - 4 phi(2) / (2 Phi(2) - 1)) = 0.7737 std^2.
    """

    name = "truncated_normal"

    std: Annotated[float, Field(gt=0)] = 0.05

    def __call__(self, shape: tuple[int, ...], rng: RNG) -> Array:
        z = rng.standard_normal(shape)
        outside = np.abs(z) > TRUNCATION
        while outside.any():
            z[outside] = rng.standard_normal((int(outside.sum()),))
            outside = np.abs(z) > TRUNCATION
        out: Array = z * self.std
        return out

    def variance(self, fan_in: int, fan_out: int) -> float:
        c = TRUNCATION
        pdf = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
        mass = math.erf(c / math.sqrt(2))  # Phi(c) - Phi(-c)
        return self.std**2 * (1 - 2 * c * pdf / mass)


INITIALIZERS: list[type[Initializer]] = [
    HeUniform,
    LecunUniform,
    Orthogonal,
    Constant,
    TruncatedNormal,
]
