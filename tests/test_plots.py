"""Plots render real PNG files, headless, on the installed matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image as image
import numpy as np
import pytest

import microfw as mf
from microfw.data import load_data
from microfw.plots import PlotError, plot_decision_boundary, plot_history

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path: Path, min_colours: int = 8) -> np.ndarray:
    """A PNG file whose pixels are not all alike; returns the RGB pixels."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    pixels = image.imread(path)[..., :3]
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours, "the image is (nearly) blank"
    return pixels


def trained_xor(registry: mf.Registry, epochs: int = 2000) -> tuple[mf.Sequential, np.ndarray]:
    data = load_data(EXAMPLES / "xor" / "data.csv", "y")
    model = mf.build(EXAMPLES / "xor" / "xor_2_3_1.json", registry)
    model.fit(data.X, data.y, epochs=epochs)
    return model, data.X


def test_history_plot_from_a_mapping(tmp_path: Path) -> None:
    epochs = np.arange(50)
    curves = {
        "loss": list(np.exp(-epochs / 10)),
        "val_loss": list(np.exp(-epochs / 12)),
        "accuracy": list(1 - np.exp(-epochs / 5)),
    }
    path = plot_history(curves, tmp_path / "curve.png")
    assert path == tmp_path / "curve.png"
    assert_real_png(path)


def test_history_plot_from_fit(tmp_path: Path, registry: mf.Registry) -> None:
    data = load_data(EXAMPLES / "xor" / "data.csv", "y")
    model = mf.build(EXAMPLES / "xor" / "xor_2_3_1.json", registry)
    history = model.fit(data.X, data.y, epochs=300)
    wide = assert_real_png(plot_history(history, tmp_path / "nested" / "curve.png"))
    narrow = assert_real_png(plot_history({"loss": history.history["loss"]}, tmp_path / "l.png"))
    assert wide.shape[1] > narrow.shape[1]  # a second panel for the accuracy


def test_history_without_loss_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="no 'loss' curve"):
        plot_history({"accuracy": [0.5]}, tmp_path / "x.png")


def test_decision_boundary_shades_both_classes(tmp_path: Path, registry: mf.Registry) -> None:
    model, X = trained_xor(registry)
    pixels = assert_real_png(
        plot_decision_boundary(model, X, np.array([0, 1, 1, 0]), tmp_path / "b.png"), 50
    )
    red, green = pixels[..., 0], pixels[..., 1]
    assert (red > green + 0.2).any() and (green > red + 0.2).any()


def test_decision_boundary_applies_the_feature_transform_to_the_grid(
    tmp_path: Path, registry: mf.Registry
) -> None:
    data = load_data(EXAMPLES / "xor_feature_cross" / "data.csv", "y")
    model = mf.build(EXAMPLES / "xor_feature_cross" / "xor_feature_cross.json", registry)
    model.fit(data.X, data.y, epochs=500)
    seen: list[tuple[int, ...]] = []

    def cross(grid: np.ndarray) -> np.ndarray:
        seen.append(grid.shape)
        return np.c_[grid, grid[:, 0] * grid[:, 1]]

    path = plot_decision_boundary(
        model, data.X[:, :2], data.y, tmp_path / "cross.png", transform=cross, resolution=50
    )
    assert_real_png(path)
    assert seen == [(2500, 2)]
    with pytest.raises(ValueError, match="input_dim=3"):
        plot_decision_boundary(model, data.X[:, :2], data.y, tmp_path / "no.png")


def test_decision_boundary_of_logits_shades_around_the_threshold(tmp_path: Path) -> None:
    class Logits:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return 10 * (X[:, :1] + X[:, 1:] - 1.5)  # class 1 at >= 0 (bce from_logits)

    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    path = plot_decision_boundary(
        Logits(), X, np.array([0, 0, 0, 1]), tmp_path / "z.png", threshold=0.0, resolution=50
    )
    pixels = assert_real_png(path, 50)
    red, green = pixels[..., 0], pixels[..., 1]
    assert (red > green + 0.2).any() and (green > red + 0.2).any()
    # The whole plane is shaded: on a 0-1 probability scale only a thin band would be (0.91).
    assert (pixels.min(axis=2) > 0.99).mean() < 0.6


def test_outputs_beyond_0_1_at_threshold_0_5_are_shaded_as_scores(tmp_path: Path) -> None:
    """squared_error keeps 0.5 as its threshold, but a linear output is no probability."""

    class Linear:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return 10 * (X[:, :1] + X[:, 1:] - 1.5) + 0.5

    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    path = plot_decision_boundary(Linear(), X, np.array([0, 0, 0, 1]), tmp_path / "s.png")
    pixels = assert_real_png(path, 50)
    assert (pixels.min(axis=2) > 0.99).mean() < 0.6  # not a thin band on a blank plane


def test_decision_boundary_of_a_multi_class_model(tmp_path: Path, registry: mf.Registry) -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [3, 0], [0, 3]])
    labels = np.repeat(np.arange(3), 30)
    X = centres[labels] + rng.normal(scale=0.5, size=(90, 2))
    model = mf.Sequential(
        [{"type": "linear", "units": 3}, "softmax"],
        input_dim=2,
        loss="categorical_crossentropy",
        optimizer={"type": "sgd", "lr": 0.5},
        seed=0,
        registry=registry,
    )
    model.fit(X, np.eye(3)[labels], epochs=200)
    assert_real_png(plot_decision_boundary(model, X, np.eye(3)[labels], tmp_path / "k.png"))


def test_decision_boundary_needs_two_features(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match=r"needs 2 features, got X of shape \(4, 3\)"):
        plot_decision_boundary(None, np.zeros((4, 3)), np.zeros(4), tmp_path / "x.png")  # type: ignore[arg-type]


def test_missing_matplotlib_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(mf.MissingExtraError, match=r"pip install 'microfw\[plot\]'"):
        plot_history({"loss": [1.0, 0.5]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plotting_leaves_pyplot_alone(tmp_path: Path) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    plot_history({"loss": [1.0, 0.5]}, tmp_path / "x.png")
    assert matplotlib.get_backend() == backend
    assert (
        "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
    )


def test_unwritable_path_is_a_plot_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PlotError, match="cannot write the plot"):
        plot_history({"loss": [1.0, 0.5]}, blocker / "x.png")
