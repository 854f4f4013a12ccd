"""Pictures worth looking at (issue 12, items 11 and 12): points that stand out with a
legend and titles on every panel; a real GIF of training, from Python and ``fit --animate``."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageSequence

import microfw as mf
from microfw import plots
from microfw.animation import TrainingAnimation
from microfw.cli.main import main
from microfw.data import load_data

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MOONS = EXAMPLES / "moons"


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every figure the plot functions save, kept for inspection."""
    saved: list[Any] = []
    original = plots._save

    def keep(fig: Any, path: str | Path) -> Path:
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def moons_model(epochs: int = 0) -> tuple[mf.Sequential, np.ndarray, np.ndarray]:
    data = load_data(MOONS / "train.csv", "y")
    model = mf.build(MOONS / "moons.json")
    if epochs:
        model.fit(data.X, data.y, epochs=epochs)
    assert data.y is not None
    return model, data.X, data.y


def test_the_data_points_stand_out_with_a_legend(tmp_path: Path, figures: list[Any]) -> None:
    model, X, y = moons_model(epochs=50)
    plots.plot_decision_boundary(model, X, y, tmp_path / "b.png", title="moons: 2-25-1")
    ax = figures[0].axes[0]
    assert ax.get_title() == "moons: 2-25-1"
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["class 0", "class 1"]
    points = [c for c in ax.collections if c.get_label().startswith("class")]
    assert [len(c.get_offsets()) for c in points] == [int((y == 0).sum()), int((y == 1).sum())]
    faces = [tuple(c.get_facecolor()[0]) for c in points]
    edges = [tuple(c.get_edgecolor()[0]) for c in points]
    assert faces[0] != faces[1] and edges[0] != edges[1]  # and unlike the red/green shading
    assert {faces[0][:3], faces[1][:3]} == {(1.0, 1.0, 1.0), (0.0, 0.0, 0.0)}
    paths = [c.get_paths()[0].vertices.shape for c in points]
    assert paths[0] != paths[1]  # a marker per class (circle, triangle)


def test_every_learning_curve_panel_has_a_title(tmp_path: Path, figures: list[Any]) -> None:
    curves = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "accuracy": [0.5, 0.9]}
    plots.plot_history(curves, tmp_path / "c.png", title="xor")
    fig = figures[0]
    assert [ax.get_title() for ax in fig.axes] == ["Loss per epoch", "Accuracy per epoch"]
    assert fig._suptitle.get_text() == "xor"


def gif_frames(path: Path) -> list[np.ndarray]:
    assert path.read_bytes()[:6] in (b"GIF87a", b"GIF89a")
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


def test_the_callback_renders_a_gif_of_training(tmp_path: Path) -> None:
    _, X, y = moons_model()
    model = mf.Sequential(
        [
            {"type": "linear", "units": 8, "activation": "tanh"},
            {"type": "linear", "units": 1, "activation": "sigmoid"},
        ],
        input_dim=2,
        loss="bce",
        optimizer={"type": "sgd", "lr": 1.0},
        seed=0,
    )
    path = tmp_path / "out" / "moons.gif"
    animation = TrainingAnimation(X, y, path, frames=4, resolution=40, fps=5)
    model.fit(X, y, epochs=400, callbacks=[animation])
    # before training, then after epochs 100, 200, 300 and 400
    assert [epoch for epoch, _, _ in animation.recorded] == [-1, 99, 199, 299, 399]
    assert animation.recorded[0][1] is None and animation.recorded[-1][1] is not None
    frames = gif_frames(path)
    assert len(frames) == 5
    assert frames[0].shape == (400, 480, 3)  # 6 x 5 inches at 80 dpi
    assert all(f.shape == frames[0].shape for f in frames)
    # the boundary moves: consecutive frames differ, the first and last a lot
    changed = [np.mean(np.any(a != b, axis=2)) for a, b in itertools.pairwise(frames)]
    assert all(c > 0.01 for c in changed)
    assert np.mean(np.any(frames[0] != frames[-1], axis=2)) > 0.05
    assert [p.name for p in path.parent.iterdir()] == ["moons.gif"]  # no temporary left


def test_an_animation_needs_two_features_and_sane_settings() -> None:
    with pytest.raises(plots.PlotError, match="needs 2 features"):
        TrainingAnimation(np.zeros((4, 3)), np.zeros(4), "x.gif")
    with pytest.raises(ValueError, match="frames, every and fps must be >= 1"):
        TrainingAnimation(np.zeros((4, 2)), np.zeros(4), "x.gif", frames=0)


def test_fit_animate_writes_training_gif(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fit", str(MOONS / "moons.json"), "--data", str(MOONS / "train.csv"), "--target", "y"]
    code = main([*argv, "--out", str(tmp_path), "--epochs", "12", "--animate", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "training.gif" in capsys.readouterr().out
    frames = gif_frames(tmp_path / "training.gif")
    assert len(frames) == 13  # before training, then after every epoch (up to 50 frames)
    assert len({f.tobytes() for f in frames}) > 1


def test_fit_animate_refuses_other_widths_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digits = EXAMPLES / "digits"
    argv = ["fit", str(digits / "digits.json"), "--data", str(digits / "train.npz")]
    assert main([*argv, "--out", str(tmp_path / "run"), "--animate"]) == 1
    assert "--animate draws the decision boundary over 2 input features" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
