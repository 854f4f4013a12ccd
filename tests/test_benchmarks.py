"""The benchmark command runs end to end and reports what it measured.

Its speed is never asserted here (timed tests flake on a shared machine): a run whose
target is missed exits 1, which these tests accept.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

from subprocesses import run_module

ROOT = Path(__file__).resolve().parents[1]


def run_benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("benchmarks", *args, cwd=ROOT, timeout=600)


def test_quick_xor_run_prints_every_row_target_and_the_memory_line() -> None:
    result = run_benchmarks("--quick", "--only", "xor")
    assert result.returncode in (0, 1), result.stderr
    out = result.stdout
    assert "BLAS: " in out and "threads=1" in out
    assert "compiled kernels on" in out  # the test command installs the fast extra
    assert "xor 2-3-1 (float64, batch full)" in out
    for contestant in ("microfw", "numpy lean", "numpy seeds", "GEMM floor"):
        assert f"\n  {contestant} " in out
    assert "microfw, once per fit outside its epochs" in out
    assert "target microfw/numpy lean <= 1.150: " in out
    assert "target microfw/torch eager <= 0.333: " in out  # measured, or skipped without torch
    if importlib.util.find_spec("torch") is None:  # the bench extra leaves PyTorch out
        assert "torch not installed: PyTorch rows skipped" in out
        assert "target microfw/torch eager <= 0.333: skipped (torch eager not available)" in out
    assert "memory: peak " in out and "growth " in out
    assert out.strip().splitlines()[-1] == verdict_of(out, result.returncode)


def verdict_of(out: str, returncode: int) -> str:
    """The last line a run must print: as many targets missed as rows say MISSED (any number:
    a busy machine may miss them all), and exit 1 exactly when one was."""
    missed = out.count(" MISSED")
    assert returncode == (1 if missed else 0), out
    return f"{missed} target(s) missed" if missed else "all targets met"


def test_an_unknown_workload_is_refused() -> None:
    result = run_benchmarks("--only", "xor,cifar")
    assert result.returncode == 2
    assert "--only: unknown ['cifar']" in result.stderr
    assert "mnist" in result.stderr  # the workloads that exist


def test_quick_blas_run_compares_auto_with_pinned_counts_idle_and_busy() -> None:
    result = run_benchmarks_module("benchmarks.blas", "--quick", "--only", "moons")
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    rows = [line.split() for line in lines if line.strip().startswith("moons")]
    assert [row[2] for row in rows] == ["idle", "busy"]
    for row in rows:
        assert "met" in row or "MISSED" in row  # auto / best pinned, with the verdict
    assert lines[-1].startswith(verdict_of(result.stdout, result.returncode))


def run_benchmarks_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module(module, *args, cwd=ROOT, timeout=600)


def test_the_batch_norm_dropout_row_compares_with_the_same_network_without_them() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import run, workloads
    finally:
        sys.path.remove(str(ROOT))
    wl = workloads.mnist_regularized(128, n=256)
    types = [layer if isinstance(layer, str) else layer["type"] for layer in wl.spec()["layers"]]
    assert types == [
        *("linear", "relu", "batch_norm", "dropout"),
        *("linear", "relu", "batch_norm", "dropout"),
        *("linear", "softmax"),
    ]
    assert wl.spec(after_hidden=False) == workloads.mnist_shaped(128, n=256).spec()
    entrants, _ = run.contestants(wl)
    names = [c.name for c in entrants]
    assert names[:2] == ["microfw", "microfw plain"]
    assert set(names) <= {"microfw", "microfw plain", "torch eager"}
    assert all(c.run(1) > 0 for c in entrants[:2])
    assert run.TARGETS["mnist128-bn-dropout"] == [
        ("microfw", "torch eager", 1 / 1.3),
        ("microfw", "microfw plain", 1.3),
    ]
