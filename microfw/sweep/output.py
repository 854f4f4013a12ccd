"""What a sweep writes: ``trials.csv``, ``trials.json`` and the ``--plot`` PNG, atomically."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from microfw._files import atomic_write

TRIALS_CSV = "trials.csv"
TRIALS_JSON = "trials.json"
PLOT_PNG = "sweep.png"
BEST_MODEL = "best.microfw"
STUDY_DB = "study.db"


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (a diverged trial's loss) replaced by ``None``:
    ``trials.json`` stays strict JSON, as ``trials.csv`` leaves such a cell empty."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_tables(
    out: Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]
) -> list[Path]:
    """``trials.json`` (``summary`` and every row) and ``trials.csv`` (one row per trial:
    number, state, each parameter, value, each final metric, duration, epochs, seed, error)."""
    document = {**summary, "trials": [dict(r) for r in rows]}
    text = json.dumps(_finite(document), indent=2, allow_nan=False) + "\n"
    # Rewritten after every trial and derived from the study: not worth an fsync each time.
    atomic_write(out / TRIALS_JSON, text.encode("utf-8"), sync=False)

    params = list(dict.fromkeys(k for r in rows for k in r["params"]))
    metrics = list(dict.fromkeys(k for r in rows for k in r["metrics"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["number", "state", *params, "value", *metrics, "duration", "epochs", "seed", "error"]
    )
    for r in rows:
        writer.writerow(
            [
                r["number"],
                r["state"],
                *(_cell(r["params"].get(p)) for p in params),
                _cell(r["value"]),
                *(_cell(r["metrics"].get(m)) for m in metrics),
                _cell(r["duration"]),
                _cell(r["epochs"]),
                _cell(r["seed"]),
                r["error"] or "",
            ]
        )
    atomic_write(out / TRIALS_CSV, buffer.getvalue().encode("utf-8"), sync=False)
    return [out / TRIALS_CSV, out / TRIALS_JSON]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def plot_sweep(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    direction: str,
    log_params: Sequence[str] = (),
) -> Path:
    """The objective of every trial by number (with the best so far), and the objective
    against each swept parameter, as one PNG."""
    from microfw.plots import figure_class

    done = [r for r in rows if r["value"] is not None]
    params = list(dict.fromkeys(k for r in rows for k in r["params"]))
    panels = 1 + len(params)
    cols = min(panels, 3)
    nrows = (panels + cols - 1) // cols
    fig = figure_class()(figsize=(4.2 * cols, 3.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    colours = {"complete": "tab:blue", "pruned": "tab:orange"}

    ax = axes[0]
    for state, colour in colours.items():
        pts = [(r["number"], r["value"]) for r in done if r["state"] == state]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=18, color=colour, label=state)
    complete = sorted((r["number"], r["value"]) for r in done if r["state"] == "complete")
    if complete:
        best, line = None, []
        pick = min if direction == "minimize" else max
        for number, value in complete:
            best = value if best is None else pick(best, value)
            line.append((number, best))
        ax.step(*zip(*line, strict=True), where="post", color="black", lw=1, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial ({direction})")
    ax.legend(fontsize="small")

    for ax, name in zip(axes[1:], params, strict=False):
        points = [
            (r["params"][name], r["value"], r["state"])
            for r in done
            if r["params"].get(name) is not None
        ]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x, _, _ in points)
        labels: list[str] = []
        if not numeric:
            labels = list(dict.fromkeys(json.dumps(x, sort_keys=True) for x, _, _ in points))
        for state, colour in colours.items():
            xs = [
                x if numeric else labels.index(json.dumps(x, sort_keys=True))
                for x, _, s in points
                if s == state
            ]
            ys = [v for _, v, s in points if s == state]
            if xs:
                ax.scatter(xs, ys, s=18, color=colour)
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, fontsize="small")
        elif name in log_params:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    atomic_write(path, buffer.getvalue())
    return path
