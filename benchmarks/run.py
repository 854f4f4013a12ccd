"""Run the benchmarks: ``python -m benchmarks [--quick] [--only xor,moons,mnist]``.

Every contestant trains the same network on the same data, timed in rounds that interleave
the contestants in one process (so a busy machine slows them all alike); each row reports the
median time per epoch over the rounds, and each target the median of the per-round ratios
with their range. BLAS runs on one thread. Every contestant's set-up is left out of its
times (converting the data in the baselines' constructors; checking it at the start of each
microfw fit, printed separately).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import microfw as mf
from benchmarks import handwritten, peers, workloads
from benchmarks.workloads import Workload


@dataclass
class Contestant:
    """A named way to train a workload: ``run(k)`` trains ``k`` epochs and returns the
    seconds they took."""

    name: str
    run: Callable[[int], float]


class TrainClock(mf.Callback):
    """Times a fit's epochs: from ``on_train_begin`` to ``on_train_end``.

    What comes before, once per fit (checking and casting the data, preparing the batches),
    is left out, as the other contestants' set-up is (their constructors convert the data).
    """

    def on_train_begin(self, logs: dict[str, Any]) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, logs: dict[str, Any]) -> None:
        self.elapsed = time.perf_counter() - self.start


def contestants(wl: Workload, adam: bool = False) -> tuple[list[Contestant], list[float]]:
    """microfw, the hand-written baselines and the peers that are installed, for ``wl``; and
    the list where each microfw fit records its once-per-fit set-up (seconds). With ``adam``,
    also microfw and torch eager with Adam ("microfw adam", "torch adam")."""
    model = mf.build(wl.spec())
    X, Y = wl.X.astype(wl.dtype), wl.Y.astype(wl.dtype)
    clock = TrainClock()
    setups: list[float] = []

    def fit(k: int) -> float:
        start = time.perf_counter()
        model.fit(X, Y, epochs=k, callbacks=[clock])
        setups.append(time.perf_counter() - start - clock.elapsed)
        return clock.elapsed

    out = [Contestant("microfw", fit)]
    if adam:
        adam_model = mf.build(wl.spec("adam"))
        adam_clock = TrainClock()

        def fit_adam(k: int) -> float:
            adam_model.fit(X, Y, epochs=k, callbacks=[adam_clock])
            return adam_clock.elapsed

        out.append(Contestant("microfw adam", fit_adam))
    if wl.after_hidden:  # the same network without those layers; no hand-written loops
        plain = mf.build(wl.spec(after_hidden=False))
        plain_clock = TrainClock()

        def fit_plain(k: int) -> float:
            plain.fit(X, Y, epochs=k, callbacks=[plain_clock])
            return plain_clock.elapsed

        out.append(Contestant("microfw plain", fit_plain))
        if peers.available("torch"):
            torch_loop = peers.TorchEager(
                wl.net, X, Y, wl.dtype, wl.batch_size, after_hidden=wl.after_hidden
            )
            out.append(_loop("torch eager", torch_loop))
        return out, setups
    out.append(_loop("numpy lean", handwritten.LeanLoop(wl.net, X, Y, wl.dtype, wl.batch_size)))
    if wl.batch_size is None:
        out.append(_loop("numpy seeds", handwritten.SeedsLoop(wl.net, X, Y, wl.dtype)))
    floor = handwritten.GemmFloor(wl.net, X, wl.dtype, wl.batch_size)
    out.append(_loop("GEMM floor", floor))
    if peers.available("torch"):
        out.append(_loop("torch eager", peers.TorchEager(wl.net, X, Y, wl.dtype, wl.batch_size)))
        if adam:
            torch_adam = peers.TorchEager(wl.net, X, Y, wl.dtype, wl.batch_size, optimizer="adam")
            out.append(_loop("torch adam", torch_adam))
    if peers.available("sklearn") and wl.net.output == "sigmoid" and wl.net.loss == "bce":
        out.append(_loop("sklearn MLP", peers.SklearnMLP(wl.net, X, Y, wl.dtype, wl.batch_size)))
    return out, setups


def _loop(name: str, trainer: Any) -> Contestant:
    def run(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            trainer.epoch()
        return time.perf_counter() - start

    return Contestant(name, run)


def measure(wl: Workload, rounds: int, adam: bool = False) -> tuple[dict[str, list[float]], float]:
    """Seconds per epoch of every contestant in each round, rounds interleaved, and the
    median seconds of microfw's once-per-fit set-up."""
    entrants, setups = contestants(wl, adam)
    for c in entrants:  # warm-up: buffers, caches, lazy state
        c.run(1)
    times: dict[str, list[float]] = {c.name: [] for c in entrants}
    for _ in range(rounds):
        for c in entrants:
            times[c.name].append(c.run(wl.epochs) / wl.epochs)
    return times, statistics.median(setups[1:])  # without the warm-up's


