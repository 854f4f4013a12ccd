"""Built-in learning-rate schedules (annealing), per epoch or per step."""

from __future__ import annotations

from microfw import Schedule, hookimpl


class Constant(Schedule):
    """lr(t) = lr0."""

    name = "constant"

    def __call__(self, lr0: float, t: int) -> float:
        return lr0


@hookimpl
def register_schedules() -> list[type[Schedule]]:
    return [Constant]
