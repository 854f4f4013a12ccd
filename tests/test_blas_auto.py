"""``blas_threads="auto"``, the default: one thread for small batches; for large ones, the
thread count that times fastest while the machine has a free core (microfw/train/blas.py).

The decisions are tested with a scripted clock and load meter; speed itself is measured by
``python -m benchmarks.blas``, never here.
"""

from __future__ import annotations

import pytest
from test_blas_threads import Seen, X, Y, blas_threads
from test_blas_threads import model as small_model

import microfw as mf
from microfw.train import blas
from microfw.train.blas import AUTO_MIN_WORK, AutoThreads, BlasPolicy, batch_work


def test_auto_is_the_default_and_accepted_by_specs_and_fit() -> None:
    assert mf.TrainingSpec().blas_threads == "auto"
    assert small_model().training.blas_threads == "auto"
    assert small_model(blas_threads=2).training.updated(blas_threads="auto").blas_threads == "auto"
    with pytest.raises(mf.SpecError, match=r"blas_threads"):
        small_model(blas_threads="many")


def test_auto_pins_one_thread_for_small_batches_and_restores_after() -> None:
    # A first fit compiles the kernels: numba loads scipy's OpenBLAS, a second library to pin.
    small_model(epochs=1).fit(X, Y)
    before = blas_threads()
    if not before:
        pytest.skip("numpy's BLAS is not visible to threadpoolctl here")
    seen = Seen()
    small_model(epochs=2).fit(X, Y, callbacks=[seen])
    assert seen.threads == [[1] * len(before)] * 2
    assert blas_threads() == before


def test_the_work_measure_counts_rows_times_weight_matrices() -> None:
    model = mf.Sequential(
        [{"type": "linear", "units": 25}, "relu", {"type": "linear", "units": 1}],
        input_dim=2,
        loss="bce",
    )
    assert batch_work(model, 900) == 900 * (2 * 25 + 25 * 1)
    small = BlasPolicy("auto", AUTO_MIN_WORK - 1)
    assert small.callbacks == []  # no timing below the threshold
    large = BlasPolicy("auto", AUTO_MIN_WORK)
    if large._controller is not None and blas.usable_cpus() > 1 and max(blas_threads()) > 1:
        assert [type(c) for c in large.callbacks] == [AutoThreads]
    assert BlasPolicy(None, 10**9).callbacks == BlasPolicy(1, 10**9).callbacks == []


class FakePolicy:
    def __init__(self) -> None:
        self.set_to: list[int] = []

    def set(self, threads: int) -> None:
        self.set_to.append(threads)


class Script:
    """A clock and a load meter driven by the test; batches take ``cost[threads]`` seconds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, policy: FakePolicy) -> None:
        self.now = 0.0
        self.others = 0.0
        self.policy = policy
        monkeypatch.setattr(blas.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(blas.LoadMeter, "start", lambda meter: None)
        monkeypatch.setattr(blas.LoadMeter, "others", lambda meter: self.others)
        monkeypatch.setattr(blas, "usable_cpus", lambda: 2)

    def run(self, auto: AutoThreads, batches: int, cost: dict[int, float]) -> None:
        for b in range(batches):
            self.now += cost[self.policy.set_to[-1]]
            auto.on_batch_end(b, {"loss": 0.0, "size": 100.0})


def start(monkeypatch: pytest.MonkeyPatch) -> tuple[AutoThreads, FakePolicy, Script]:
    policy = FakePolicy()
    script = Script(monkeypatch, policy)
    auto = AutoThreads(policy, [1, 2])  # type: ignore[arg-type]
    auto.on_train_begin({"epochs": 1, "batches": 1})
    return auto, policy, script


def test_with_a_free_core_auto_keeps_the_faster_count(monkeypatch: pytest.MonkeyPatch) -> None:
    auto, policy, script = start(monkeypatch)
    assert policy.set_to == [1]  # the safe start
    script.run(auto, 100, {1: 0.004, 2: 0.002})  # 0.4 s: past the first look, timed
    assert auto.choices == [2] and policy.set_to[-1] == 2
    auto, policy, script = start(monkeypatch)
    script.run(auto, 200, {1: 0.002, 2: 0.004})
    assert auto.choices == [1] and policy.set_to[-1] == 1


def test_a_count_twice_as_slow_is_left_after_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    auto, policy, script = start(monkeypatch)
    script.run(auto, 60, {1: 0.004, 2: 0.4})  # two threads collapsing: 100 times slower
    assert auto.choices == [1]
    assert policy.set_to.count(2) == 1
    assert script.now < 60 * 0.004 + 0.4 + 1e-9  # one slow batch, no more


def test_with_the_cores_busy_auto_times_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    auto, policy, script = start(monkeypatch)
    script.others = 1.0  # another process keeps a core busy
    script.run(auto, 5000, {1: 0.004, 2: 0.4})  # 20 s of training
    assert policy.set_to == [1] * len(policy.set_to)
    assert auto.choices == [] and auto.skipped >= 4


def test_auto_times_again_when_the_batches_slow_down(monkeypatch: pytest.MonkeyPatch) -> None:
    auto, policy, script = start(monkeypatch)
    script.run(auto, 100, {1: 0.004, 2: 0.002})
    assert auto.choices == [2]
    script.others = 1.0  # a process takes the other core: two threads now collapse
    script.run(auto, 20, {1: 0.004, 2: 0.1})
    assert auto.choices == [2, 1] and policy.set_to[-1] == 1
    script.run(auto, 100, {1: 0.004, 2: 0.1})
    assert policy.set_to[-1] == 1


def test_one_thread_winning_makes_the_looks_rarer(monkeypatch: pytest.MonkeyPatch) -> None:
    auto, _, script = start(monkeypatch)
    script.run(auto, 20_000, {1: 0.002, 2: 0.003})  # 40 s, one thread always faster
    # looks at about 0.2 s, then 5, 10, 20 s later: not every 5 s
    assert 2 <= len(auto.choices) <= 4 and set(auto.choices) == {1}


def test_the_cpu_meter_reads_proc_stat_where_there_is_one() -> None:
    busy = blas.cpu_busy()
    if busy is None:
        pytest.skip("no /proc/stat here")
    meter = blas.LoadMeter()
    meter.start()
    assert meter.others() is None  # too short an interval to say
    sum(i * i for i in range(2_000_000))  # keep this process busy for a moment
    meter.wall -= 1.0  # as if a second had passed
    others = meter.others()
    assert others is not None and others >= 0.0
