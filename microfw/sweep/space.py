"""The search space of a sweep: which spec fields vary, how, and what is optimised.

A space is JSON::

    {"sampler": "tpe",
     "objective": {"metric": "val_loss", "direction": "minimize"},
     "params": {"optimizer.lr": {"log_uniform": [1e-4, 1.0]},
                "layers[0].units": {"choice": [8, 16, 32]},
                "training.batch_size": {"int": [16, 128]},
                "optimizer.momentum": {"uniform": [0.0, 0.95]}}}

Each parameter names a field of the spec by path (as the spec's own errors do) and has exactly
one distribution: ``uniform`` / ``log_uniform`` ``[low, high]`` (floats), ``int`` ``[low,
high]`` (inclusive), or ``choice`` ``[v1, v2, ...]`` (any JSON values). ``step`` sets a grid
step for ``uniform`` and ``int``, ``grid`` the number of points a continuous range contributes
to the ``grid`` sampler. Optional keys: ``trials`` (default: the grid's size, else 20), ``seed``
(of the sampler and of every trial's weights; default 0), ``validation_split`` (the fraction
of the data held out once for ``val_*`` objectives, default 0.2) and ``pruner`` (``"median"`` or
``{"type": "median", "startup_trials": 5, "warmup_epochs": 0, "interval_epochs": N}``).

:func:`load_space` reports every problem at once with its path, and :func:`trial_spec`
writes one trial's values into a spec. Optuna is imported only to build distributions.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import microfw as mf
from microfw.errors import SpaceError
from microfw.spec.models import read_json_object

SAMPLERS = ("tpe", "random", "grid")
DISTRIBUTIONS = ("uniform", "log_uniform", "int", "choice")
SPACE_KEYS = (
    "sampler",
    "objective",
    "params",
    "trials",
    "seed",
    "validation_split",
    "pruner",
)
PRUNER_KEYS = ("type", "startup_trials", "warmup_epochs", "interval_epochs")
DEFAULT_TRIALS = 20
_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")


@dataclass(frozen=True)
class Param:
    """One swept spec field: its ``path``, distribution ``kind`` and arguments."""

    path: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()
    step: float | int | None = None
    log: bool = False
    grid: int | None = None

    def grid_values(self) -> list[Any]:
        """The values this parameter takes in a grid, in order."""
        if self.kind == "choice":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            step = int(self.step or 1)
            values: list[Any] = list(range(int(self.low), int(self.high) + 1, step))
            if self.grid is not None and self.grid < len(values):
                picks = [round(i * (len(values) - 1) / (self.grid - 1)) for i in range(self.grid)]
                values = [values[i] for i in sorted(set(picks))]
            return values
        if self.step is not None:
            n = math.floor((self.high - self.low) / self.step + 1e-9) + 1
            return [float(self.low + i * self.step) for i in range(n)]
        assert self.grid is not None
        if self.kind == "log_uniform":
            lo, hi = math.log(self.low), math.log(self.high)
            return [float(math.exp(lo + (hi - lo) * i / (self.grid - 1))) for i in range(self.grid)]
        return [
            float(self.low + (self.high - self.low) * i / (self.grid - 1)) for i in range(self.grid)
        ]

    def encodes(self) -> bool:
        """Whether Optuna sees this parameter's values as JSON text (non-scalar choices)."""
        return self.kind == "choice" and any(
            not (v is None or isinstance(v, bool | int | float | str)) for v in self.choices
        )


@dataclass(frozen=True)
class Objective:
    """The recorded key whose last value is optimised, and in which direction."""

    metric: str = "val_loss"
    direction: str = "minimize"


