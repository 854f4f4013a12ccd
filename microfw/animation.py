"""Training as an animated GIF: the decision boundary every few epochs (the ``plot`` extra).

:class:`TrainingAnimation` is a callback: it evaluates the model over a grid of the plane of
the two input features every few epochs, and writes the frames, each titled with its epoch
and loss, with matplotlib's own Pillow writer (Pillow comes with matplotlib)::

    model.fit(X, y, callbacks=[mf.TrainingAnimation(X, y, "training.gif")])

``microfw fit SPEC ... --animate`` does the same into the run's directory.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from microfw._extras import require
from microfw.core.interfaces import Array
from microfw.errors import PlotError
from microfw.plots import BoundaryGrid, draw_points, figure_class
from microfw.train.callbacks import Callback, Logs


class TrainingAnimation(Callback):
    """Record the decision boundary while training and write it as a GIF.

    Args:
        X: ``(n_samples, 2)``: the data drawn in every frame (e.g. the training inputs).
        y: its labels ``(n_samples,)`` or one-hot ``(n_samples, k)``.
        path: the GIF to write.
        frames: about how many frames to record (the first, every few epochs, the last).
        every: record every ``every`` epochs instead (default: from ``frames``).
        fps: frames per second of the GIF.
        resolution: grid points per axis.
        transform: maps grid points ``(m, 2)`` to model inputs (see
            :func:`microfw.plots.plot_decision_boundary`).
        axis_labels: the names of the two features.
        title: what the frames show (e.g. the run's name), before the epoch and loss.
        write_at_end: write the GIF when training ends; else call :meth:`save`.
    """

    def __init__(
        self,
        X: Any,
        y: Any,
        path: str | os.PathLike[str],
        *,
        frames: int = 50,
        every: int | None = None,
        fps: int = 8,
        resolution: int = 100,
        transform: Callable[[Array], Array] | None = None,
        axis_labels: tuple[str, str] = ("x1", "x2"),
        title: str = "",
        write_at_end: bool = True,
    ) -> None:
        if frames < 1 or (every is not None and every < 1) or fps < 1 or resolution < 2:
            raise ValueError(
                f"frames, every and fps must be >= 1 and resolution >= 2, got frames={frames}, "
                f"every={every}, fps={fps}, resolution={resolution}"
            )
        figure_class()  # matplotlib is needed: fail now, not after training
        self.grid = BoundaryGrid(np.asarray(X, dtype=float), resolution, transform)
        self.y = np.asarray(y)
        if self.y.shape[0] != self.grid.X.shape[0]:
            raise ValueError(f"X has {self.grid.X.shape[0]} rows but y has {self.y.shape[0]}")
        self.path = Path(path)
        self.frames, self.every, self.fps = frames, every, fps
        self.axis_labels, self.title = axis_labels, title
        self.write_at_end = write_at_end
        self.recorded: list[tuple[int, float | None, Array]] = []
        """``(epoch, loss, grid outputs)`` of each frame; epoch -1 is before training."""

    def on_train_begin(self, logs: Logs) -> None:
        self.recorded = []
        self.threshold = self.model.loss.decision_threshold()
        self.step = self.every or max(1, math.ceil(int(logs["epochs"]) / self.frames))
        self._record(-1, None)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self.last = (epoch, logs.get("loss"))
        if (epoch + 1) % self.step == 0:
            self._record(epoch, logs.get("loss"))

    def on_train_end(self, logs: Logs) -> None:
        last = getattr(self, "last", None)
        if last is not None and self.recorded[-1][0] != last[0]:
            self._record(*last)
        if self.write_at_end:
            self.save()

    def _record(self, epoch: int, loss: float | None) -> None:
        scores = self.grid.scores(self.model).astype(np.float32)
        self.recorded.append((epoch, loss, scores))

    def save(self) -> Path:
        """Write the recorded frames to :attr:`path` atomically; returns the path.

        The points, axes and legend are drawn once; each frame replaces the shading (an
        image, faster to draw than filled contours), the boundary line and the title.
        """
        if not self.recorded:
            raise PlotError("no frames recorded: train with this callback first")
        PillowWriter = require("matplotlib.animation", "plot", "the training GIF").PillowWriter

        fig = figure_class()(figsize=(6, 5))
        ax = fig.subplots()
        grid = self.grid
        extent = (grid.gx[0, 0], grid.gx[0, -1], grid.gy[0, 0], grid.gy[-1, 0])
        images = [self._image(scores) for _, _, scores in self.recorded]
        multiclass = self.recorded[0][2].shape[1] > 1
        if multiclass:
            style: dict[str, Any] = {"cmap": "tab10", "vmin": -0.5, "vmax": 9.5, "alpha": 0.4}
        else:
            span = max(float(np.max(np.abs(image - self.threshold))) for image in images)
            probabilities = self.threshold == 0.5 and all(
                image.min() >= 0.0 and image.max() <= 1.0 for image in images
            )
            lo, hi = (0.0, 1.0) if probabilities else (self.threshold - span, self.threshold + span)
            style = {"cmap": "RdYlGn", "vmin": lo, "vmax": hi, "alpha": 0.6}
        shade = ax.imshow(
            images[0],
            extent=extent,
            origin="lower",
            aspect="auto",
            interpolation="bilinear",
            **style,
        )
        draw_points(ax, grid.X, self.y)
        ax.set_xlabel(self.axis_labels[0])
        ax.set_ylabel(self.axis_labels[1])
        ax.set_title(self._title(*self.recorded[0][:2]))
        fig.tight_layout()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Not _files.atomic_write: the Pillow writer saves to a path and picks the format
        # from its suffix, so the temporary file ends in .gif.
        fd, tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".gif"
        )
        os.close(fd)
        try:
            writer = PillowWriter(fps=self.fps)
            with writer.saving(fig, tmp, dpi=80):
                line = None
                for (epoch, loss, _), image in zip(self.recorded, images, strict=True):
                    shade.set_data(image)
                    if line is not None:
                        line.remove()
                        line = None
                    if not multiclass and image.min() < self.threshold < image.max():
                        line = ax.contour(
                            grid.gx, grid.gy, image, levels=[self.threshold], colors="k"
                        )
                    ax.set_title(self._title(epoch, loss))
                    writer.grab_frame()
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return self.path

    def _image(self, scores: Array) -> Array:
        """A frame's grid outputs as an image: the score, or the predicted class."""
        shape = self.grid.gx.shape
        if scores.shape[1] == 1:
            image: Array = scores[:, 0].reshape(shape)
        else:
            image = scores.argmax(axis=1).reshape(shape).astype(np.float32)
        return image

    def _title(self, epoch: int, loss: float | None) -> str:
        when = "before training" if epoch < 0 else f"epoch {epoch + 1}"
        loss_text = "" if loss is None else f", loss {loss:.4g}"
        head = f"{self.title}\n" if self.title else ""
        return f"{head}{when}{loss_text}"
