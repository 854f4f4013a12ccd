"""A model as a table: one row per layer (type, output width, parameters, initializers).

The one implementation behind ``model.summary()``, a model's display in Jupyter
(``_repr_html_``) and ``microfw validate``.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from microfw.core.interfaces import Initializer, Layer, parameter_interfaces, to_ref

if TYPE_CHECKING:
    from microfw.nn.sequential import Sequential

HEADER = ("#", "layer", "output", "params", "init")
_RIGHT = (0, 2, 3)  # numeric columns, right-aligned


def layer_rows(model: Sequential) -> list[tuple[str, str, str, str, str]]:
    """One row per layer: index, description, output width, parameter count, initializers."""
    rows = []
    width = model.input_dim
    for i, layer in enumerate(model.layers):
        width = layer.output_dim(width)
        count = model.count_parameters(i)
        rows.append((str(i), describe_layer(layer), str(width), str(count), initializers(layer)))
    return rows


def footer(model: Sequential) -> list[str]:
    """The lines under the table: loss, optimizer and the training settings."""
    total = model.count_parameters()
    fused = ", ".join(f"{rule} ({where})" for where, rule in model.fusions)
    return [
        f"loss: {plugin_text(model.loss)}   optimizer: {plugin_text(model.optimizer)}",
        f"parameters: {total}   epochs: {model.training.epochs}   "
        f"batch_size: {model.training.batch_size or 'full'}   seed: {model.seed}   "
        f"rng: {model.rng}",
        f"fusions: {fused or 'none'}",
    ]


def summary_text(model: Sequential) -> str:
    """The table as plain text, as ``microfw validate`` prints it (no trailing newline)."""
    rows = [HEADER, *layer_rows(model)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(HEADER))]
    lines = [f"input: {model.input_dim} feature(s)"]
    for row in rows:
        cells = [
            cell.rjust(w) if c in _RIGHT else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join([*lines, *footer(model)])


def summary_html(model: Sequential) -> str:
    """The same table as HTML, for notebooks."""
    esc = html.escape

    def cells(row: tuple[str, ...], tag: str) -> str:
        return "".join(
            f'<{tag} style="text-align:{"right" if c in _RIGHT else "left"}">{esc(cell)}</{tag}>'
            for c, cell in enumerate(row)
        )

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in layer_rows(model))
    notes = "".join(f"<div><code>{esc(line)}</code></div>" for line in footer(model))
    return (
        f"<div><b>microfw.Sequential</b>, input: {model.input_dim} feature(s)"
        f"<table><thead><tr>{cells(HEADER, 'th')}</tr></thead><tbody>{body}</tbody></table>"
        f"{notes}</div>"
    )


def architecture(model: Sequential) -> str:
    """A short one-line description, e.g. ``2-25-1 linear/relu/linear/sigmoid, loss bce``."""
    widths = [model.input_dim]
    for i, layer in enumerate(model.layers):
        if model.count_parameters(i):
            widths.append(layer.output_dim(widths[-1]))
    names = "/".join(layer.name for layer in model.layers)
    return f"{'-'.join(map(str, widths))} {names}, loss {model.loss.name}"


def plugin_text(value: Any) -> str:
    """A plugin (instance or ``{"type": ...}`` data) as ``name`` or ``name(key=value, ...)``."""
    ref = to_ref(value)
    if not (isinstance(ref, dict) and "type" in ref):
        return repr(ref)
    params = {k: v for k, v in ref.items() if k != "type"}
    if not params:
        return str(ref["type"])
    return f"{ref['type']}(" + ", ".join(f"{k}={plugin_text(v)}" for k, v in params.items()) + ")"


def describe_layer(layer: Layer) -> str:
    """The layer's name and its plain (non-plugin) parameters, e.g. ``linear(units=3)``."""
    nested = parameter_interfaces(type(layer))
    params = {k: v for k, v in layer.get_params().items() if k not in nested}
    if not params:
        return layer.name
    return f"{layer.name}(" + ", ".join(f"{k}={v!r}" for k, v in params.items()) + ")"


def initializers(layer: Layer) -> str:
    """The layer's initializer parameters, e.g. ``init=xavier, bias_init=zeros``."""
    params = layer.get_params()
    names = [
        name
        for name, interface in parameter_interfaces(type(layer)).items()
        if interface is Initializer
    ]
    return ", ".join(f"{name}={plugin_text(params[name])}" for name in names)