@dataclass(frozen=True)
class Pruner:
    """Median pruning: stop a trial whose value is worse than the median of earlier trials at
    the same epoch, after ``startup_trials`` finished trials and ``warmup_epochs`` epochs;
    values are reported every ``interval_epochs`` (default: a tenth of the epochs)."""

    startup_trials: int = 5
    warmup_epochs: int = 0
    interval_epochs: int | None = None


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring for the JSON form)."""

    params: tuple[Param, ...]
    sampler: str = "tpe"
    objective: Objective = Objective()
    trials: int | None = None
    seed: int = 0
    validation_split: float = 0.2
    pruner: Pruner | None = None
    data: dict[str, Any] = field(default_factory=dict, compare=False)
    """The JSON the space was read from."""

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the parameters' grid values (``grid`` sampler)."""
        names = [p.path for p in self.params]
        values = [p.grid_values() for p in self.params]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]

    def default_trials(self) -> int:
        """``trials`` from the space, else the grid's size (grid sampler) or 20."""
        if self.trials is not None:
            return self.trials
        return len(self.grid()) if self.sampler == "grid" else DEFAULT_TRIALS

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions by parameter path."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, Any] = {}
        for p in self.params:
            if self.sampler == "grid" or p.kind == "choice":
                values = p.grid_values()
                if p.encodes():
                    values = [json.dumps(v, sort_keys=True) for v in values]
                out[p.path] = CategoricalDistribution(values)
            elif p.kind == "int":
                out[p.path] = IntDistribution(
                    int(p.low or 0), int(p.high or 0), log=p.log, step=int(p.step or 1)
                )
            else:
                out[p.path] = FloatDistribution(
                    float(p.low or 0.0), float(p.high or 0.0), log=p.log, step=p.step
                )
        return out

    def decode(self, optuna_params: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna's parameter values as spec values (JSON choices decoded)."""
        out = dict(optuna_params)
        for p in self.params:
            if p.encodes() and isinstance(out.get(p.path), str):
                out[p.path] = json.loads(out[p.path])
        return out


def load_space(source: str | os.PathLike[str] | Mapping[str, Any]) -> SearchSpace:
    """Read and validate a search space: a path, JSON text or a dict.

    Raises :class:`SpaceError` listing every problem with its path.
    """
    origin: str | None = None
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        try:
            data, origin = read_json_object(source, error=SpaceError, constants=False)
        except OSError as exc:
            problem = mf.Problem("", f"cannot read: {exc.strerror or exc}")
            raise SpaceError([problem], source=os.fspath(source)) from None
    problems: list[mf.Problem] = []
    for key in data:
        if key not in SPACE_KEYS:
            problems.append(_unknown(key, key, SPACE_KEYS))
    sampler = data.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        problems.append(_choice_problem("sampler", sampler, SAMPLERS))
    objective = _objective(data.get("objective", {}), problems)
    params = _params(data.get("params"), problems)
    trials = _int_at(data, "trials", 1, problems)
    seed = _int_at(data, "seed", 0, problems)
    split = data.get("validation_split", 0.2)
    if not _is_number(split) or not 0 < split < 1:
        problems.append(mf.Problem("validation_split", "must be a number in (0, 1)", split, True))
        split = 0.2
    pruner = _pruner(data.get("pruner"), problems)
    if sampler == "grid":
        for p in params:
            if p.kind in ("uniform", "log_uniform") and p.step is None and p.grid is None:
                problems.append(
                    mf.Problem(
                        f"params.{p.path}",
                        "the grid sampler needs a finite set of values: add 'grid': N points "
                        "(or 'step'), or use 'choice'",
                    )
                )
    if problems:
        raise SpaceError(problems, source=origin)
    return SearchSpace(
        params=tuple(params),
        sampler=sampler,
        objective=objective,
        trials=trials,
        seed=seed if seed is not None else 0,
        validation_split=float(split),
        pruner=pruner,
        data=data,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown(path: str, key: str, allowed: tuple[str, ...]) -> mf.Problem:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return mf.Problem(path, f"unknown key{hint} (allowed: {', '.join(allowed)})")


def _choice_problem(path: str, value: Any, allowed: tuple[str, ...]) -> mf.Problem:
    close = difflib.get_close_matches(str(value), allowed, n=1) if isinstance(value, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    return mf.Problem(path, f"{hint}expected one of {', '.join(allowed)}", value, True)


def _int_at(data: Mapping[str, Any], key: str, low: int, problems: list[mf.Problem]) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not _is_int(value) or value < low:
        problems.append(mf.Problem(key, f"must be an integer >= {low}", value, True))
        return None
    return int(value)


def _objective(data: Any, problems: list[mf.Problem]) -> Objective:
    if isinstance(data, str):
        data = {"metric": data}
    if not isinstance(data, dict):
        problems.append(
            mf.Problem("objective", "expected an object {metric, direction}", data, True)
        )
        return Objective()
    for key in data:
        if key not in ("metric", "direction"):
            problems.append(_unknown(f"objective.{key}", key, ("metric", "direction")))
    metric = data.get("metric", "val_loss")
    if not isinstance(metric, str) or not metric:
        problems.append(mf.Problem("objective.metric", "must be a recorded key", metric, True))
        metric = "val_loss"
    default = "maximize" if "acc" in metric else "minimize"
    direction = data.get("direction", default)
    if direction not in ("minimize", "maximize"):
        problems.append(_choice_problem("objective.direction", direction, ("minimize", "maximize")))
        direction = default
    return Objective(metric, direction)


def _pruner(data: Any, problems: list[mf.Problem]) -> Pruner | None:
    if data is None or data is False:
        return None
    if isinstance(data, str):
        data = {"type": data}
    if not isinstance(data, dict):
        problems.append(mf.Problem("pruner", "expected 'median' or an object", data, True))
        return None
    for key in data:
        if key not in PRUNER_KEYS:
            problems.append(_unknown(f"pruner.{key}", key, PRUNER_KEYS))
    if data.get("type", "median") != "median":
        problems.append(_choice_problem("pruner.type", data.get("type"), ("median",)))
    values: dict[str, Any] = {}
    for key, low in (("startup_trials", 0), ("warmup_epochs", 0), ("interval_epochs", 1)):
        value = _int_at(data, key, low, [])
        if key in data and value is None:
            problems.append(
                mf.Problem(f"pruner.{key}", f"must be an integer >= {low}", data[key], True)
            )
        elif value is not None:
            values[key] = value
    return Pruner(**values)


def _params(data: Any, problems: list[mf.Problem]) -> list[Param]:
    if not isinstance(data, dict) or not data:
        problems.append(
            mf.Problem("params", "expected a non-empty object of spec paths", data, True)
        )
        return []
    out = []
    for path, dist in data.items():
        where = f"params.{path}"
        if parse_path(path) is None:
            problems.append(
                mf.Problem(where, "not a spec path like 'optimizer.lr' or 'layers[0].units'")
            )
            continue
        param = _param(path, dist, where, problems)
        if param is not None:
            out.append(param)
    return out


def _param(path: str, dist: Any, where: str, problems: list[mf.Problem]) -> Param | None:
    if not isinstance(dist, dict):
        problems.append(
            mf.Problem(where, "expected an object like {'uniform': [low, high]}", dist, True)
        )
        return None
    kinds = [k for k in dist if k in DISTRIBUTIONS]
    allowed = (*DISTRIBUTIONS, "step", "log", "grid")
    found = len(problems)
    for key in dist:
        if key not in allowed:
            problems.append(_unknown(f"{where}.{key}", key, allowed))
    if len(kinds) != 1:
        problems.append(
            mf.Problem(
                where, f"needs exactly one distribution of {', '.join(DISTRIBUTIONS)}", dist, True
            )
        )
        return None
    kind = kinds[0]
    args = dist[kind]
    at = f"{where}.{kind}"
    step, grid, log = dist.get("step"), dist.get("grid"), dist.get("log", kind == "log_uniform")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            problems.append(mf.Problem(at, "expected a non-empty list of values", args, True))
            return None
        texts = [json.dumps(v, sort_keys=True) for v in args]
        if len(set(texts)) != len(texts):
            problems.append(mf.Problem(at, "values must be distinct", args, True))
        for key in ("step", "grid", "log"):
            if key in dist:
                problems.append(mf.Problem(f"{where}.{key}", "does not apply to 'choice'"))
        return None if len(problems) > found else Param(path, kind, choices=tuple(args))
    if not (isinstance(args, list) and len(args) == 2 and all(_is_number(v) for v in args)):
        problems.append(mf.Problem(at, "expected [low, high], two finite numbers", args, True))
        return None
    low, high = args
    if kind == "int" and not all(_is_int(v) for v in args):
        problems.append(mf.Problem(at, "expected two integers", args, True))
    if not low < high:
        problems.append(mf.Problem(at, "low must be below high", args, True))
    if kind == "log_uniform" and low <= 0:
        problems.append(mf.Problem(at, "a log-uniform range must be positive", args, True))
    if not isinstance(log, bool) or (log and kind == "uniform"):
        problems.append(mf.Problem(f"{where}.log", "use log_uniform for a log scale", log, True))
    if kind == "int" and log and step not in (None, 1):
        problems.append(mf.Problem(f"{where}.step", "a log int range takes no step", step, True))
    if step is not None:
        if kind == "log_uniform":
            problems.append(mf.Problem(f"{where}.step", "does not apply to log_uniform"))
        elif not _is_number(step) or step <= 0 or (kind == "int" and not _is_int(step)):
            problems.append(mf.Problem(f"{where}.step", "must be a positive number", step, True))
    if grid is not None and (not _is_int(grid) or grid < 2):
        problems.append(mf.Problem(f"{where}.grid", "must be an integer >= 2", grid, True))
    if len(problems) > found:
        return None
    return Param(path, kind, low=low, high=high, step=step, log=bool(log), grid=grid)


# -- paths into spec data ---------------------------------------------------------------------


def parse_path(path: str) -> list[str | int] | None:
    """``"layers[0].units"`` as ``["layers", 0, "units"]``; None if it is not a path."""
    parts: list[str | int] = []
    for piece in path.split("."):
        match = _PATH_PART.fullmatch(piece)
        if match is None:
            return None
        parts.append(match.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    return parts


def set_path(spec: dict[str, Any], path: str, value: Any, defaults: Mapping[str, Any]) -> None:
    """Set the field at ``path`` of spec data ``spec`` (in place).

    A bare plugin name on the way (``"sgd"``) becomes ``{"type": "sgd"}``; a missing top-level
    plugin field is taken from ``defaults`` (the spec written out in full), any other missing
    object is created.

    Raises:
        LookupError: the path leads through a list index that does not exist or a value that
            is not an object.
    """
    parts = parse_path(path)
    if parts is None:
        raise LookupError(f"{path}: not a spec path")
    node: Any = spec
    for depth, (part, nxt) in enumerate(itertools.pairwise([*parts, None])):
        last = nxt is None
        where = _join(parts[: depth + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise LookupError(f"{path}: the spec has no {where} (it has {size})")
            if last:
                node[part] = value
                return
            node[part] = _as_object(node[part], where, nxt)
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise LookupError(f"{path}: {_join(parts[:depth])} is not an object")
        if last:
            node[part] = value
            return
        if part not in node:
            default = defaults.get(str(part)) if depth == 0 else None
            node[part] = (
                json.loads(json.dumps(default))
                if default is not None
                else ([] if isinstance(nxt, int) else {})
            )
        node[part] = _as_object(node[part], where, nxt)
        node = node[part]


def _as_object(node: Any, where: str, nxt: str | int | None) -> Any:
    if isinstance(node, str) and isinstance(nxt, str):
        return {"type": node}  # a bare plugin name, written out to set one of its fields
    if isinstance(nxt, str) and not isinstance(node, dict):
        raise LookupError(f"{where} is {json.dumps(node)}, not an object with fields")
    return node


def _join(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else (f"{out}.{part}" if out else part)
    return out


def trial_spec(
    base: Mapping[str, Any],
    values: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """A copy of spec data ``base`` with every ``path: value`` of ``values`` set."""
    spec: dict[str, Any] = json.loads(json.dumps(base))
    for path, value in values.items():
        set_path(spec, path, value, defaults)
    return spec


def check_against_spec(
    space: SearchSpace, base: Mapping[str, Any], defaults: Mapping[str, Any]
) -> None:
    """Check that every parameter's path exists in the spec and that its extreme values (or
    each choice) give a valid spec; :class:`SpaceError` lists every problem."""
    problems: list[mf.Problem] = []
    for p in space.params:
        where = f"params.{p.path}"
        values = list(p.choices) if p.kind == "choice" else [p.low, p.high]
        for value in values:
            try:
                spec = trial_spec(base, {p.path: value}, defaults)
            except LookupError as exc:
                problems.append(mf.Problem(where, str(exc)))
                break
            try:
                mf.load_spec(spec)
            except mf.SpecError as exc:
                detail = "; ".join(str(q) for q in exc.problems)
                problems.append(
                    mf.Problem(where, f"value {value!r} gives an invalid spec: {detail}")
                )
    if problems:
        raise SpaceError(problems)
