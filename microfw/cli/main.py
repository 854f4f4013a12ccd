"""The ``microfw`` command: train, evaluate and predict from JSON specs; inspect plugins.

Every user error (a bad spec, a bad data file, a missing model, an unknown plugin) ends with
one line on stderr, ``microfw: error: ...``, and exit status 1; never a traceback. Run
``microfw COMMAND --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import microfw as mf
from microfw import io as mf_io
from microfw.columns import Columns, saved_columns
from microfw.core.interfaces import INTERFACES
from microfw.data import Dataset, check_features, load_data, match_columns, targets_for
from microfw.errors import MicrofwError, SpecError
from microfw.nn.summary import summary_text

MODEL_FILE = "model.microfw"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
CURVE_PNG = "learning_curve.png"
BOUNDARY_PNG = "decision_boundary.png"
ANIMATION_GIF = "training.gif"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _warn_one_line
        try:
            return int(args.run(args))
        except BrokenPipeError:  # the reader left (e.g. `| head`): stop quietly, as cat does
            _silence_stdout()
            return 141  # 128 + SIGPIPE
        except SpecError as exc:  # every problem on its own line, as `validate` prints them
            where = f" {exc.source}" if exc.source else ""
            print(
                f"microfw: error: invalid spec{where}: {len(exc.problems)} problem(s):",
                file=sys.stderr,
            )
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        except (MicrofwError, ValueError, LookupError, OSError) as exc:
            print(f"microfw: error: {one_line(exc)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("microfw: interrupted", file=sys.stderr)
            return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's captured stream)
        pass


def _warn_one_line(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    """Show a warning (e.g. a plugin package that failed to load) as one line on stderr."""
    print(f"microfw: warning: {message}", file=sys.stderr)


def one_line(exc: BaseException) -> str:
    """An exception as a single line: every problem of a spec error, joined with ``;``."""
    if isinstance(exc, SpecError):
        where = f" {exc.source}" if exc.source else ""
        return f"invalid spec{where}: " + "; ".join(str(p) for p in exc.problems)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microfw",
        description="Train and use neural networks described by JSON specs.",
    )
    parser.add_argument("--version", action="version", version=f"microfw {mf.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_args(p: argparse.ArgumentParser, need: str) -> None:
        p.add_argument(
            "--data",
            required=True,
            metavar="FILE",
            help="CSV with a header row, or .npz with arrays X and y",
        )
        p.add_argument(
            "--target",
            metavar="COLUMN",
            help=f"the CSV column holding the labels ({need}); for .npz an array other than y",
        )

    p = sub.add_parser("fit", help="train a model from a spec and save it")
    p.add_argument("spec", metavar="SPEC", nargs="?", help="the JSON spec (or --resume MODEL)")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="MODEL",
        help=f"continue training a saved model ({MODEL_FILE}) where it stopped (default "
        "--out: its directory)",
    )
    data_args(p, "required for CSV")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="output directory (default: runs/<spec name>)"
    )
    p.add_argument("--plot", action="store_true", help="also write PNG plots (extra 'plot')")
    p.add_argument("--epochs", type=int, metavar="N", help="override training.epochs")
    p.add_argument("--seed", type=int, metavar="N", help="override the spec's seed")
    p.add_argument(
        "--blas-threads",
        type=_blas_threads,
        metavar="N",
        help="BLAS threads while training: a count or 'auto' (the spec's setting, by default "
        "auto: one thread for small batches, else the fastest count as timed while training)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="draw a progress bar (extra 'progress'); default: only when stderr is a terminal, "
        "else print 'Cost at epoch#N' lines",
    )
    p.add_argument(
        "--animate",
        action="store_true",
        help=f"also write {ANIMATION_GIF}: the decision boundary during training (2 features; "
        "extra 'plot')",
    )
    p.set_defaults(run=cmd_fit)

    p = sub.add_parser("evaluate", help="loss and accuracy of a saved model on data")
    p.add_argument("model", metavar="MODEL", help=f"a saved model ({MODEL_FILE})")
    data_args(p, "required for CSV")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict", help="model outputs for data, as CSV")
    p.add_argument("model", metavar="MODEL", help=f"a saved model ({MODEL_FILE})")
    data_args(p, "excluded from the features if given")
    p.add_argument(
        "--output", type=Path, metavar="FILE", help="CSV file to write (default: standard output)"
    )
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("validate", help="check a spec; print its layers or every problem")
    p.add_argument("spec", metavar="SPEC", help="the JSON spec")
    p.add_argument(
        "--strict", action="store_true", help="treat the linter's warnings as errors (exit 1)"
    )
    p.set_defaults(run=cmd_validate)

    p = sub.add_parser("plugins", help="list every registered plugin with its package")
    p.set_defaults(run=cmd_plugins)

    p = sub.add_parser("schema", help="print the JSON Schema of specs for the installed plugins")
    p.set_defaults(run=cmd_schema)

    p = sub.add_parser("check", help="run the contract and gradient checks on plugins")
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="plugin names; KIND:NAME when ambiguous"
    )
    p.add_argument("--all", action="store_true", help="check every registered plugin")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("export", help="write a saved model as ONNX (extra 'onnx')")
    p.add_argument("model", metavar="MODEL", help=f"a saved model ({MODEL_FILE})")
    p.add_argument("out", type=Path, metavar="OUT", help="the ONNX file to write (OUT.onnx)")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("sweep", help="search spec fields with Optuna; here or on a Ray cluster")
    p.add_argument("spec", metavar="SPEC", help="the base JSON spec")
    data_args(p, "required for CSV")
    p.add_argument("--space", required=True, metavar="SPACE", help="the search space (JSON)")
    p.add_argument("--trials", type=int, metavar="N", help="finished trials wanted")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes")
    p.add_argument("--out", type=Path, metavar="DIR", help="default: sweeps/<spec name>")
    p.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    p.add_argument("--ray", metavar="ADDRESS", help="run trials on this Ray cluster")
    p.add_argument("--epochs", type=int, metavar="N", help="override training.epochs")
    p.add_argument("--seed", type=int, metavar="N", help="the sweep's seed")
    p.add_argument("--plot", action="store_true", help="also write sweep.png")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=cmd_sweep)
    return parser


def cmd_export(args: argparse.Namespace) -> int:
    """Load MODEL and write it as ONNX to OUT (input "X", output "Y"; see microfw.onnx)."""
    from microfw.onnx import export

    export(mf.load(args.model), args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from microfw.sweep.cli import cmd_sweep as run_sweep

    return run_sweep(args)


# -- fit, evaluate, predict -----------------------------------------------------------------


def cmd_fit(args: argparse.Namespace) -> int:
    if args.plot or args.animate:
        from microfw import plots

        plots.figure_class()  # fail before training, not after, if matplotlib is missing
    if (args.spec is None) == (args.resume is None):
        raise ValueError("fit needs a SPEC or --resume MODEL (one of the two)")
    if args.resume is not None:  # continues bit-identically to a run never interrupted
        if args.seed is not None:
            raise ValueError("--seed draws new initial weights: it cannot apply to --resume")
        model = mf.load(args.resume)
        default_out = args.resume.parent
        if not model.optimizer_state_loaded:
            print(
                f"microfw: warning: {args.resume} was saved without optimizer state (an older "
                "format): training goes on from its weights with the optimizer and schedule "
                "afresh",
                file=sys.stderr,
            )
    else:
        model = mf.build(args.spec)
        default_out = Path("runs") / Path(args.spec).stem
    if args.seed is not None:  # the seed draws the initial weights: built again with it
        model = mf.build({**model.to_spec().to_dict(), "seed": args.seed})
    overrides = {"epochs": args.epochs, "blas_threads": args.blas_threads}
    # Part of the model's training settings, so the saved spec says how it was trained.
    model.training = model.training.updated(
        **{key: value for key, value in overrides.items() if value is not None}
    )
    data = load_data(args.data, args.target, n_features=model.input_dim)
    check_features(data, model.input_dim)
    y = targets_for(data, model.output_dim, model.loss)
    out = args.out or default_out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory (give a directory)")
    animation = None
    if args.animate:
        from microfw.animation import TrainingAnimation

        if model.input_dim != 2:
            raise ValueError(
                f"--animate draws the decision boundary over 2 input features; the model has "
                f"{model.input_dim}"
            )
        animation = TrainingAnimation(
            data.X,
            y,
            out / ANIMATION_GIF,
            axis_labels=_pair(data.feature_names),
            title=Path(args.spec).stem if args.spec else out.name,
            write_at_end=False,  # into the run's directory once training went well
        )

    start = time.perf_counter()
    # A diverging run ends in a TrainingError naming the epoch; numpy's overflow warnings on
    # the way there would only bury that one line.
    with np.errstate(all="ignore"):
        callbacks = progress_callbacks(model.training.epochs, args.quiet, args.progress)
        if animation is not None:
            callbacks.append(animation)
        history = model.fit(data.X, y, callbacks=callbacks)
    seconds = time.perf_counter() - start
    trained_rows = int(history.params.get("samples", len(y)))
    print(f"trained {len(history.epoch)} epochs on {trained_rows} samples in {seconds:.2f} s")
    print(f"final {format_metrics(model.evaluate(data.X, y))}")
    if trained_rows < len(y):  # a validation split: what the held-out rows measured
        val = {k.removeprefix("val_"): v[-1] for k, v in history.history.items() if k[:4] == "val_"}
        held = len(y) - trained_rows
        print(f"validation ({held} of {len(y)} rows held out) {format_metrics(val)}")

    # Created only now: a run that fails (e.g. diverges) leaves no empty directory behind.
    out.mkdir(parents=True, exist_ok=True)
    written = [out / MODEL_FILE, out / HISTORY_JSON, out / HISTORY_CSV]
    columns = None if Path(args.data).suffix == ".npz" else Columns(data.feature_names, args.target)
    mf_io.save(model, written[0], columns=columns)
    write_history(history, written[1], written[2])
    if args.plot:
        written += write_plots(
            model, data, history, out, title=Path(args.spec).stem if args.spec else out.name
        )
    if animation is not None:
        written.append(animation.save())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _pair(names: Sequence[str]) -> tuple[str, str]:
    first, second = names
    return first, second


def _blas_threads(text: str) -> int | str:
    """``--blas-threads``: ``auto`` or a positive count."""
    if text == "auto":
        return text
    try:
        threads = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a count, got {text!r}") from None
    if threads < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a count >= 1, got {threads}")
    return threads


def progress_callbacks(epochs: int, quiet: bool, progress: bool | None = None) -> list[mf.Callback]:
    """What shows training going on: nothing when ``quiet``; a ``tqdm`` bar when ``progress``
    (by default: when stderr is a terminal and tqdm is installed); else the seeds'
    ``Cost at epoch#N`` lines, which read well in a log file or a pipe."""
    if quiet:
        return []
    if progress is None:
        progress = sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None
    if progress:
        try:
            return [mf.ProgressBar(desc="fit", file=sys.stderr)]
        except ImportError as exc:
            raise MicrofwError(str(exc)) from None
    return [mf.CostLogger(every=max(1, epochs // 50))]


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{key} {float(value):.6g}" for key, value in metrics.items())


def write_history(history: mf.History, json_path: Path, csv_path: Path) -> None:
    """The per-epoch metrics as JSON (with the training parameters) and as CSV."""
    curves = {key: [float(v) for v in values] for key, values in history.history.items()}
    document = {"epoch": history.epoch, "history": curves, "params": history.params}
    json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["epoch", *curves])
        for i, epoch in enumerate(history.epoch):
            writer.writerow([epoch, *(repr(values[i]) for values in curves.values())])


def write_plots(
    model: mf.Sequential, data: Dataset, history: mf.History, out: Path, title: str = ""
) -> list[Path]:
    """The learning curve and, for 2 input features, the decision boundary; ``title`` names
    the run (e.g. the spec's name) in the figures' titles."""
    from microfw import plots
    from microfw.nn.summary import architecture

    paths = [plots.plot_history(history, out / CURVE_PNG, title=title)]
    name = f"{title}: " if title else ""
    if model.input_dim == 2:
        assert data.y is not None
        x1, x2 = data.feature_names
        paths.append(
            plots.plot_decision_boundary(
                model,
                data.X,
                data.y,
                out / BOUNDARY_PNG,
                threshold=model.loss.decision_threshold(),
                title=f"{name}{architecture(model)}",
                axis_labels=(x1, x2),
            )
        )
    return paths


def load_model_and_data(
    args: argparse.Namespace, *, need_target: bool
) -> tuple[mf.Sequential, Dataset]:
    model = mf.load(_existing(args.model, "model file"))
    columns = saved_columns(args.model)
    by_name = columns is not None and Path(args.data).suffix != ".npz"  # a CSV: matched by name
    n_features = None if by_name else model.input_dim  # extra columns may be dropped by name
    data = load_data(args.data, args.target, need_target=need_target, n_features=n_features)
    if by_name and columns is not None:
        data = match_columns(data, columns.features, None if args.target else columns.target)
    check_features(data, model.input_dim)
    return model, data


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, data = load_model_and_data(args, need_target=True)
    metrics = model.evaluate(data.X, targets_for(data, model.output_dim, model.loss))
    metrics = {key: float(value) for key, value in metrics.items()}
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key}: {value!r}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model, data = load_model_and_data(args, need_target=False)
    outputs = model.predict(data.X)
    header = (
        ["output"] if outputs.shape[1] == 1 else [f"output_{i}" for i in range(outputs.shape[1])]
    )
    if args.output is None:
        _write_csv(sys.stdout, header, outputs)
    else:
        with args.output.open("w", newline="", encoding="utf-8") as f:
            _write_csv(f, header, outputs)
        print(f"wrote {len(outputs)} predictions to {args.output}")
    return 0


def _write_csv(stream: TextIO, header: list[str], rows: Any) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([repr(float(v)) for v in row] for row in rows)


def _existing(path: str, what: str) -> str:
    if not Path(path).is_file():
        raise FileNotFoundError(2, f"no such {what}", path)
    return path


# -- validate -------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", mf.SpecWarning)
            model = mf.build(_existing(args.spec, "spec file"))
    except SpecError as exc:
        print(f"{args.spec}: invalid, {len(exc.problems)} problem(s):")
        for problem in exc.problems:
            print(f"  {problem}")
        return 1
    advice = [w.message for w in caught if isinstance(w.message, mf.SpecWarning)]
    for w in caught:  # other warnings go on as usual
        if not isinstance(w.message, mf.SpecWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if advice and args.strict:
        print(f"{args.spec}: invalid (--strict), {len(advice)} warning(s):")
        for warning in advice:
            print(f"  {warning}")
        return 1
    print(f"{args.spec}: valid")
    print(summary_text(model))
    for warning in advice:
        print(f"warning: {warning}")
    return 0


# -- plugins, schema, check -----------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = mf.default_registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped plugins are listed below instead
        entries = registry.entries()
    name_width = max((len(e.name) for e in entries), default=0)
    source_width = max((len(str(e.provenance)) for e in entries), default=0)
    for kind in INTERFACES:
        of_kind = [e for e in entries if e.kind == kind]
        if not of_kind:
            continue
        print(f"{kind}:")
        for e in of_kind:
            doc = (e.cls.__doc__ or "").strip().splitlines()
            summary = doc[0] if doc else ""
            line = (
                f"  {e.name.ljust(name_width)}  {str(e.provenance).ljust(source_width)}  {summary}"
            )
            print(line.rstrip())
    if registry.problems:
        print("skipped (not usable):")
        for problem in registry.problems:
            print(f"  {problem}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(mf.json_schema(), indent=2))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from microfw import testing

    registry = mf.default_registry()
    if args.all and args.names:
        raise ValueError("give plugin names or --all, not both")
    targets: list[tuple[str | None, str]]
    if args.all:
        targets = [(e.kind, e.name) for e in registry.entries()]
    elif args.names:
        targets = [_split_kind(name) for name in args.names]
    else:
        raise ValueError("name the plugins to check (KIND:NAME when ambiguous), or use --all")
    failed = 0
    for kind, name in targets:
        label = f"{kind}:{name}" if kind else name
        try:
            checks = testing.check_plugin(name, registry=registry, kind=kind)
        except (AssertionError, LookupError) as exc:
            failed += 1
            print(f"FAIL  {label}: {one_line(exc)}")
            continue
        print(f"ok    {label}: {', '.join(checks)}")
    print(f"checked {len(targets)} plugin(s): {len(targets) - failed} ok, {failed} failed")
    return 1 if failed else 0


def _split_kind(text: str) -> tuple[str | None, str]:
    kind, sep, name = text.partition(":")
    if not sep:
        return None, text
    if kind not in INTERFACES:
        raise ValueError(
            f"unknown plugin kind {kind!r} in {text!r} (kinds: {', '.join(INTERFACES)})"
        )
    return kind, name
