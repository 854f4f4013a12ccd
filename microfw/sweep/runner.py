"""The sweep itself: Optuna asks for parameters, executors train, the study remembers.

The study lives in ``DIR/study.db`` (SQLite). A trial is marked finished in it only after its
result is known (and, if it is the best so far, after ``best.microfw`` is written), so a sweep
killed at any moment resumes with every finished trial kept: trials left running are marked
failed (interrupted) and run again with the same parameters and seed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import microfw as mf
from microfw._extras import require
from microfw._files import atomic_write
from microfw.errors import SweepError
from microfw.spec.models import read_spec, resolve
from microfw.sweep.local import Executor, InProcess, ProcessPool
from microfw.sweep.output import (
    BEST_MODEL,
    PLOT_PNG,
    STUDY_DB,
    plot_sweep,
    write_tables,
)
from microfw.sweep.space import SearchSpace, check_against_spec, load_space, trial_spec
from microfw.sweep.trial import load_trial_data, shaped_targets

STUDY_NAME = "microfw-sweep"
CONFIG_ATTR = "microfw_sweep"


@dataclass
class SweepResult:
    """What a sweep produced: one row per trial (as in ``trials.json``) and the best one."""

    out: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    metric: str
    direction: str
    wall_time: float
    """Seconds from starting the executor (workers, Ray) to stopping it, trials between."""
    total_time: float = 0.0
    """Seconds of the whole call: checks, study, workers, trials and outputs."""
    files: list[Path] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Trials by state (complete, pruned, fail)."""
        out: dict[str, int] = {}
        for row in self.rows:
            out[row["state"]] = out.get(row["state"], 0) + 1
        return out


def run(
    spec: str | os.PathLike[str] | Mapping[str, Any],
    data: str | os.PathLike[str],
    space: str | os.PathLike[str] | Mapping[str, Any] | SearchSpace,
    *,
    target: str | None = None,
    trials: int | None = None,
    jobs: int = 1,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    ray: str | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    plot: bool = False,
    progress: TextIO | None = sys.stderr,
) -> SweepResult:
    """Search ``space`` over ``spec`` trained on the data file ``data``.

    Args:
        spec: the base spec (a path, JSON text or a dict); each trial sets the swept fields.
        data: a CSV or ``.npz`` data file, read as ``microfw fit`` reads it (``target``
            names the CSV label column).
        space: the search space (see :mod:`microfw.sweep.space`).
        trials: finished trials wanted (default: the space's ``trials``, the grid's size, 20).
        jobs: trials at a time in worker processes on this machine (1: in this process).
        out: the output directory (default ``sweeps/<spec name>``); it must not hold a study
            unless ``resume``.
        resume: continue the study in ``out``: finished trials are kept, interrupted ones
            are run again, and trials are added until ``trials`` have finished.
        ray: run the trials as tasks on the Ray cluster at this address instead.
        epochs: override ``training.epochs`` of every trial (unless the space sweeps it).
        seed: the sweep's seed (default: the space's ``seed``, 0), from which the sampler's
            and every trial's weights seed derive.
        plot: also write ``sweep.png`` (the ``plot`` extra).
        progress: where the progress lines go (None: nowhere).

    Returns:
        a :class:`SweepResult`; ``out`` holds ``trials.csv``, ``trials.json``, ``study.db``,
        ``best.microfw`` and, with ``plot``, ``sweep.png``.
    """
    called = time.perf_counter()
    require("optuna", "sweep", "a sweep")
    if jobs < 1:
        raise SweepError(f"jobs must be >= 1, got {jobs}")
    if plot:
        from microfw.plots import figure_class

        figure_class()  # fail now, not after the sweep, if matplotlib is missing
    space = space if isinstance(space, SearchSpace) else load_space(space)
    sweep_seed = space.seed if seed is None else seed
    base, origin = _read_spec(spec)
    defaults = resolve(base, source=origin).to_spec().to_dict()  # every problem, with its file
    if epochs is not None and "training.epochs" not in {p.path for p in space.params}:
        base = trial_spec(base, {"training.epochs": epochs}, defaults)
        defaults = mf.load_spec(base).to_dict()
    check_against_spec(space, base, defaults)
    metric, direction = space.objective.metric, space.objective.direction
    split = space.validation_split if metric.startswith("val_") else None
    data_path = str(Path(data).resolve())
    trial_data = load_trial_data(data_path, target, split, sweep_seed)
    shaped_targets(trial_data, mf.build(base))  # a data problem is one error now, not N fails

    out_dir = Path(out) if out is not None else Path("sweeps") / Path(origin or "spec").stem
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / STUDY_DB
    if db.exists() and not resume:
        raise SweepError(f"{out_dir} already holds a sweep ({db}): add --resume, or choose --out")
    if resume and not db.exists():
        raise SweepError(f"nothing to resume: {db} does not exist")
    config = {
        "spec": base,
        "space": space.data,
        "data": data_path,
        "target": target,
        "seed": sweep_seed,
    }
    wanted = trials if trials is not None else space.default_trials()
    if wanted < 1:
        raise SweepError(f"trials must be >= 1, got {wanted}")

    # Workers start first: they import, load the data and warm up while the study is made.
    start = time.perf_counter()
    executor: Executor
    if ray is not None:
        from microfw.sweep.ray_runner import RayExecutor

        executor = RayExecutor(ray, trial_data)
    elif jobs == 1:
        executor = InProcess(trial_data)
    else:
        source = (data_path, target, split, sweep_seed)
        executor = ProcessPool(jobs, source, base, one_blas_thread=_blas_unset(base, space))
    try:
        with _quiet_optuna():
            study = _study(db, space, config, sweep_seed, resume, direction)
            sweep = _Sweep(study, space, base, defaults, sweep_seed, out_dir, progress)
            try:
                sweep.loop(executor, wanted - sweep.finished())
            except BaseException:
                sweep.abandon()
                raise
    finally:
        executor.close()
    wall = time.perf_counter() - start
    rows = sweep.rows()
    files = sweep.write(rows)
    if plot:
        log_params = [p.path for p in space.params if p.log]
        files.append(plot_sweep(out_dir / PLOT_PNG, rows, metric, direction, log_params))
    best = next((r for r in rows if r["number"] == sweep.best_number()), None)
    if best is not None:
        files.append(out_dir / BEST_MODEL)
    total = time.perf_counter() - called
    return SweepResult(out_dir, rows, best, metric, direction, wall, total, files)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna without a log line per trial, nor warnings that ``enqueue_trial`` and
    ``ask(fixed_distributions)`` are experimental; the caller's settings restored after."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _study(
    db: Path,
    space: SearchSpace,
    config: Mapping[str, Any],
    seed: int,
    resume: bool,
    direction: str,
) -> Any:
    """The Optuna study in ``db``: made (grid points enqueued), or loaded to resume (checked
    against ``config``, interrupted trials enqueued again); its sampler seeded."""
    import optuna

    study = optuna.create_study(
        storage=_storage(db),
        study_name=STUDY_NAME,
        direction="maximize" if direction == "maximize" else "minimize",
        load_if_exists=resume,
    )
    if resume:
        _check_config(study.user_attrs.get(CONFIG_ATTR), config, db.parent)
        _mark_interrupted(study)
    else:
        study.set_user_attr(CONFIG_ATTR, dict(config))
        if space.sampler == "grid":
            for values in space.grid():
                study.enqueue_trial(_encode(space, values))
    study.sampler = _sampler(space, seed, len(study.trials))
    return study


