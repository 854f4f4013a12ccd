"""Sweep benchmark: ``python -m benchmarks.sweep [--trials 16] [--epochs 600] [--rounds 2]
[--ray ADDRESS]``.

A moons sweep (``examples/moons``, TPE over the learning rate, momentum and the second layer's
width) runs with ``--jobs 1`` (trials in the sweep's own process) and ``--jobs 2`` (two worker
processes), alternating, ``rounds`` times each, in fresh output directories. For each it
prints the wall time of the whole ``microfw.sweep.run`` call (study creation, workers starting
and loading the data, every trial, the tables and the best model), BLAS on one thread per
trial, the sum of the trials' own
training times, and the framework's cost per trial: ``(wall x slots - sum of trials) /
trials``, everything a slot spends on something other than training (start, data,
Optuna's sampling, bookkeeping, and a slot left idle at the end). The target: ``--jobs 2``
takes at most 0.6x the wall time of ``--jobs 1`` (median of the per-round ratios), and the
cost per trial stays under 0.2 s with local workers. ``cores`` is the CPU time this process
and its workers got divided by the wall time (not counted for Ray): on a machine busy with
other work, two workers cannot go faster than the cores they are given. With ``--ray
ADDRESS`` the same sweep also runs on that Ray cluster, and its cost per trial is reported
(no target; ``--ray-only`` skips the local sweeps).
"""

from __future__ import annotations

import os

# One BLAS thread per trial, in this process (--jobs 1) as in the workers (--jobs 2, which
# set it themselves): set before NumPy loads.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from microfw.sweep import run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MOONS = ROOT / "examples" / "moons"
SPACE: dict[str, Any] = {
    "sampler": "tpe",
    "objective": {"metric": "val_loss", "direction": "minimize"},
    "params": {
        "optimizer.lr": {"log_uniform": [0.003, 0.3]},
        "optimizer.momentum": {"uniform": [0.0, 0.9]},
        "layers[1].units": {"choice": [25, 50]},
    },
}


def measure(trials: int, epochs: int, jobs: int, ray: str | None, out: Path) -> dict[str, float]:
    """One sweep: its wall time, the trials' training time, the cost per trial, and the CPU
    cores this process and its workers had on average (on a shared machine, fewer than 2)."""
    cpu = _cpu_seconds()
    result = run(
        MOONS / "moons.json",
        MOONS / "train.csv",
        SPACE,
        target="y",
        trials=trials,
        epochs=epochs,
        jobs=jobs,
        ray=ray,
        out=out,
        progress=None,
    )
    if result.counts().get("complete") != trials:
        raise SystemExit(f"the sweep did not complete every trial: {result.counts()}")
    work = sum(float(r["duration"]) for r in result.rows)
    slots = jobs if ray is None else _ray_slots()
    return {
        "cores": (_cpu_seconds() - cpu) / result.total_time,
        "wall": result.total_time,
        "work": work,
        "slots": slots,
        "overhead": (result.total_time * slots - work) / trials,
    }


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished child processes."""
    me, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _ray_slots() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=600, help="per trial (full batch)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ray", metavar="ADDRESS", help="also sweep on this Ray cluster")
    parser.add_argument("--ray-only", action="store_true", help="with --ray: skip local sweeps")
    args = parser.parse_args(argv)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"moons sweep: {args.trials} trials x {args.epochs} full-batch epochs, TPE, "
        f"{args.rounds} rounds"
    )
    rows: dict[str, list[dict[str, float]]] = {"jobs 1": [], "jobs 2": []}
    with tempfile.TemporaryDirectory(prefix="microfw-sweep-bench-") as tmp:
        for r in range(0 if args.ray_only else args.rounds):
            for jobs in (1, 2):
                out = Path(tmp) / f"jobs{jobs}-{r}"
                rows[f"jobs {jobs}"].append(measure(args.trials, args.epochs, jobs, None, out))
        if args.ray:
            import ray

            ray.init(address=args.ray, log_to_driver=False)
            try:
                rows["ray"] = [measure(args.trials, args.epochs, 1, args.ray, Path(tmp) / "ray")]
            finally:
                ray.shutdown()

    print(f"{'':8} {'wall s':>8} {'trials s':>9} {'slots':>5} {'cost/trial s':>12} {'cores':>6}")
    for name, runs in rows.items():
        if not runs:
            continue
        med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        print(
            f"{name:8} {med['wall']:8.2f} {med['work']:9.2f} {med['slots']:5.0f} "
            f"{med['overhead']:12.3f} {med['cores']:6.2f}"
        )
    if args.ray_only:
        return 0
    ratios = [b["wall"] / a["wall"] for a, b in zip(rows["jobs 1"], rows["jobs 2"], strict=True)]
    ratio = statistics.median(ratios)
    cost = max(statistics.median(run["overhead"] for run in rows[k]) for k in ("jobs 1", "jobs 2"))
    ok_ratio, ok_cost = ratio <= 0.6, cost < 0.2
    print(
        f"jobs 2 / jobs 1 wall time: {ratio:.2f}x (rounds: "
        f"{', '.join(f'{x:.2f}' for x in ratios)}); target <= 0.6x: "
        f"{'met' if ok_ratio else 'NOT met'}"
    )
    print(f"cost per trial, local: {cost:.3f} s; target < 0.2 s: {'met' if ok_cost else 'NOT met'}")
    print("all targets met" if ok_ratio and ok_cost else "some targets NOT met")
    return 0 if ok_ratio and ok_cost else 1


if __name__ == "__main__":
    raise SystemExit(main())
