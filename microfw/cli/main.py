"""The ``microfw`` command: train, evaluate and predict from JSON specs; inspect plugins.

Every user error (a bad spec, a bad data file, a missing model, an unknown plugin) ends with
one line on stderr, ``microfw: error: ...``, and exit status 1; never a traceback. Run
``microfw COMMAND --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import microfw as mf
from microfw.core.interfaces import INTERFACES, Initializer, Layer, parameter_interfaces, to_ref
from microfw.data import Dataset, check_features, load_data, targets_for
from microfw.errors import MicrofwError, SpecError

MODEL_FILE = "model.microfw"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
CURVE_PNG = "learning_curve.png"
BOUNDARY_PNG = "decision_boundary.png"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _warn_one_line
        try:
            return int(args.run(args))
        except (MicrofwError, ValueError, LookupError, OSError) as exc:
            print(f"microfw: error: {one_line(exc)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("microfw: interrupted", file=sys.stderr)
            return 130


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
    p.add_argument("spec", metavar="SPEC", help="the JSON spec")
    data_args(p, "required for CSV")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="output directory (default: runs/<spec name>)"
    )
    p.add_argument("--plot", action="store_true", help="also write PNG plots (extra 'plot')")
    p.add_argument("--epochs", type=int, metavar="N", help="override training.epochs")
    p.add_argument("--seed", type=int, metavar="N", help="override the spec's seed")
    p.add_argument(
        "--blas-threads",
        type=int,
        metavar="N",
        help="BLAS threads while training (1 on a shared machine; extra 'fast')",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
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
    return parser


# -- fit, evaluate, predict -----------------------------------------------------------------


def cmd_fit(args: argparse.Namespace) -> int:
    if args.plot:
        from microfw import plots

        plots.figure_class()  # fail before training, not after, if matplotlib is missing
    model = mf.build(args.spec)
    if args.seed is not None:  # the seed draws the initial weights: built again with it
        model = mf.build({**model.to_spec().to_dict(), "seed": args.seed})
    overrides = {"epochs": args.epochs, "blas_threads": args.blas_threads}
    # Part of the model's training settings, so the saved spec says how it was trained.
    model.training = model.training.updated(
        **{key: value for key, value in overrides.items() if value is not None}
    )
    data = load_data(args.data, args.target)
    check_features(data, model.input_dim)
    y = targets_for(data, model.output_dim, model.loss)
    out = args.out or Path("runs") / Path(args.spec).stem
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    # A diverging run ends in a TrainingError naming the epoch; numpy's overflow warnings on
    # the way there would only bury that one line.
    with np.errstate(all="ignore"):
        callbacks = progress_callbacks(model.training.epochs, args.quiet)
        history = model.fit(data.X, y, callbacks=callbacks)
    seconds = time.perf_counter() - start
    metrics = model.evaluate(data.X, y)
    print(f"trained {len(history.epoch)} epochs on {len(y)} samples in {seconds:.2f} s")
    print(f"final {format_metrics(metrics)}")

    written = [out / MODEL_FILE, out / HISTORY_JSON, out / HISTORY_CSV]
    model.save(written[0])
    write_history(history, written[1], written[2])
    if args.plot:
        written += write_plots(model, data, history, out)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def progress_callbacks(epochs: int, quiet: bool) -> list[mf.Callback]:
    """A progress bar if ``tqdm`` is installed, else the seeds' ``Cost at epoch#N`` lines."""
    if quiet:
        return []
    try:
        return [mf.ProgressBar(desc="fit", file=sys.stderr)]
    except ImportError:
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


def write_plots(model: mf.Sequential, data: Dataset, history: mf.History, out: Path) -> list[Path]:
    """The learning curve and, for 2 input features, the decision boundary."""
    from microfw import plots

    paths = [plots.plot_history(history, out / CURVE_PNG)]
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
                axis_labels=(x1, x2),
            )
        )
    return paths


def load_model_and_data(
    args: argparse.Namespace, *, need_target: bool
) -> tuple[mf.Sequential, Dataset]:
    model = mf.load(_existing(args.model, "model file"))
    data = load_data(args.data, args.target, need_target=need_target)
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
    rows = [("#", "layer", "output", "params", "init")]
    width = model.input_dim
    for i, layer in enumerate(model.layers):
        width = layer.output_dim(width)
        count = model.count_parameters(i)
        rows.append((str(i), _describe(layer), str(width), str(count), _initializers(layer)))
    print(f"{args.spec}: valid")
    print(f"input: {model.input_dim} feature(s)")
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(w) if c in (0, 2, 3) else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
    total = model.count_parameters()
    print(f"loss: {_plugin_text(model.loss)}   optimizer: {_plugin_text(model.optimizer)}")
    print(
        f"parameters: {total}   epochs: {model.training.epochs}   "
        f"batch_size: {model.training.batch_size or 'full'}   seed: {model.seed}   "
        f"rng: {model.rng}"
    )
    fused = ", ".join(f"{rule} ({where})" for where, rule in model.fusions)
    print(f"fusions: {fused or 'none'}")
    for warning in advice:
        print(f"warning: {warning}")
    return 0


def _plugin_text(value: Any) -> str:
    """A plugin (instance or ``{"type": ...}`` data) as ``name`` or ``name(key=value, ...)``."""
    ref = to_ref(value)
    if not (isinstance(ref, dict) and "type" in ref):
        return repr(ref)
    params = {k: v for k, v in ref.items() if k != "type"}
    if not params:
        return str(ref["type"])
    return f"{ref['type']}(" + ", ".join(f"{k}={_plugin_text(v)}" for k, v in params.items()) + ")"


def _describe(layer: Layer) -> str:
    """The layer's name and its plain (non-plugin) parameters, e.g. ``linear(units=3)``."""
    nested = parameter_interfaces(type(layer))
    params = {k: v for k, v in layer.get_params().items() if k not in nested}
    if not params:
        return layer.name
    return f"{layer.name}(" + ", ".join(f"{k}={v!r}" for k, v in params.items()) + ")"


def _initializers(layer: Layer) -> str:
    """The layer's initializer parameters, e.g. ``init=xavier, bias_init=zeros``."""
    params = layer.get_params()
    names = [
        name
        for name, interface in parameter_interfaces(type(layer)).items()
        if interface is Initializer
    ]
    return ", ".join(f"{name}={_plugin_text(params[name])}" for name in names)


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
