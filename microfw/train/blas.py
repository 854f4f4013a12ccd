"""BLAS threads while training: a fixed count, left alone, or ``"auto"`` (the default).

Multi-threaded BLAS pays only for large matrix products and only while cores are free: on
a shared machine, a second BLAS thread waiting for a busy core slows every product down
several times (the measurements are in ``benchmarks/blas.py`` and the README). ``"auto"``
therefore:

* pins BLAS to one thread when a batch is too small for threads to pay
  (:data:`AUTO_MIN_WORK` multiply-adds per batch through the model's weight matrices), and
* above that, times the batches on one thread and on more, keeps the faster setting, and
  times them again every :data:`AUTO_RECHECK` seconds, or sooner when the batches slow down
  (another process took a core), so the choice follows the load of the machine.

Nothing here changes the numbers a fit computes beyond BLAS's own rounding.
threadpoolctl is a runtime dependency; where it sees no BLAS library, ``"auto"`` leaves BLAS
as it is.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from microfw.errors import MicrofwError
from microfw.train.callbacks import Callback, Logs

if TYPE_CHECKING:
    from microfw.nn.sequential import Sequential

BlasThreads = int | Literal["auto"] | None
"""A ``blas_threads`` setting: a thread count, ``"auto"``, or None (BLAS left as it is)."""

AUTO_MIN_WORK = 1_000_000
"""Multiply-adds per batch (rows times the weights of the 2-D parameters) below which
``"auto"`` pins one thread without timing anything (threads never paid there)."""
AUTO_FIRST = 0.2
"""Seconds on one thread before ``"auto"`` first considers more."""
AUTO_RECHECK = 5.0
"""Seconds between two timings of the thread counts (doubled, up to :data:`AUTO_RECHECK_MAX`,
each time one thread wins or the other processes keep the cores busy)."""
AUTO_RECHECK_MAX = 60.0
AUTO_WINDOW = 0.03
"""Seconds of batches (at least :data:`AUTO_MIN_BATCHES`) timed per thread count."""
AUTO_MIN_BATCHES = 3
AUTO_SLOWDOWN = 1.4
"""Batches this many times slower per row than the chosen count measured,
:data:`AUTO_MIN_BATCHES` in a row, start a new timing early."""
AUTO_BUSY = 0.5
"""Cores' worth of CPU the other processes may use (measured while training on one thread)
for ``"auto"`` still to try one more thread per free core."""


def _controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded in this process (None without it).

    Taken anew for every fit (about 0.2 ms): a library loaded since (scipy's OpenBLAS, which
    numba imports with the compiled kernels) is limited too.
    """
    try:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
    except ImportError:
        return None
    return ThreadpoolController().select(user_api="blas")


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def batch_work(model: Sequential, rows: int) -> int:
    """Multiply-adds of one forward pass of ``rows`` rows through the model's weight matrices
    (the 2-D parameters); the backward pass does about twice as many."""
    return rows * sum(p.size for p in model.parameters() if p.ndim == 2)


def batch_rows(X: Any, batch_size: int | None) -> int:
    """Rows per batch of a fit on ``X`` (not yet checked: 0 if it has no length)."""
    try:
        n = len(X)
    except TypeError:
        return 0
    return min(batch_size or n, n)


class BlasPolicy:
    """A context manager applying a ``blas_threads`` setting for one fit.

    ``callbacks`` are the callbacks the fit must run with it (the timer of ``"auto"``; none
    otherwise). On exit BLAS is back to its thread counts from before.
    """

    def __init__(self, setting: BlasThreads, work: int) -> None:
        self.setting = setting
        self.callbacks: list[Callback] = []
        self._limiter: Any = None
        self._controller: Any = None
        if setting is None:
            return
        if setting != "auto":
            try:
                import threadpoolctl  # noqa: F401
            except ImportError:
                raise MicrofwError(
                    f"blas_threads={setting} needs threadpoolctl: pip install threadpoolctl "
                    "(or set blas_threads to null to leave BLAS as it is)"
                ) from None
        controller = _controller()
        if controller is None or not controller.lib_controllers:
            return  # no BLAS threadpoolctl can set: left as it is
        self._controller = controller
        if setting == "auto":
            most = min([usable_cpus(), *(c.num_threads for c in controller.lib_controllers)])
            if work >= AUTO_MIN_WORK and most > 1:
                self.callbacks.append(AutoThreads(self, candidates(most)))

    def set(self, threads: int) -> None:
        """Run BLAS on ``threads`` threads (until the end of the fit)."""
        if self._controller is None:
            return
        limiter = self._controller.limit(limits=threads, user_api="blas")
        if self._limiter is None:  # the first one remembers the counts to restore
            self._limiter = limiter

    def __enter__(self) -> BlasPolicy:
        if self.setting == "auto":
            self.set(1)  # the safe start; AutoThreads tries more where it may pay
        elif self.setting is not None:
            self.set(self.setting)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None


