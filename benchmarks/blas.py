"""BLAS threads: ``blas_threads="auto"`` against pinned counts, idle and with a core kept busy.

``python -m benchmarks.blas [--quick] [--rounds N]``

For the moons and MNIST-shaped workloads, each round fits a fresh model once per setting
(``"auto"``, then every pinned count from 1 to the usable CPUs), interleaved, first with no
extra load and then with another process burning a core (a busy loop started and stopped by
this command, ending by itself if this one dies). ``"auto"`` trains for the workload's full
length, as a user's fit would (its timings and re-checks are part of its time), and so does
one pinned thread; more pinned threads' time per epoch does not depend on the length, so
their fits stop after a few seconds (two threads on a busy core can be 20 times slower).
Times are per epoch, medians over the rounds; the verdict compares ``"auto"`` with the best
pinned count of the same round (median of the per-round ratios, with their range): the
target is at most 1.2x.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import microfw as mf
import microfw.train.blas
from benchmarks import workloads
from benchmarks.workloads import Workload
from microfw.train.blas import AutoThreads, usable_cpus

TARGET = 1.2


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """Another process keeping one core busy for the duration of the block."""
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
    burner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)  # let it start spinning
        yield
    finally:
        burner.kill()
        burner.wait()


class Recording(AutoThreads):
    """``"auto"``'s timer, keeping what it decided in :data:`DECISIONS`."""

    def on_train_end(self, logs: dict[str, float]) -> None:
        DECISIONS.append((list(self.choices), self.skipped))


DECISIONS: list[tuple[list[int], int]] = []


class Budget(mf.Callback):
    """Ends a fit after the epoch during which ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_begin(self, logs: dict[str, float]) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if time.perf_counter() - self.start >= self.seconds:
            self.model.stop_training = True


def per_epoch(wl: Workload, setting: Any, epochs: int, budget: float | None = None) -> float:
    """Seconds per epoch of a fit of ``epochs`` epochs (stopped after the epoch that passes
    ``budget`` seconds) on a fresh model with ``setting``."""
    model = mf.build(wl.spec())
    X, Y = wl.X.astype(wl.dtype), wl.Y.astype(wl.dtype)
    callbacks = [] if budget is None else [Budget(budget)]
    start = time.perf_counter()
    history = model.fit(X, Y, epochs=epochs, blas_threads=setting, callbacks=callbacks)
    return (time.perf_counter() - start) / len(history.epoch)


def measure(wl: Workload, epochs: int, rounds: int, budget: float) -> dict[Any, list[float]]:
    """Seconds per epoch of each setting in each round, the settings interleaved."""
    settings: list[Any] = ["auto", *range(1, usable_cpus() + 1)]
    times: dict[Any, list[float]] = {s: [] for s in settings}
    per_epoch(wl, 1, epochs, budget)  # warm-up: compiled kernels, caches
    for r in range(rounds):
        for s in settings[r % len(settings) :] + settings[: r % len(settings)]:  # rotated
            # more threads than one can collapse: their fits are cut short
            short = isinstance(s, int) and s > 1
            times[s].append(per_epoch(wl, s, epochs, budget if short else None))
    return times


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.blas", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and epochs")
    parser.add_argument("--rounds", type=int, help="rounds per condition (default 3, quick 1)")
    parser.add_argument("--only", default="moons,mnist", help="comma-separated: moons, mnist")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if only - {"moons", "mnist"}:
        parser.error(f"--only: unknown {sorted(only - {'moons', 'mnist'})} (moons, mnist)")
    microfw.train.blas.AutoThreads = Recording  # type: ignore[misc]
    rounds = args.rounds or (1 if args.quick else 3)
    n = 6_000 if args.quick else 12_000
    budget = 0.5 if args.quick else 2.0
    cases = []  # "auto" fits of several seconds (the README's moons example: 10000 epochs)
    if "moons" in only:
        cases.append((workloads.moons(), 300 if args.quick else 5000))
    if "mnist" in only:
        cases.append((workloads.mnist_shaped(128, n=n), 1 if args.quick else 20))
        cases.append((workloads.mnist_shaped(1024, n=n), 1 if args.quick else 20))
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        api, version, threads = pool.get("internal_api"), pool.get("version"), pool["num_threads"]
        print(f"BLAS: {api} {version} threads={threads}")
    print(f"usable CPUs: {usable_cpus()}; {rounds} round(s); times per epoch (medians)")
    pinned = [str(t) for t in range(1, usable_cpus() + 1)]
    head = f"  {'workload':<26}{'load':<7}{'auto':>10}" + "".join(
        f"{'pin ' + p:>10}" for p in pinned
    )
    missed = 0
    for condition in ("idle", "busy"):
        print(
            f"\n{condition}: "
            + ("no extra load" if condition == "idle" else "a process burning a core")
        )
        print(head + f"{'auto / best pinned':>28}   auto's timings (chose 1 / more; looks skipped)")
        with busy_core() if condition == "busy" else contextlib.nullcontext():
            for wl, epochs in cases:
                DECISIONS.clear()
                times = measure(wl, epochs, rounds, budget)
                choices = [c for chosen, _ in DECISIONS for c in chosen]
                ones = choices.count(1)
                skipped = sum(s for _, s in DECISIONS)
                fixed = [s for s in times if s != "auto"]
                ratios = [times["auto"][r] / min(times[s][r] for s in fixed) for r in range(rounds)]
                ratio = statistics.median(ratios)
                ok = ratio <= TARGET
                missed += not ok
                cells = "".join(f"{_fmt(statistics.median(times[s])):>10}" for s in times)
                label = f"{wl.name}"
                print(
                    f"  {label:<26}{condition:<7}{cells}"
                    f"{ratio:>9.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
                    f"{'met' if ok else 'MISSED':<7}{ones} / {len(choices) - ones}; {skipped}",
                    flush=True,
                )
    verdict = "all targets met" if not missed else f"{missed} target(s) missed"
    print(f"\n{verdict} (auto <= {TARGET}x the best pinned count)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
