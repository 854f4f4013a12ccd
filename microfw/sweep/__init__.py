"""Sweeps: train many variants of a spec and keep the best (the ``sweep`` extra: Optuna).

``microfw.sweep.run(spec, data, space, ...)`` (or ``microfw sweep``) lets Optuna choose the
values of the spec fields named in a search space (:mod:`microfw.sweep.space`), trains each
trial in this process, in ``jobs`` worker processes, or as tasks on a Ray cluster (the ``ray``
extra), and keeps the study in ``DIR/study.db`` so an interrupted sweep resumes. It writes
``trials.csv``, ``trials.json``, ``best.microfw`` and, on request, ``sweep.png``.

Built on microfw's public API only.
"""

from microfw.errors import SpaceError, SweepError
from microfw.sweep.runner import SweepResult, run, trial_seed
from microfw.sweep.space import Objective, Param, Pruner, SearchSpace, load_space

__all__ = [
    "Objective",
    "Param",
    "Pruner",
    "SearchSpace",
    "SpaceError",
    "SweepError",
    "SweepResult",
    "load_space",
    "run",
    "trial_seed",
]