def candidates(most: int) -> list[int]:
    """The thread counts ``"auto"`` tries: one, all, and half of them on 4 or more CPUs."""
    return sorted({1, max(1, most // 2), most})


def cpu_busy() -> float | None:
    """Seconds of CPU time all processes have used, from ``/proc/stat`` (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait is busy
    ticks = [int(v) for v in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _clock_ticks()


@functools.cache
def _clock_ticks() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


class LoadMeter:
    """The cores' worth of CPU other processes used since the last :meth:`start`."""

    def start(self) -> None:
        """Begin a measurement."""
        self.busy, self.own, self.wall = cpu_busy(), time.process_time(), time.perf_counter()

    def others(self) -> float | None:
        """Other processes' CPU use since :meth:`start`, in cores (None where unknown)."""
        busy, wall = cpu_busy(), time.perf_counter()
        if busy is None or self.busy is None or wall - self.wall < 0.05:
            return None
        own = time.process_time() - self.own
        return max(0.0, (busy - self.busy - own) / (wall - self.wall))


class AutoThreads(Callback):
    """Runs BLAS on one thread, and times more where they may pay, keeping the fastest.

    After :data:`AUTO_FIRST` seconds on one thread, and then every :data:`AUTO_RECHECK`
    seconds, it looks at how much CPU the other processes used meanwhile: with a core free
    (they used less than :data:`AUTO_BUSY` cores more than the cores taken), it times the
    batches on each thread count for :data:`AUTO_WINDOW` seconds (at least
    :data:`AUTO_MIN_BATCHES` batches; a count already twice as slow as the best is left after
    one batch) and keeps the count with the lowest median time per row. Each timing that
    more threads lose doubles the time to the next look (up to :data:`AUTO_RECHECK_MAX`).
    A kept count above one is timed again as soon as :data:`AUTO_MIN_BATCHES` batches in a row take
    :data:`AUTO_SLOWDOWN` times its measured time per row (another process took a core).
    """

    def __init__(self, policy: BlasPolicy, options: Sequence[int]) -> None:
        self.policy = policy
        self.options = list(options)
        self.meter = LoadMeter()
        self.choices: list[int] = []
        """The thread count chosen by each timing, in order (for tests and benchmarks)."""
        self.skipped = 0
        """Looks that found the cores busy and timed nothing."""

    def on_train_begin(self, logs: Logs) -> None:
        self.wait = AUTO_FIRST
        self._keep(1)

    def _keep(self, threads: int) -> None:
        self.current = threads
        self.policy.set(threads)
        self.timing: list[int] | None = None
        self.slow = 0
        self.samples: list[float] = []
        self.meter.start()
        self.since = self.last = time.perf_counter()

    def _time_next(self) -> None:
        assert self.timing is not None
        self.current = self.timing.pop(0)
        self.policy.set(self.current)
        self.samples = []
        self.since = self.last = time.perf_counter()

    def on_batch_end(self, batch: int, logs: Logs) -> None:
        now = time.perf_counter()
        per_row = (now - self.last) / max(logs.get("size", 1.0), 1.0)
        self.last = now
        self.samples.append(per_row)
        if len(self.samples) > 256:
            del self.samples[:-64]
        if self.timing is not None:
            self._timing_step(now)
        elif self.current > 1:
            self.slow = self.slow + 1 if per_row > AUTO_SLOWDOWN * self.measured else 0
            if self.slow >= AUTO_MIN_BATCHES or now - self.since >= self.wait:
                self._start_timing({})
        elif now - self.since >= self.wait:
            others = self.meter.others()
            free = usable_cpus() - 1 - (others or 0.0)
            tried = [n for n in self.options if n > 1 and free >= n - 1 - AUTO_BUSY]
            if not tried:
                self.skipped += 1  # a look costs nothing: the next one comes soon
                self.wait = min(2 * self.wait, AUTO_RECHECK)
                self._keep(1)
                return
            self._start_timing({1: statistics.median(self.samples[-64:])}, tried)

    def _start_timing(self, timed: dict[int, float], tried: Sequence[int] | None = None) -> None:
        self.timed = timed
        self.timing = [n for n in (tried or self.options) if n not in timed]
        self._time_next()

    def _timing_step(self, now: float) -> None:
        assert self.timing is not None
        best = min(self.timed.values(), default=math.inf)
        enough = len(self.samples) >= AUTO_MIN_BATCHES and now - self.since >= AUTO_WINDOW
        if not (enough or min(self.samples) > 2 * best):
            return
        self.timed[self.current] = statistics.median(self.samples)
        if self.timing:
            self._time_next()
            return
        chosen = min(self.timed, key=self.timed.__getitem__)
        self.choices.append(chosen)
        self.wait = AUTO_RECHECK if chosen > 1 else min(2 * self.wait, AUTO_RECHECK_MAX)
        self.wait = max(self.wait, AUTO_RECHECK)
        self._keep(chosen)
        self.measured = self.timed[chosen]
