"""Sweeps (microfw.sweep, ``microfw sweep``): search spaces, samplers, seeds, worker processes,
kill -9 and resume, pruning, outputs, and a real two-node Ray cluster on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import microfw as mf
from microfw.cli import main
from microfw.sweep import SpaceError, SweepError, load_space, run, trial_seed
from microfw.sweep.output import write_tables
from microfw.sweep.space import check_against_spec, trial_spec
from microfw.sweep.trial import load_trial_data

pytest.importorskip("optuna")

HERE = Path(__file__).parent

SPEC: dict[str, Any] = {
    "spec_version": 1,
    "input_dim": 2,
    "layers": [
        {"type": "linear", "units": 8, "activation": "relu"},
        {"type": "linear", "units": 1, "activation": "sigmoid"},
    ],
    "loss": "bce",
    "optimizer": "sgd",
    "training": {"epochs": 20},
}


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 rows of two noisy blobs, labels 0/1."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    X = rng.normal(size=(200, 2)) * 0.8 + np.where(y[:, None] == 1, 1.0, -1.0)
    path = tmp_path_factory.mktemp("data") / "blobs.csv"
    rows = [
        "x1,x2,y",
        *(f"{float(a)!r},{float(b)!r},{int(c)}" for (a, b), c in zip(X, y, strict=True)),
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def sweep(data: Path, out: Path, space: dict[str, Any], **kwargs: Any) -> Any:
    return run(SPEC, data, space, target="y", out=out, progress=None, **kwargs)


def signature(result: Any) -> list[tuple[Any, ...]]:
    return [(r["number"], r["state"], r["params"], r["value"], r["seed"]) for r in result.rows]


QUIET: dict[str, Any] = {"trials": 4, "progress": None}

RANDOM_SPACE = {
    "sampler": "random",
    "params": {
        "optimizer.lr": {"log_uniform": [0.01, 1.0]},
        "layers[0].units": {"choice": [4, 8, 16]},
        "training.batch_size": {"int": [16, 64]},
        "optimizer.momentum": {"uniform": [0.0, 0.9]},
    },
}


# -- the search space ---------------------------------------------------------------------------


def test_every_problem_of_a_space_is_listed_with_its_path() -> None:
    bad = {
        "sampler": "tpee",
        "objective": {"metric": "val_loss", "direction": "down"},
        "params": {
            "optimizer.lr": {"log_uniform": [-1, 1.0]},
            "layers[0].units": {"choice": []},
            "training.batch_size": {"int": [16.5, 8], "steps": 2},
            "optimizer..momentum": {"uniform": [0, 1]},
        },
        "trails": 3,
    }
    with pytest.raises(SpaceError) as info:
        load_space(bad)
    paths = [p.path for p in info.value.problems]
    assert paths == [
        "trails",
        "sampler",
        "objective.direction",
        "params.optimizer.lr.log_uniform",
        "params.layers[0].units.choice",
        "params.training.batch_size.steps",
        "params.training.batch_size.int",
        "params.training.batch_size.int",
        "params.optimizer..momentum",
    ]
    text = str(info.value)
    assert "did you mean 'trials'" in text and "did you mean 'tpe'" in text
    assert "did you mean 'step'" in text


def test_a_space_file_is_read_as_strictly_as_a_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "space.json"
    path.write_bytes(b'\xef\xbb\xbf{"params": {"optimizer.lr": {"uniform": [0.1, 1]}}}')
    assert load_space(path).params[0].path == "optimizer.lr"  # a byte-order mark is fine
    refused = {
        '{"params": {}, "params": {"optimizer.lr": {"uniform": [0.1, 1]}}}': (
            "params",
            "key 'params' appears more than once",
        ),
        '{"params": {"optimizer.lr": {"choice": [0.1, NaN]}}}': ("", "NaN is not a number"),
        '{"params": ': ("", "not valid JSON: Expecting value (line 1, column 12)"),
        "[1, 2]": ("", "expected a JSON object"),
    }
    for text, (where, message) in refused.items():
        path.write_text(text)
        with pytest.raises(SpaceError) as info:
            load_space(path)
        (problem,) = info.value.problems
        assert problem.path == where and message in problem.message, text
        assert info.value.source == str(path)
    path.write_bytes(b"{" + b" " * 2**22 + b"}")
    with pytest.raises(SpaceError, match="larger than the limit"):
        load_space(path)
    with pytest.raises(SpaceError, match="is a directory"):
        load_space(tmp_path)
    with pytest.raises(SpaceError, match=r"cannot read: No such file"):
        load_space(tmp_path / "missing.json")


def test_a_continuous_range_needs_points_for_the_grid() -> None:
    with pytest.raises(SpaceError, match=r"params\.optimizer\.lr: the grid sampler needs"):
        load_space({"sampler": "grid", "params": {"optimizer.lr": {"uniform": [0.1, 1]}}})
    space = load_space(
        {"sampler": "grid", "params": {"optimizer.lr": {"log_uniform": [0.01, 1], "grid": 3}}}
    )
    assert space.grid() == [
        {"optimizer.lr": pytest.approx(0.01)},
        {"optimizer.lr": pytest.approx(0.1)},
        {"optimizer.lr": pytest.approx(1.0)},
    ]
    assert space.default_trials() == 3


def test_the_spec_file_is_read_as_load_spec_reads_it(data_csv: Path, tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(SPEC).encode())  # as some editors write
    space = {"sampler": "grid", "params": {"optimizer.lr": {"choice": [0.5]}}}
    result = run(path, data_csv, space, target="y", epochs=2, out=tmp_path / "bom", progress=None)
    assert result.counts() == {"complete": 1}
    path.write_text(json.dumps(SPEC)[:-1] + ', "seed": 1, "seed": 2}')
    with pytest.raises(
        mf.SpecError, match=r"spec\.json: 1 problem.*\n  - seed: key .seed. appears more than once"
    ):
        run(path, data_csv, space, target="y", out=tmp_path / "twice", progress=None)


def test_paths_are_checked_against_the_spec() -> None:
    space = load_space(
        {
            "params": {
                "layers[5].units": {"choice": [4]},
                "optimizer.lr": {"uniform": [0.0, 1.0]},
                "layers[0].units": {"int": [4, 16]},
            }
        }
    )
    defaults = mf.load_spec(SPEC).to_dict()
    with pytest.raises(SpaceError) as info:
        check_against_spec(space, SPEC, defaults)
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == 2
    assert problems[0].startswith("params.layers[5].units: layers[5].units: the spec has no")
    assert problems[1].startswith("params.optimizer.lr: value 0.0 gives an invalid spec")
    assert "optimizer.lr" in problems[1] and "greater than 0" in problems[1]


def test_a_bare_plugin_name_is_written_out_to_set_its_field() -> None:
    defaults = mf.load_spec(SPEC).to_dict()
    spec = trial_spec(
        SPEC,
        {"optimizer.lr": 0.3, "layers[0].units": 5, "training.batch_size": 32},
        defaults,
    )
    assert spec["optimizer"] == {"type": "sgd", "lr": 0.3}
    assert spec["layers"][0]["units"] == 5 and spec["training"] == {"epochs": 20, "batch_size": 32}
    assert SPEC["optimizer"] == "sgd"  # the base spec is left alone
    no_training = {k: v for k, v in SPEC.items() if k != "training"}
    training = trial_spec(no_training, {"training.epochs": 3}, defaults)["training"]
    assert training == {**defaults["training"], "epochs": 3}  # the rest: the spec's defaults
    mf.load_spec(spec)


# -- samplers, seeds, workers -------------------------------------------------------------------


def test_grid_runs_every_point_and_writes_its_outputs(data_csv: Path, tmp_path: Path) -> None:
    space = {
        "sampler": "grid",
        "objective": {"metric": "val_accuracy"},
        "params": {"layers[0].units": {"choice": [2, 8]}, "optimizer.lr": {"choice": [0.05, 0.5]}},
    }
    result = sweep(data_csv, tmp_path / "grid", space, plot=True)
    assert [r["params"] for r in result.rows] == [
        {"layers[0].units": 2, "optimizer.lr": 0.05},
        {"layers[0].units": 2, "optimizer.lr": 0.5},
        {"layers[0].units": 8, "optimizer.lr": 0.05},
        {"layers[0].units": 8, "optimizer.lr": 0.5},
    ]
    assert result.direction == "maximize"  # accuracy is maximised by default
    assert all(r["state"] == "complete" and r["epochs"] == 20 for r in result.rows)
    best = max(result.rows, key=lambda r: (r["value"], -r["number"]))
    assert result.best == best

    out = tmp_path / "grid"
    lines = (out / "trials.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:4] == ["number", "state", "layers[0].units", "optimizer.lr"]
    assert {"value", "loss", "accuracy", "val_loss", "val_accuracy", "duration"} <= set(header)
    assert len(lines) == 5
    document = json.loads((out / "trials.json").read_text())
    assert document["best"]["number"] == best["number"] and len(document["trials"]) == 4
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = mf.load(out / "best.microfw")  # a normal model file: the best trial's spec and seed
    spec = model.to_spec().to_dict()
    assert spec["layers"][0]["units"] == best["params"]["layers[0].units"]
    assert spec["optimizer"]["lr"] == best["params"]["optimizer.lr"]
    assert spec["seed"] == best["seed"]
    held_out = load_trial_data(str(data_csv), "y", 0.2, 0)  # the rows the sweep validated on
    assert held_out.X_val is not None and len(held_out.X_val) == 40
    assert model.evaluate(held_out.X_val, held_out.y_val)["accuracy"] == best["value"]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_sweep_repeats_from_its_seed(data_csv: Path, tmp_path: Path, sampler: str) -> None:
    space = {**RANDOM_SPACE, "sampler": sampler}
    first = sweep(data_csv, tmp_path / "a", space, trials=4, epochs=5, seed=7)
    again = sweep(data_csv, tmp_path / "b", space, trials=4, epochs=5, seed=7)
    other = sweep(data_csv, tmp_path / "c", space, trials=4, epochs=5, seed=8)
    assert signature(first) == signature(again)
    assert [r["params"] for r in first.rows] != [r["params"] for r in other.rows]
    assert len({r["seed"] for r in first.rows}) == 4  # one weights seed per trial
    assert all(r["epochs"] == 5 for r in first.rows)


def test_two_worker_processes_give_the_same_trials(data_csv: Path, tmp_path: Path) -> None:
    alone = sweep(data_csv, tmp_path / "one", RANDOM_SPACE, trials=4, jobs=1)
    pool = sweep(data_csv, tmp_path / "two", RANDOM_SPACE, trials=4, jobs=2)
    assert [r["params"] for r in pool.rows] == [r["params"] for r in alone.rows]
    assert [r["value"] for r in pool.rows] == pytest.approx([r["value"] for r in alone.rows])
    workers = {r["node"] for r in pool.rows}
    assert len(workers) == 2 and str(os.getpid()) not in " ".join(workers)


def test_a_worker_that_dies_fails_its_trial_and_is_replaced(
    data_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from microfw.sweep.local import ProcessPool

    killed: list[int] = []
    poll = ProcessPool.poll

    def poll_and_kill(self: ProcessPool, report: Any, timeout: float) -> list[dict[str, Any]]:
        def kill_on_first_report(number: int, epoch: int, value: float) -> bool:
            # the worker sent this at epoch 150 of 1500: it is training the trial for sure
            if not killed:
                (i,) = [i for i, busy in self.busy.items() if busy == number]
                os.kill(self.workers[i][0].pid, signal.SIGKILL)
                killed.append(number)
            return bool(report(number, epoch, value))

        return poll(self, kill_on_first_report, timeout)

    monkeypatch.setattr(ProcessPool, "poll", poll_and_kill)
    reporting = {**RANDOM_SPACE, "pruner": {"type": "median"}}  # reports; prunes after 5 trials
    result = sweep(data_csv, tmp_path / "died", reporting, trials=4, epochs=1500, jobs=2)
    assert result.counts() == {"complete": 3, "fail": 1}
    (failed,) = [r for r in result.rows if r["state"] == "fail"]
    assert failed["number"] == killed[0]
    assert failed["error"] == "the worker process died (exit code -9)"  # and a new one took over


@pytest.mark.parametrize(
    ("training", "swept", "pinned"),
    [
        ({}, False, True),  # the default "auto" would time threads in every worker
        ({"blas_threads": None}, False, False),  # the spec says: leave BLAS as it is
        ({"blas_threads": 2}, False, False),
        ({}, True, False),  # the space chooses it
    ],
)
def test_workers_run_blas_on_one_thread_unless_the_spec_or_space_sets_it(
    data_csv: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    training: dict[str, Any],
    swept: bool,
    pinned: bool,
) -> None:
    from microfw.sweep import runner
    from microfw.sweep.local import InProcess

    seen: list[bool] = []

    class Recorder(InProcess):  # the pool's arguments, trials run here
        def __init__(self, jobs: int, source: Any, warmup: Any, *, one_blas_thread: bool) -> None:
            seen.append(one_blas_thread)
            super().__init__(load_trial_data(*source))

    monkeypatch.setattr(runner, "ProcessPool", Recorder)
    spec = {**SPEC, "training": {**SPEC["training"], **training}}
    space: dict[str, Any] = {"sampler": "random", "params": {"optimizer.lr": {"uniform": [0.1, 1]}}}
    if swept:
        space["params"]["training.blas_threads"] = {"choice": [1, "auto"]}
    run(spec, data_csv, space, target="y", out=tmp_path / "s", trials=2, jobs=2, progress=None)
    assert seen == [pinned]


def test_unpromising_trials_are_pruned(data_csv: Path, tmp_path: Path) -> None:
    space = {
        "sampler": "grid",
        "pruner": {"type": "median", "startup_trials": 2, "interval_epochs": 2},
        "params": {"optimizer.lr": {"choice": [0.5, 1e-5]}, "layers[0].units": {"choice": [4, 8]}},
    }
    result = sweep(data_csv, tmp_path / "prune", space)
    states = [(r["params"]["optimizer.lr"], r["state"]) for r in result.rows]
    assert states == [(0.5, "complete")] * 2 + [(1e-5, "pruned")] * 2
    for row in result.rows[2:]:
        assert row["epochs"] == 2 and row["value"] > result.best["value"]


def test_a_value_that_makes_the_spec_invalid_is_refused_up_front(
    data_csv: Path, tmp_path: Path
) -> None:
    space = {"sampler": "grid", "params": {"optimizer.momentum": {"choice": [0.5, 1.5]}}}
    with pytest.raises(SpaceError, match=r"params\.optimizer\.momentum: value 1\.5"):
        sweep(data_csv, tmp_path / "bad", space)
    assert not (tmp_path / "bad" / "study.db").exists()


def test_a_combination_that_makes_the_spec_invalid_fails_that_trial_only(
    data_csv: Path, tmp_path: Path
) -> None:
    spec = {**SPEC, "layers": [SPEC["layers"][0], {"type": "linear", "units": 2}, "sigmoid"]}
    space = {
        "sampler": "grid",
        "params": {
            "layers[1].units": {"choice": [2, 1]},
            "layers[2]": {"choice": ["sigmoid", "softmax"]},
        },
    }
    result = run(spec, data_csv, space, target="y", out=tmp_path / "mixed", progress=None, epochs=2)
    states = [
        (r["params"]["layers[1].units"], r["params"]["layers[2]"], r["state"]) for r in result.rows
    ]
    assert states == [
        (2, "sigmoid", "complete"),
        (2, "softmax", "complete"),
        (1, "sigmoid", "complete"),
        (1, "softmax", "fail"),
    ]
    error = result.rows[3]["error"]
    assert error.startswith("invalid spec: layers[2]") and "softmax" in error
    assert result.rows[3]["epochs"] is None  # never trained


def test_a_nan_or_infinite_number_is_written_as_null_and_an_empty_cell(tmp_path: Path) -> None:
    row = {
        "number": 0,
        "state": "complete",
        "params": {"optimizer.lr": 0.5},
        "value": math.inf,
        "metrics": {"loss": math.nan, "accuracy": 0.5},
        "duration": 0.1,
        "epochs": 3,
        "seed": 7,
        "error": None,
    }
    write_tables(tmp_path, [row], {"best": None, "history": [math.nan, 1.0]})

    def refuse(constant: str) -> None:
        raise AssertionError(f"trials.json holds {constant}, which is not JSON")

    document = json.loads((tmp_path / "trials.json").read_text(), parse_constant=refuse)
    assert document["history"] == [None, 1.0]
    (written,) = document["trials"]
    assert written["value"] is None and written["metrics"] == {"loss": None, "accuracy": 0.5}
    header, line = (tmp_path / "trials.csv").read_text().splitlines()
    cells = dict(zip(header.split(","), line.split(","), strict=True))
    assert cells["value"] == cells["loss"] == "" and cells["accuracy"] == "0.5"


def test_an_output_directory_is_not_reused_without_resume(data_csv: Path, tmp_path: Path) -> None:
    sweep(data_csv, tmp_path / "x", RANDOM_SPACE, trials=1, epochs=2)
    with pytest.raises(SweepError, match="already holds a sweep"):
        sweep(data_csv, tmp_path / "x", RANDOM_SPACE, trials=1, epochs=2)
    with pytest.raises(SweepError, match="different space"):
        other = {**RANDOM_SPACE, "sampler": "tpe"}
        sweep(data_csv, tmp_path / "x", other, trials=1, epochs=2, resume=True)
    with pytest.raises(SweepError, match="nothing to resume"):
        sweep(data_csv, tmp_path / "y", RANDOM_SPACE, trials=1, resume=True)
    more = sweep(data_csv, tmp_path / "x", RANDOM_SPACE, trials=2, epochs=2, resume=True)
    assert [r["number"] for r in more.rows] == [0, 1]


def test_the_command_reports_a_bad_space_on_one_line(
    data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"params": {"optimizer.lr": {"uniform": [1, 0.1]}}}))
    code = main(
        ["sweep", str(spec), "--data", str(data_csv), "--target", "y", "--space", str(space)]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "invalid search space" in err and "params.optimizer.lr.uniform: low must be" in err


# -- kill -9 and resume -------------------------------------------------------------------------


def test_a_killed_sweep_resumes_without_losing_a_finished_trial(
    data_csv: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    space = tmp_path / "space.json"
    space.write_text(json.dumps(RANDOM_SPACE))
    out = tmp_path / "killed"
    args = [*("sweep", str(spec), "--data", str(data_csv), "--target", "y")]
    args += [*("--space", str(space), "--trials", "4", "--epochs", "6000", "--out", str(out))]
    process = subprocess.Popen(
        [sys.executable, "-m", "microfw", *args, "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until(lambda: 2 in _running(out), process)  # trial 2 is training
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    before = json.loads((out / "trials.json").read_text())["trials"]
    assert [r["number"] for r in before] == [0, 1], "the sweep was not killed during trial 2"

    result = run(spec, data_csv, space, target="y", epochs=6000, out=out, resume=True, **QUIET)
    assert result.counts() == {"complete": 4}
    after = {r["number"]: r for r in result.rows}
    assert after[0] == before[0] and after[1] == before[1]  # finished trials are kept as they were
    assert 2 not in after  # the interrupted trial...
    (rerun,) = [r for r in after.values() if r["rerun_of"] is not None]
    assert rerun["rerun_of"] == 2  # ...ran again with its parameters and seed
    clean = run(spec, data_csv, space, target="y", epochs=1, out=tmp_path / "clean", **QUIET)
    assert rerun["params"] == clean.rows[2]["params"]
    assert rerun["seed"] == clean.rows[2]["seed"] == trial_seed(0, 2)
    assert mf.load(out / "best.microfw").to_spec().seed == result.best["seed"]


def test_ctrl_c_stops_the_workers_and_the_sweep_resumes(data_csv: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    space = tmp_path / "space.json"
    space.write_text(json.dumps(RANDOM_SPACE))
    out = tmp_path / "interrupted"
    args = [*("sweep", str(spec), "--data", str(data_csv), "--target", "y", "--jobs", "2")]
    args += [*("--space", str(space), "--trials", "4", "--epochs", "3000", "--out", str(out))]
    process = subprocess.Popen(
        [sys.executable, "-m", "microfw", *args, "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    try:
        _wait_until(lambda: (out / "trials.json").exists() and bool(_running(out)), process)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the sweep and its workers
        _, err = process.communicate(timeout=60)
    finally:
        _kill_session(process.pid)
    assert process.returncode == 130 and "microfw: interrupted" in err
    assert "Traceback" not in err
    before = json.loads((out / "trials.json").read_text())["trials"]
    assert 1 <= len(before) < 4 and all(r["state"] == "complete" for r in before)

    result = run(spec, data_csv, space, target="y", epochs=3000, out=out, resume=True, **QUIET)
    assert result.counts() == {"complete": 4}
    after = {r["number"]: r for r in result.rows}
    for row in before:
        assert after[row["number"]] == row
    reruns = [r["rerun_of"] for r in after.values() if r["rerun_of"] is not None]
    assert reruns and not set(reruns) & set(after)  # the trials cut short ran again


def _running(out: Path) -> set[int]:
    """The numbers of the trials the study in ``out`` holds as running, seed stored."""
    db = out / "study.db"
    if not db.exists():
        return set()
    query = (
        "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id"
        " WHERE t.state = 'RUNNING' AND a.key = 'seed'"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as db_:
            return {number for (number,) in db_.execute(query)}
    except sqlite3.Error:  # the sweep is creating its tables
        return set()


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[Any]) -> None:
    """Poll ``ready`` until it holds; fail if ``process`` ends first or 90 s pass."""
    deadline = time.monotonic() + 90
    while not ready():
        assert process.poll() is None, "the sweep ended before the moment to interrupt it"
        assert time.monotonic() < deadline, "the sweep never reached the moment to interrupt it"
        time.sleep(0.02)


# -- a real two-node Ray cluster ----------------------------------------------------------------


def test_a_sweep_runs_on_a_two_node_ray_cluster(data_csv: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    temp = Path(f"/tmp/mfray{os.getpid()}")  # Ray's socket paths must stay short
    temp.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "RAY_TMPDIR": str(temp),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # 127.0.0.1 stays 127.0.0.1 (ray_cluster.py)
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    cluster = subprocess.Popen(
        [sys.executable, str(HERE / "ray_cluster.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert cluster.stdout is not None
        address = cluster.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), f"the cluster did not start ({address!r})"
        spec = tmp_path / "spec.json"
        spec.write_text(json.dumps(SPEC))
        space = tmp_path / "space.json"
        space.write_text(json.dumps(RANDOM_SPACE))
        out = tmp_path / "ray"
        args = [*("sweep", str(spec), "--data", str(data_csv), "--target", "y")]
        args += [*("--space", str(space), "--trials", "6", "--epochs", "600", "--out", str(out))]
        killed: list[int] = []
        killer = threading.Thread(target=_kill_one_ray_trial, args=(cluster.pid, killed))
        killer.start()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "microfw", *args, "--ray", address, "--quiet"],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
        finally:
            killer.join()
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(killed) == 1, "no Ray worker was caught running a trial"
        rows = json.loads((out / "trials.json").read_text())["trials"]
        assert [r["state"] for r in rows] == ["complete"] * 6  # the killed one was retried
        assert len({r["node"] for r in rows}) == 2  # both nodes trained trials
        local = run(
            SPEC,
            data_csv,
            RANDOM_SPACE,
            target="y",
            trials=6,
            epochs=600,
            out=tmp_path / "local",
            progress=None,
        )
        assert [r["value"] for r in rows] == pytest.approx([r["value"] for r in local.rows])
    finally:
        if cluster.stdin is not None:
            cluster.stdin.close()  # the helper stops its nodes
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait(timeout=10)
        _kill_session(cluster.pid)  # whatever of it is left (Ray gives workers their own groups)
        shutil.rmtree(temp, ignore_errors=True)


def _kill_one_ray_trial(session: int, killed: list[int]) -> None:
    """SIGKILL the first Ray worker process (of the cluster started in session ``session``)
    seen training a trial, by its pid."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes()
                group = os.getsid(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
            if group == session and title.startswith(b"ray::ray_trial"):
                time.sleep(0.2)
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
                return
        time.sleep(0.05)


def _kill_session(session: int) -> None:
    """SIGKILL every process left in session ``session`` (the cluster's), by pid."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == session:
                    os.kill(int(entry.name), signal.SIGKILL)
