"""Running trials on this machine: in the sweep's own process, or in N worker processes.

Each worker process loads the data once, then trains the trials it is sent one after another.
The sweep's process keeps the study; workers send it their reports and results over a pipe
(plain data only) and are told to stop a pruned trial.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, Protocol

from microfw.errors import WorkerError
from microfw.sweep.trial import Reporter, TrialData, load_trial_data, run_trial

_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class Executor(Protocol):
    """Where trials run: ``slots`` at a time."""

    slots: int

    def submit(self, task: Mapping[str, Any]) -> None:
        """Start a trial (plain data: number, spec, metric, report_every)."""

    def poll(self, report: Reporter, timeout: float) -> list[dict[str, Any]]:
        """Results of the trials that finished (waiting up to ``timeout`` s for one),
        passing their reports to ``report`` on the way."""

    def close(self) -> None:
        """Stop every worker; running trials are abandoned."""


class InProcess:
    """Trials run one at a time in this process, on data already loaded."""

    slots = 1

    def __init__(self, data: TrialData) -> None:
        self.data = data
        self.queue: list[Mapping[str, Any]] = []

    def submit(self, task: Mapping[str, Any]) -> None:
        self.queue.append(task)

    def poll(self, report: Reporter, timeout: float) -> list[dict[str, Any]]:
        return [run_trial(self.queue.pop(0), self.data, report)] if self.queue else []

    def close(self) -> None:
        self.queue.clear()


Source = tuple[str, str | None, float | None, int]
"""Where a worker reads its data: path, target column, validation split, sweep seed."""


def _worker(
    conn: multiprocessing.connection.Connection, source: Source, warmup: Mapping[str, Any]
) -> None:
    """A worker process: load the data once, train ``warmup`` (a spec) for one epoch on a few
    rows so that first-use costs (imports, compiled kernels) are paid now, while the sweep
    sets up its study, then run the trials received until told to end."""
    try:
        data = load_trial_data(*source)
        run_trial({"number": -1, "spec": _one_epoch(warmup), "metric": "loss"}, _head(data))
        while True:
            task = conn.recv()
            if task is None:
                conn.close()
                os._exit(0)  # all sent: skip the interpreter's teardown (numba, BLAS)
            if isinstance(task, tuple):  # a stop for a trial that finished meanwhile
                continue

            def report(n: int, epoch: int, value: float) -> bool:
                conn.send(("report", n, epoch, value))
                stop = False
                while conn.poll():  # only stop messages arrive while a trial runs
                    message = conn.recv()
                    stop = stop or message == ("stop", n)
                return stop

            conn.send(("done", run_trial(task, data, report)))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return  # the sweep ended or was killed: nothing to report to


def _one_epoch(spec: Mapping[str, Any]) -> dict[str, Any]:
    training = {**spec.get("training", {}), "epochs": 1}
    return {**spec, "training": training}


def _head(data: TrialData, rows: int = 16) -> TrialData:
    val = None if data.X_val is None else data.X_val[:rows]
    y_val = None if data.y_val is None else data.y_val[:rows]
    return TrialData(data.X[:rows], data.y[:rows], val, y_val, data.source)


class ProcessPool:
    """``jobs`` worker processes (spawned, so nothing of this process is inherited), each
    with BLAS on one thread unless ``one_blas_thread`` is False; each loads the data from
    ``source`` and warms up on the spec ``warmup``."""

    def __init__(
        self,
        jobs: int,
        source: Source,
        warmup: Mapping[str, Any],
        *,
        one_blas_thread: bool = True,
    ) -> None:
        self.slots = jobs
        self.source = source
        self.warmup = dict(warmup)
        self.one_blas_thread = one_blas_thread
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[tuple[Any, multiprocessing.connection.Connection]] = []
        self.busy: dict[int, int] = {}  # worker index -> trial number
        self.queue: list[Mapping[str, Any]] = []
        self.failed: list[dict[str, Any]] = []  # trials of workers that died, to report
        self.deaths = 0  # workers dead in a row, without a trial finished in between
        with self._environment():
            for _ in range(jobs):
                self.workers.append(self._start())

    @contextmanager
    def _environment(self) -> Iterator[None]:
        saved = {name: os.environ.get(name) for name in _ONE_THREAD}
        if self.one_blas_thread:
            os.environ.update({name: "1" for name in _ONE_THREAD})
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def _start(self) -> tuple[Any, multiprocessing.connection.Connection]:
        parent, child = self.context.Pipe()
        process = self.context.Process(
            target=_worker,
            args=(child, self.source, self.warmup),
            name="microfw-sweep-worker",
            daemon=True,
        )
        process.start()
        child.close()
        return process, parent

    def submit(self, task: Mapping[str, Any]) -> None:
        self.queue.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        for i, (_, conn) in enumerate(self.workers):
            if not self.queue:
                return
            if i not in self.busy:
                task = self.queue.pop(0)
                self.busy[i] = int(task["number"])
                try:
                    conn.send(dict(task))
                except OSError:
                    self.failed.extend(self._replace(i))

    def poll(self, report: Reporter, timeout: float) -> list[dict[str, Any]]:
        conns = {id(conn): i for i, (_, conn) in enumerate(self.workers)}
        ready = multiprocessing.connection.wait([c for _, c in self.workers], timeout)
        results, self.failed = self.failed, []
        for item in ready:
            i = conns[id(item)]
            conn = self.workers[i][1]
            try:
                while conn.poll():
                    message = conn.recv()
                    if message[0] == "report":
                        _, number, epoch, value = message
                        if report(number, epoch, value):
                            conn.send(("stop", number))
                    else:
                        results.append(message[1])
                        self.busy.pop(i, None)
                        self.deaths = 0
            except (EOFError, OSError):
                results.extend(self._replace(i))
        self._dispatch()
        return results

    def _replace(self, i: int) -> list[dict[str, Any]]:
        """A worker died: its trial fails with the reason, and a new worker takes its place."""
        process, conn = self.workers[i]
        process.join(timeout=5)
        conn.close()
        self.deaths += 1
        if self.deaths > 2 * self.slots:
            raise WorkerError(
                f"{self.deaths} worker processes died in a row (the last with exit code "
                f"{process.exitcode}); see their messages above"
            )
        with self._environment():
            self.workers[i] = self._start()
        number = self.busy.pop(i, None)
        if number is None:
            return []
        reason = f"the worker process died (exit code {process.exitcode})"
        return [{"number": number, "state": "fail", "error": reason, "metrics": {}}]

    def close(self) -> None:
        for _, conn in self.workers:
            with suppress(OSError):
                conn.send(None)
        for process, conn in self.workers:
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
            conn.close()
        self.workers.clear()
