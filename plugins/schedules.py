"""Built-in learning-rate schedules (annealing), per epoch or per step (``per``).

Parameters that depend on the length of a run (``step_size``, ``t_max``) have no default.
README's "Learning-rate schedules" table maps each to its torch / Keras / scikit-learn form.
"""

from __future__ import annotations

import bisect
import math
from typing import Annotated, Any

from pydantic import Field

from microfw import Schedule, SpecError, hookimpl, ref
from microfw.errors import Problem

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

    ``power=1`` is the classic 1/t decay. scikit-learn's ``MLPClassifier`` /
    ``MLPRegressor`` ``learning_rate="invscaling"`` (``power_t=p``) is ``decay = n_samples,
    power = p, per = "epoch"``: it sets ``lr0 / (samples seen + 1) ** p`` after each epoch,
    and the samples seen after ``t`` epochs are ``n_samples * t``. (``SGDClassifier``'s
    ``invscaling``, which counts updates, is ``decay=1, per="step"`` up to its t counted
    from 1.)
    """

    name = "inverse_time"

    decay: Positive = 1.0
    power: Positive = 1.0

    def __call__(self, lr0: float, t: int) -> float:
        return float(lr0 / (1 + self.decay * t) ** self.power)


class Cosine(Schedule):
    """lr(t) = lr_min + (lr0 - lr_min) (1 + cos(pi min(t, t_max) / t_max)) / 2.

    With ``restart``: warm restarts (SGDR, torch's ``CosineAnnealingWarmRestarts``, Keras's
    ``CosineDecayRestarts``): cycle ``i`` lasts ``t_max * t_mult**i`` and starts again from
    ``lr0 * m_mul**i``, decaying to ``lr_min``.
    """

    name = "cosine"
    example_params = {"t_max": 100}

    t_max: Annotated[int, Field(gt=0)]
    lr_min: Annotated[float, Field(ge=0)] = 0.0
    restart: bool = False
    t_mult: Annotated[float, Field(ge=1)] = 1.0
    m_mul: Annotated[float, Field(gt=0, le=1)] = 1.0

    def __call__(self, lr0: float, t: int) -> float:
        if not self.restart:
            progress = min(t, self.t_max) / self.t_max
            return self.lr_min + (lr0 - self.lr_min) * (1 + math.cos(math.pi * progress)) / 2
        cycle, length = 0, float(self.t_max)
        if self.t_mult == 1:
            cycle, rest = divmod(t, self.t_max)
            t_cur = float(rest)
        else:
            t_cur = float(t)
            while t_cur >= length:
                t_cur -= length
                length *= self.t_mult
                cycle += 1
        peak = lr0 * self.m_mul**cycle
        return self.lr_min + (peak - self.lr_min) * (1 + math.cos(math.pi * t_cur / length)) / 2


class Polynomial(Schedule):
    """lr(t) = lr_end + (lr0 - lr_end) (1 - min(t, t_max) / t_max) ** power."""

    name = "polynomial"
    example_params = {"t_max": 100}

    t_max: Annotated[int, Field(gt=0)]
    power: Positive = 1.0
    lr_end: Annotated[float, Field(ge=0)] = 0.0

    def __call__(self, lr0: float, t: int) -> float:
        remaining = 1 - min(t, self.t_max) / self.t_max
        return float(self.lr_end + (lr0 - self.lr_end) * remaining**self.power)


class PiecewiseConstant(Schedule):
    """lr(t) = lr0 * factors[i - 1], i = number of boundaries <= t (lr0 before the first)."""

    name = "piecewise_constant"
    example_params = {"boundaries": [10, 20], "factors": [0.1, 0.01]}

    boundaries: list[Annotated[int, Field(gt=0)]]
    factors: list[Annotated[float, Field(ge=0)]]

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        problems = []
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:], strict=False)):
            problems.append(
                Problem("boundaries", "must be strictly increasing", self.boundaries, True)
            )
        if len(self.factors) != len(self.boundaries):
            problems.append(
                Problem(
                    "factors",
                    f"needs one factor per boundary ({len(self.boundaries)})",
                    self.factors,
                    True,
                )
            )
        if problems:
            raise SpecError(problems)

    def __call__(self, lr0: float, t: int) -> float:
        i = bisect.bisect_right(self.boundaries, t)
        return lr0 if i == 0 else lr0 * self.factors[i - 1]


class Warmup(Schedule):
    """lr(t) = lr0 (f + (1 - f) t / k) for t < k, then after(lr0, t - k); f, k the factors.

    ``f`` is ``start_factor`` and ``k`` is ``warmup``.
    """

    name = "warmup"
    starts_at_lr0 = False
    example_params = {"warmup": 10}

    warmup: Annotated[int, Field(gt=0)]
    start_factor: Annotated[float, Field(ge=0, le=1)] = 0.0
    after: Schedule = ref("constant")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if self.after.per != self.per:
            message = (
                f"the schedule after the warm-up counts per {self.after.per!r}, the warm-up "
                f"per {self.per!r}: set both to the same"
            )
            raise SpecError([Problem("after.per", message, self.after.per, True)])

    def __call__(self, lr0: float, t: int) -> float:
        if t < self.warmup:
            return lr0 * (self.start_factor + (1 - self.start_factor) * t / self.warmup)
        return self.after(lr0, t - self.warmup)


@hookimpl
def register_schedules() -> list[type[Schedule]]:
    return [Constant, Step, Exponential, InverseTime, Cosine, Polynomial, PiecewiseConstant, Warmup]
