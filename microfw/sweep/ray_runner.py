"""Running trials as Ray tasks on an existing cluster (the ``ray`` extra).

Optuna still chooses the parameters in the sweep's process; each trial is a Ray task with one
CPU. The data go into Ray's object store once (``ray.put``) and are shared by every task on a
node. A task whose worker or node dies is retried by Ray (``retries`` times), then the trial is
marked failed with Ray's reason: never lost silently. Every node needs microfw installed (the
same version), as for any Ray task. Per-epoch reports for pruning go through a small actor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from microfw._extras import require
from microfw.sweep.trial import Reporter, TrialData, run_trial


class Board:
    """A Ray actor between running trials and the sweep: reports in, stop flags out."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, int, float]] = []
        self.stopped: set[int] = set()

    def report(self, number: int, epoch: int, value: float) -> bool:
        self.reports.append((number, epoch, value))
        return number in self.stopped

    def drain(self) -> list[tuple[int, int, float]]:
        out, self.reports = self.reports, []
        return out

    def stop(self, number: int) -> None:
        self.stopped.add(number)


def ray_trial(task: Mapping[str, Any], arrays: tuple[Any, ...], board: Any) -> dict[str, Any]:
    """The Ray task: one trial on the shared data, reporting through ``board``."""
    import ray

    data = TrialData(*arrays)

    def report(number: int, epoch: int, value: float) -> bool:
        return bool(ray.get(board.report.remote(number, epoch, value)))

    result = run_trial(task, data, report)
    result["node"] = f"ray node {ray.get_runtime_context().get_node_id()[:12]}"
    return result


class RayExecutor:
    """Trials as Ray tasks on the cluster at ``address`` (``"auto"``, ``"HOST:PORT"`` or
    ``"ray://HOST:PORT"``), as many at a time as the cluster has CPUs."""

    def __init__(self, address: str, data: TrialData, *, retries: int = 2) -> None:
        self.ray: Any = require("ray", "ray", "sweeping on a Ray cluster")
        self.owns = not self.ray.is_initialized()
        if self.owns:
            self.ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        self.slots = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        arrays = (data.X, data.y, data.X_val, data.y_val, data.source)
        self.data_ref = self.ray.put(arrays)
        self.board = self.ray.remote(num_cpus=0)(Board).remote()
        self.task = self.ray.remote(num_cpus=1, max_retries=retries)(ray_trial)
        self.pending: dict[Any, int] = {}
        self.retries = retries

    def nodes(self) -> int:
        """The number of live nodes in the cluster."""
        return sum(1 for node in self.ray.nodes() if node.get("Alive"))

    def submit(self, task: Mapping[str, Any]) -> None:
        ref = self.task.remote(dict(task), self.data_ref, self.board)
        self.pending[ref] = int(task["number"])

    def poll(self, report: Reporter, timeout: float) -> list[dict[str, Any]]:
        ray = self.ray
        for number, epoch, value in ray.get(self.board.drain.remote()):
            if number in self.pending.values() and report(number, epoch, value):
                self.board.stop.remote(number)
        if not self.pending:
            return []
        ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        results = []
        for ref in ready:
            number = self.pending.pop(ref)
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                reason = " ".join(str(exc).split())[:500]
                results.append(
                    {
                        "number": number,
                        "state": "fail",
                        "metrics": {},
                        "error": f"Ray task failed after {self.retries} retries: {reason}",
                    }
                )
        return results

    def close(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending.clear()
        if self.owns:
            self.ray.shutdown()