def _read_spec(
    spec: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[dict[str, Any], str | None]:
    """The spec's data as written (layer indices as the user counts them, a copy) and its path."""
    data, origin = read_spec(spec)
    return json.loads(json.dumps(data)), origin


def _storage(db: Path) -> Any:
    """Optuna's storage in the SQLite file ``db``, in WAL mode with ``synchronous=NORMAL``: a
    commit survives the process being killed (what a resume needs) without an fsync each."""
    import sqlite3

    from optuna.storages import RDBStorage

    path = str(db.resolve())

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return RDBStorage(f"sqlite:///{path}", engine_kwargs={"creator": connect})


def _blas_unset(base: Mapping[str, Any], space: SearchSpace) -> bool:
    """Whether neither the spec nor the space sets ``training.blas_threads``: the workers then
    run BLAS on one thread (N trials at once keep the cores busy; ``"auto"``, the default,
    would time more threads in each worker against the others)."""
    training = base.get("training")
    in_spec = isinstance(training, Mapping) and "blas_threads" in training
    return not in_spec and all(p.path != "training.blas_threads" for p in space.params)


def _sampler(space: SearchSpace, seed: int, n_trials: int) -> Any:
    """The sampler, seeded from the sweep's seed and the trials so far (a resumed sweep does
    not draw the same parameters again)."""
    import optuna

    state = int(np.random.SeedSequence([seed, n_trials]).generate_state(1)[0])
    if space.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=state)
    return optuna.samplers.RandomSampler(seed=state)  # grid trials are all enqueued


