"""Built-in learning-rate schedules (annealing), per epoch or per step (``per``).

Parameters that depend on the length of a run (``step_size``, ``t_max``) have no default.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field

from microfw import Schedule, hookimpl

Positive = Annotated[float, Field(gt=0)]


class Constant(Schedule):
    """lr(t) = lr0."""

    name = "constant"

    def __call__(self, lr0: float, t: int) -> float:
        return lr0


class Step(Schedule):
    """lr(t) = lr0 * gamma ** floor(t / step_size): drop by gamma every step_size."""

    name = "step"
    example_params = {"step_size": 10}

    step_size: Annotated[int, Field(gt=0)]
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1

    def __call__(self, lr0: float, t: int) -> float:
        return lr0 * self.gamma ** (t // self.step_size)


class Exponential(Schedule):
    """lr(t) = lr0 * rate ** t."""

    name = "exponential"

    rate: Annotated[float, Field(gt=0, le=1)] = 0.95

    def __call__(self, lr0: float, t: int) -> float:
        return lr0 * self.rate**t


class InverseTime(Schedule):
    """lr(t) = lr0 / (1 + decay * t) ** power.

    ``power=1`` is the classic 1/t decay. ``decay=1, power=p`` is scikit-learn's
    ``learning_rate="invscaling"``, eta0 / t'^p with ``power_t=p``: scikit-learn counts
    t' = t + 1 from 1, microfw counts t from 0.
    """

    name = "inverse_time"

    decay: Positive = 1.0
    power: Positive = 1.0

    def __call__(self, lr0: float, t: int) -> float:
        return float(lr0 / (1 + self.decay * t) ** self.power)


class Cosine(Schedule):
    """lr(t) = lr_min + (lr0 - lr_min) (1 + cos(pi min(t, t_max) / t_max)) / 2."""

    name = "cosine"
    example_params = {"t_max": 100}

    t_max: Annotated[int, Field(gt=0)]
    lr_min: Annotated[float, Field(ge=0)] = 0.0

    def __call__(self, lr0: float, t: int) -> float:
        progress = min(t, self.t_max) / self.t_max
        return self.lr_min + (lr0 - self.lr_min) * (1 + math.cos(math.pi * progress)) / 2


@hookimpl
def register_schedules() -> list[type[Schedule]]:
    return [Constant, Step, Exponential, InverseTime, Cosine]