def memory(wl: Workload, epochs: int = 4) -> tuple[float, float, float]:
    """microfw's peak memory in a fit, its growth per epoch (bytes), and the reference size.

    The peak counts the parameters and everything ``fit`` allocates on a freshly built model
    (gradients, work buffers, optimizer state, batches), not the data set the caller holds;
    growth compares the traced memory at the ends of epochs 2 and ``epochs``. The reference is
    the parameters and their gradients + one batch of activations and their gradients.
    """
    model = mf.build(wl.spec())
    X, Y = wl.X.astype(wl.dtype), wl.Y.astype(wl.dtype)
    item = np.dtype(wl.dtype).itemsize
    params = model.count_parameters() * item
    current: list[int] = []

    class Probe(mf.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
            current.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model.fit(X, Y, epochs=epochs, callbacks=[Probe()])
    peak = tracemalloc.get_traced_memory()[1] - base + params
    tracemalloc.stop()
    growth = (current[-1] - current[1]) / (len(current) - 2)
    rows = wl.batch_size or X.shape[0]
    # outputs and their gradients, with those of the layers after each hidden one
    widths = sum(wl.net.widths) + len(wl.after_hidden) * sum(wl.net.widths[1:-1])
    activations = 2 * rows * widths * item
    return peak, growth, float(2 * params + activations)


TARGETS: dict[str, list[tuple[str, str, float]]] = {
    # (contestant, baseline, the ratio microfw / baseline must be at most this)
    "xor": [("microfw", "numpy lean", 1.15), ("microfw", "torch eager", 1 / 3)],
    "moons": [
        ("microfw", "GEMM floor", 1.4),
        ("microfw", "torch eager", 1.0),
        ("microfw adam", "microfw", 1.15),
    ],
    "mnist1024": [("microfw", "GEMM floor", 1.25)],
    "mnist128": [
        ("microfw", "torch eager", 1 / 1.3),
        ("microfw adam", "microfw", 1.15),
        ("microfw adam", "torch adam", 1 / 1.3),
    ],
    # batch_norm + dropout after each hidden layer: faster than PyTorch as without them, and
    # within 1.3x of microfw's own network without them.
    "mnist128-bn-dropout": [("microfw", "torch eager", 1 / 1.3), ("microfw", "microfw plain", 1.3)],
}
ADAM = {"moons", "mnist128"}
"""The workloads that also time Adam (microfw's and torch's)."""


WORKLOADS = {"xor", "moons", "mnist", "mnist-bn-dropout"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller MNIST")
    parser.add_argument(
        "--only", default="xor,moons,mnist,mnist-bn-dropout", help="comma-separated workloads"
    )
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 7
    only = set(args.only.split(","))
    if only - WORKLOADS:
        parser.error(f"--only: unknown {sorted(only - WORKLOADS)} (workloads: {sorted(WORKLOADS)})")

    # The workloads keep the hand-written baselines' LeCun-normal init ("xavier") with relu
    # on purpose, which the spec linter would advise against on every build.
    warnings.filterwarnings("ignore", category=mf.SpecWarning)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(1)
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    for pool in threadpool_info():
        print(
            f"BLAS: {pool.get('internal_api')} {pool.get('version')} "
            f"kernel={pool.get('architecture')} threads={pool.get('num_threads')}"
        )
    from microfw_plugins import kernels

    if kernels.available():
        import numba

        print(f"numba {numba.__version__}: compiled kernels on (the fast extra)")
    else:
        print("compiled kernels off (numba missing or disabled): NumPy paths only")
    if peers.available("torch"):
        import torch

        print(f"torch {torch.__version__} (1 thread)")
    else:
        print("torch not installed: PyTorch rows skipped (pip install '.[bench]')")

    selected: list[tuple[str, Workload]] = []
    if "xor" in only:
        selected.append(("xor", workloads.xor()))
    if "moons" in only:
        selected.append(("moons", workloads.moons()))
    if "mnist" in only:
        n = 12_000 if args.quick else 60_000
        for bs in (32, 128, 1024):
            selected.append((f"mnist{bs}", workloads.mnist_shaped(bs, n=n)))
    if "mnist-bn-dropout" in only:
        n = 12_000 if args.quick else 60_000
        selected.append(("mnist128-bn-dropout", workloads.mnist_regularized(128, n=n)))

    failures = 0
    for key, wl in selected:
        times, setup = measure(wl, rounds, adam=key in ADAM)
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        print(f"\n{wl.name} ({np.dtype(wl.dtype).name}, batch {wl.batch_size or 'full'})")
        print(f"  {'contestant':<14}{'per epoch':>12}{'vs microfw':>12}")
        for name, t in medians.items():
            print(f"  {name:<14}{_fmt(t):>12}{t / medians['microfw']:>11.2f}x")
        print(
            f"  microfw, once per fit outside its epochs (data checks, batch set-up): "
            f"{_fmt(setup)} ({setup / medians['microfw']:.0%} of an epoch)"
        )
        for a, b, limit in TARGETS.get(key, []):
            if b not in medians:
                print(f"  target {a}/{b} <= {limit:.3f}: skipped ({b} not available)")
                continue
            # The rounds interleave the contestants: a ratio per round cancels what slowed
            # that round down; the verdict is their median, the range shows the spread.
            ratios = [ta / tb for ta, tb in zip(times[a], times[b], strict=True)]
            ratio = statistics.median(ratios)
            ok = ratio <= limit
            failures += not ok
            print(
                f"  target {a}/{b} <= {limit:.3f}: {ratio:.3f} "
                f"(rounds {min(ratios):.3f}-{max(ratios):.3f}) {'met' if ok else 'MISSED'}"
            )
        peak, growth, reference = memory(wl)
        # Python's own bookkeeping (history entries, small objects) dwarfs arrays of a few
        # bytes, so the peak target applies from 1 MB of arrays; growth applies everywhere
        # (the history's own entries are a few dozen bytes per epoch).
        peak_ok = peak <= 2 * reference or reference < 1e6
        ok = growth <= 1024 and peak_ok
        failures += not ok
        print(
            f"  memory: peak {peak / 1e6:.2f} MB (reference {reference / 1e6:.2f} MB, "
            f"ratio {peak / reference:.2f}{'' if reference >= 1e6 else ', not applied'}), "
            f"growth {growth:+.0f} B/epoch {'met' if ok else 'MISSED'}"
        )
    print(f"\n{'all targets met' if not failures else f'{failures} target(s) missed'}")
    return 1 if failures else 0


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