def _encode(space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for p in space.params:
        if p.encodes():
            out[p.path] = json.dumps(out[p.path], sort_keys=True)
    return out


def trial_seed(sweep_seed: int, number: int) -> int:
    """The weights seed of trial ``number``: from the sweep's seed, below 2**32."""
    return int(np.random.SeedSequence([sweep_seed, number]).generate_state(1)[0])


def _check_config(saved: Any, config: Mapping[str, Any], out: Path) -> None:
    if not isinstance(saved, dict):
        raise SweepError(f"{out}: the study was not made by microfw sweep; cannot resume it")
    differ = [key for key in config if json.dumps(saved.get(key)) != json.dumps(config[key])]
    if differ:
        raise SweepError(
            f"{out}: cannot resume with a different {', '.join(differ)} than the sweep that "
            "made it (start a new sweep with another --out)"
        )


def _mark_interrupted(study: Any) -> None:
    """Trials left running by a killed sweep become failed without an ``error``: they are
    'interrupted', and are enqueued again (same parameters, same seed) unless they already
    were, or were killed while Optuna was still choosing their parameters."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    for t in trials:
        # The seed is set once every parameter is: a trial killed before has not started.
        if _interrupted(t) and "seed" in t.user_attrs and t.number not in rerun:
            attrs = {"rerun_of": t.number, "seed": t.user_attrs["seed"]}
            study.enqueue_trial(t.params, user_attrs=attrs)


def _interrupted(t: Any) -> bool:
    from optuna.trial import TrialState

    return bool(t.state == TrialState.FAIL and "error" not in t.user_attrs)


class _Sweep:
    """The ask / run / tell loop over an executor, with progress and outputs."""

    def __init__(
        self,
        study: Any,
        space: SearchSpace,
        base: dict[str, Any],
        defaults: dict[str, Any],
        seed: int,
        out: Path,
        progress: TextIO | None,
    ) -> None:
        self.study, self.space, self.base, self.defaults = study, space, base, defaults
        self.seed, self.out, self.progress = seed, out, progress
        self.distributions = space.distributions()
        self.pending: dict[int, Any] = {}
        self.minimize = space.objective.direction == "minimize"
        epochs = int(defaults.get("training", {}).get("epochs") or 1)
        self.report_every = None
        if space.pruner is not None:
            self.report_every = space.pruner.interval_epochs or max(1, epochs // 10)
        self.last_line = ""
        self.live: dict[int, dict[int, float]] = {}  # running trials' reported values
        self.curves: dict[int, dict[int, float]] = {}  # complete trials' reported values
        for t in study.get_trials(deepcopy=False):
            curve = t.user_attrs.get("result", {}).get("curve")
            if curve and t.state.name == "COMPLETE":
                self.curves[t.number] = {int(k): float(v) for k, v in curve.items()}
        self.done: dict[int, dict[str, Any]] = {
            row["number"]: row
            for row in (self._row(t) for t in study.get_trials(deepcopy=False))
            if row
        }

    def finished(self) -> int:
        """Trials that count towards the total: complete, pruned, or failed for a reason."""
        return len(self.done)

    def best_number(self) -> int | None:
        """The best complete trial (the first of equals), or None."""
        complete = [r for r in self.done.values() if r["state"] == "complete"]
        if not complete:
            return None
        sign = 1.0 if self.minimize else -1.0
        return int(min(complete, key=lambda r: (sign * r["value"], r["number"]))["number"])

    def loop(self, executor: Executor, remaining: int) -> None:
        asked = 0
        self.show()
        while asked < remaining or self.pending:
            while len(self.pending) < executor.slots and asked < remaining:
                asked += 1
                task = self.ask()
                if task is not None:
                    executor.submit(task)
            self.show()
            for result in executor.poll(self.report, timeout=0.5):
                self.finish(result)
            self.show()
        self.show(final=True)

    def ask(self) -> dict[str, Any] | None:
        """A new trial's task, or None if its spec is invalid (the trial then fails)."""
        trial = self.study.ask(self.distributions)
        seed = trial.user_attrs.get("seed")
        if seed is None:
            seed = trial_seed(self.seed, trial.number)
            trial.set_user_attr("seed", seed)
        values = self.space.decode(trial.params)
        spec = trial_spec(self.base, values, self.defaults)
        if "seed" not in values:
            spec["seed"] = seed
        self.pending[trial.number] = trial
        try:
            mf.load_spec(spec)
        except mf.SpecError as exc:
            error = "invalid spec: " + "; ".join(str(p) for p in exc.problems)
            self.finish({"number": trial.number, "state": "fail", "error": error, "metrics": {}})
            return None
        return {
            "number": trial.number,
            "spec": spec,
            "metric": self.space.objective.metric,
            "report_every": self.report_every,
        }

    def report(self, number: int, epoch: int, value: float) -> bool:
        """An intermediate value of a running trial; True if it should be pruned.

        The median rule (Optuna's ``MedianPruner``), kept in memory: once ``startup_trials``
        trials are complete and after ``warmup_epochs``, a trial whose best value so far is
        worse than the median of the complete trials' values at the same epoch is pruned.
        """
        if number not in self.pending or not math.isfinite(value):
            return False
        curve = self.live.setdefault(number, {})
        curve[epoch] = value
        pruner = self.space.pruner
        if pruner is None or len(self.curves) < pruner.startup_trials:
            return False
        if epoch < pruner.warmup_epochs:
            return False
        others = [c[epoch] for c in self.curves.values() if epoch in c]
        if not others:
            return False
        median = float(np.median(others))
        if self.minimize:
            return min(curve.values()) > median
        return max(curve.values()) < median

    def finish(self, result: Mapping[str, Any]) -> None:
        """Record a trial's result: best model first, then the study, then the tables."""
        from optuna.trial import TrialState

        number = int(result["number"])
        trial = self.pending.pop(number)
        state = result["state"]
        value = result.get("value")
        keys = ("metrics", "duration", "epochs", "node")
        stored = {k: result[k] for k in keys if result.get(k) is not None}
        curve = self.live.pop(number, {})
        if curve:
            stored["curve"] = {str(k): v for k, v in curve.items()}
        trial.set_user_attr("result", stored)
        if state == "fail":
            trial.set_user_attr("error", result.get("error") or "failed")
            self.study.tell(trial, state=TrialState.FAIL)
        elif state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            if result.get("model") is not None and self._better(float(result["value"])):
                atomic_write(self.out / BEST_MODEL, result["model"])
            self.study.tell(trial, value)
        if state == "complete" and curve:
            self.curves[number] = curve
        self.done[number] = self._make_row(number, state, trial.params, value, trial.user_attrs)
        self.write(self.rows())

    def _better(self, value: float) -> bool:
        best = self.best_number()
        if best is None:
            return True
        current = self.done[best]["value"]
        return bool(value < current if self.minimize else value > current)

    def abandon(self) -> None:
        """Interrupted (Ctrl-C or an error): running trials stay for a resume to run again."""
        from optuna.trial import TrialState

        for trial in list(self.pending.values()):
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        self.pending.clear()
        self.write(self.rows())

    def rows(self) -> list[dict[str, Any]]:
        """Every finished trial as plain data, by number (interrupted ones left out)."""
        return [self.done[n] for n in sorted(self.done)]

    def _row(self, t: Any) -> dict[str, Any] | None:
        """A finished trial of the study as a row; None if it has not finished (or was
        interrupted)."""
        from optuna.trial import TrialState

        if not t.state.is_finished() or _interrupted(t):
            return None
        names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
        return self._make_row(t.number, names.get(t.state, "fail"), t.params, t.value, t.user_attrs)

    def _make_row(
        self, number: int, state: str, params: Any, value: Any, attrs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A finished trial's row, from what the study holds of it (``attrs``: its user
        attributes); a pruned trial's value is the last one it reported."""
        result = attrs.get("result", {})
        curve = result.get("curve")
        if state == "pruned":
            value = curve[max(curve, key=int)] if curve else None
        return {
            "number": number,
            "state": state,
            "params": self.space.decode(params),
            "value": value if state != "fail" else None,
            "metrics": result.get("metrics", {}),
            "duration": result.get("duration"),
            "epochs": result.get("epochs"),
            "seed": attrs.get("seed"),
            "node": result.get("node"),
            "rerun_of": attrs.get("rerun_of"),
            "error": attrs.get("error") if state == "fail" else None,
        }

    def write(self, rows: list[dict[str, Any]]) -> list[Path]:
        best = self.best_number()
        summary = {
            "objective": {
                "metric": self.space.objective.metric,
                "direction": self.space.objective.direction,
            },
            "sampler": self.space.sampler,
            "seed": self.seed,
            "best": next((r for r in rows if r["number"] == best), None),
        }
        return write_tables(self.out, rows, summary)

    def show(self, final: bool = False) -> None:
        """One progress line: trials done, running, failed, pruned and the best so far."""
        if self.progress is None:
            return
        rows = self.rows()
        counts = {
            s: sum(1 for r in rows if r["state"] == s) for s in ("complete", "pruned", "fail")
        }
        best = self.best_number()
        text = (
            f"trials: {counts['complete']} done, {len(self.pending)} running, "
            f"{counts['fail']} failed, {counts['pruned']} pruned"
        )
        if best is not None:
            value = self.done[best]["value"]
            text += f"; best {self.space.objective.metric} {value:.6g} (trial {best})"
        tty = self.progress.isatty()
        if text != self.last_line:
            self.progress.write(("\r" if tty else "") + text + ("" if tty else "\n"))
            self.last_line = text
        if final and tty:
            self.progress.write("\n")
        self.progress.flush()
