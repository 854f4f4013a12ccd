"""Learning curves and decision boundaries as PNG files (the ``plot`` extra: matplotlib).

matplotlib is imported on first use. Figures are drawn with :class:`matplotlib.figure.Figure`
directly, never through ``pyplot``: rendering is headless (Agg), works without a display, and
leaves the caller's pyplot state and backend alone. Only current matplotlib API is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from microfw._extras import require
from microfw.core.interfaces import Array
from microfw.errors import PlotError


class Predictor(Protocol):
    """Anything with ``predict(X) -> (n_samples, n_outputs)``, such as a ``Sequential``."""

    def predict(self, X: Array) -> Array: ...


def figure_class() -> Any:
    """:class:`matplotlib.figure.Figure`; :class:`~microfw.MissingExtraError` without matplotlib."""
    return require("matplotlib.figure", "plot", "plotting").Figure


def plot_history(history: Any, path: str | Path, title: str = "") -> Path:
    """Draw the per-epoch curves of a training history into a PNG at ``path``.

    Args:
        history: a :class:`~microfw.History` (its ``.history``) or a mapping of metric name to
            one value per epoch, e.g. ``{"loss": [...], "val_loss": [...], "accuracy": [...]}``.
            Losses share the left panel; other metrics (accuracy...) get a right panel.
        path: the PNG file to write.
        title: what the figure shows (e.g. the run's name), above the panels' own titles.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    curves: Mapping[str, Sequence[float]] = getattr(history, "history", history)
    curves = {name: values for name, values in curves.items() if len(values)}
    if "loss" not in curves:
        raise PlotError(f"history has no 'loss' curve (curves: {', '.join(curves) or 'none'})")
    losses = {k: v for k, v in curves.items() if k == "loss" or k.endswith("_loss")}
    metrics = {k: v for k, v in curves.items() if k not in losses}
    fig = figure_class()(figsize=(11 if metrics else 6, 4))
    axes = fig.subplots(1, 2 if metrics else 1, squeeze=False)
    for ax, group, ylabel in zip(axes[0], (losses, metrics), ("loss", "metric"), strict=False):
        for name, values in group.items():
            ax.plot(np.arange(len(values)), values, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if all(min(v) > 0 for v in losses.values()):
        axes[0][0].set_yscale("log")
    axes[0][0].set_title("Loss per epoch")
    if metrics:
        axes[0][1].set_title(
            ("Accuracy" if all("acc" in k for k in metrics) else "Metrics") + " per epoch"
        )
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_decision_boundary(
    model: Predictor,
    X: Array,
    y: Array,
    path: str | Path,
    transform: Callable[[Array], Array] | None = None,
    *,
    resolution: int = 300,
    threshold: float = 0.5,
    title: str = "Decision boundary",
    axis_labels: tuple[str, str] = ("x1", "x2"),
) -> Path:
    """Shade the model's prediction over the plane of two features, with the data on top.

    A single-output model is drawn as shading with the contour at ``threshold``: from 0 to 1
    for probabilities (``threshold`` 0.5), else around ``threshold`` (e.g. logits, 0: see
    :meth:`~microfw.Loss.decision_threshold`); a model with ``k > 1`` outputs as the region of
    each predicted class (argmax).

    Args:
        model: anything with ``predict(X) -> (n, n_outputs)``.
        X: ``(n_samples, 2)``: the two features that span the plane.
        y: labels ``(n_samples,)``, or one-hot ``(n_samples, k)``, to colour the points.
        path: the PNG file to write.
        transform: maps grid points ``(m, 2)`` to model inputs, as was done to the data, e.g.
            a feature cross ``lambda g: np.c_[g, g[:, 0] * g[:, 1]]``. Default: identity.
        resolution: grid points per axis.
        threshold: the single output at and above which a point is class 1.
        title: the figure's title.
        axis_labels: the names of the two features.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    grid = BoundaryGrid(X, resolution, transform)
    fig = figure_class()(figsize=(6.4, 5))
    ax = fig.subplots()
    draw_boundary(fig, ax, grid, grid.scores(model), y, threshold=threshold, colorbar=True)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    return _save(fig, path)


class BoundaryGrid:
    """The plane of two features around ``X`` ``(n_samples, 2)``, as a ``resolution`` squared
    grid, with the model inputs for its points (``transform`` maps them, default identity)."""

    def __init__(
        self,
        X: Array,
        resolution: int = 300,
        transform: Callable[[Array], Array] | None = None,
    ) -> None:
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != 2:
            raise PlotError(f"a decision boundary needs 2 features, got X of shape {X.shape}")
        self.X = X
        lo, hi = X.min(axis=0), X.max(axis=0)
        margin = np.maximum((hi - lo) * 0.1, 0.25)
        xs = np.linspace(lo[0] - margin[0], hi[0] + margin[0], resolution)
        ys = np.linspace(lo[1] - margin[1], hi[1] + margin[1], resolution)
        self.gx, self.gy = np.meshgrid(xs, ys)
        points = np.c_[self.gx.ravel(), self.gy.ravel()]
        self.inputs = transform(points) if transform else points

    def scores(self, model: Predictor) -> Array:
        """The model's outputs over the grid, ``(resolution**2, n_outputs)``."""
        out = np.asarray(model.predict(self.inputs))
        return out.reshape(self.gx.size, -1)


# Class markers that stand out on any shading: shape, fill and edge all differ per class.
_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*", "p", "h")
_TWO_CLASSES = (("white", "black"), ("black", "white"))


def draw_boundary(
    fig: Any,
    ax: Any,
    grid: BoundaryGrid,
    out: Array,
    y: Array,
    *,
    threshold: float = 0.5,
    colorbar: bool = False,
) -> None:
    """Draw the outputs ``out`` over ``grid`` (see :func:`plot_decision_boundary`) and the
    data points, each class with its own marker, and a legend of the classes."""
    gx, gy, X = grid.gx, grid.gy, grid.X
    if out.shape[1] == 1:
        score = out[:, 0].reshape(gx.shape)
        if threshold == 0.5 and score.min() >= 0.0 and score.max() <= 1.0:  # probabilities
            levels, label = np.linspace(0, 1, 21), "P(y = 1)"
        else:  # scores such as logits: a scale centred on the threshold
            span = max(float(np.max(np.abs(score - threshold))), 1e-12)
            levels = np.linspace(threshold - span, threshold + span, 21)
            label = f"model output (class 1 at >= {threshold:g})"
        shade = ax.contourf(gx, gy, score, levels=levels, cmap="RdYlGn", alpha=0.6)
        if score.min() < threshold < score.max():
            ax.contour(gx, gy, score, levels=[threshold], colors="k", linewidths=1.5)
        if colorbar:
            fig.colorbar(shade, ax=ax, label=label)
    else:
        classes = out.argmax(axis=1).reshape(gx.shape)
        k = out.shape[1]
        ax.contourf(gx, gy, classes, levels=np.arange(k + 1) - 0.5, cmap="tab10", alpha=0.4)
    draw_points(ax, X, y)


def class_labels(y: Array) -> Array:
    """Labels ``(n_samples,)`` from labels, one column, or one-hot rows."""
    labels = np.asarray(y)
    if labels.ndim == 2:
        labels = labels[:, 0] if labels.shape[1] == 1 else labels.argmax(axis=1)
    return labels


def draw_points(ax: Any, X: Array, y: Array) -> None:
    """The data points ``X`` ``(n_samples, 2)``, each class with its own marker, fill and
    edge (white circles and black triangles for two classes), and a legend of the classes."""
    labels = class_labels(y)
    values = np.unique(labels)
    palette = _tab10()
    for i, value in enumerate(values):
        rows = labels == value
        if len(values) <= 2:
            face, edge = _TWO_CLASSES[i]
        else:
            face, edge = palette(int(value) % 10), "black"
        ax.scatter(
            X[rows, 0],
            X[rows, 1],
            marker=_MARKERS[i % len(_MARKERS)],
            c=[face],
            edgecolors=edge,
            linewidths=0.8,
            s=32,
            label=f"class {value:g}",
        )
    ax.legend(loc="best", framealpha=0.85, fontsize="small")


def _tab10() -> Any:
    return require("matplotlib", "plot", "plotting").colormaps["tab10"]


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=100, format="png")
    except OSError as exc:
        raise PlotError(f"{path}: cannot write the plot ({exc})") from None
    return path
