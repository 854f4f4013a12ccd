"""``microfw sweep``: the command-line face of :func:`microfw.sweep.run`."""

from __future__ import annotations

import argparse
import sys

from microfw.sweep.runner import run


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the sweep the parsed ``microfw sweep`` arguments describe; print its summary."""
    result = run(
        args.spec,
        args.data,
        args.space,
        target=args.target,
        trials=args.trials,
        jobs=args.jobs,
        out=args.out,
        resume=args.resume,
        ray=args.ray,
        epochs=args.epochs,
        seed=args.seed,
        plot=args.plot,
        progress=None if args.quiet else sys.stderr,
    )
    counts = result.counts()
    print(
        f"{len(result.rows)} trials in {result.wall_time:.1f} s: "
        f"{counts.get('complete', 0)} complete, {counts.get('pruned', 0)} pruned, "
        f"{counts.get('fail', 0)} failed"
    )
    if result.best is None:
        print("no trial completed: no best model")
    else:
        best = result.best
        params = ", ".join(f"{k}={v!r}" for k, v in best["params"].items())
        print(f"best: trial {best['number']}, {result.metric} {best['value']:.6g} ({params})")
    print("wrote " + ", ".join(str(p) for p in result.files))
    return 0 if result.best is not None else 1
