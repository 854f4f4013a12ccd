"""The benchmark workloads: data, network and the microfw spec of each, built the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.handwritten import Net


@dataclass(frozen=True)
class Workload:
    """One benchmark: a network, its data, the batch size and dtype, and epochs per timing."""

    name: str
    net: Net
    X: np.ndarray
    Y: np.ndarray
    dtype: np.dtype
    batch_size: int | None
    epochs: int  # epochs per timed run
    after_hidden: tuple[str, ...] = ()
    """Layers after each hidden activation: ``("batch_norm", "dropout")``."""

    def spec(self, optimizer: str = "sgd", after_hidden: bool = True) -> dict[str, Any]:
        """The microfw spec of this workload (same widths, activations, loss, lr); with
        ``optimizer="adam"``, Adam at torch's default rate 1e-3 instead of SGD; without the
        :attr:`after_hidden` layers when ``after_hidden`` is false."""
        layers: list[Any] = []
        widths = self.net.widths
        for i, width in enumerate(widths[1:]):
            layers.append({"type": "linear", "units": width, "init": "xavier"})
            last = i == len(widths) - 2
            layers.append(self.net.output if last else self.net.hidden)
            if not last and after_hidden:
                layers.extend(self.after_hidden)
        return {
            "spec_version": 1,
            "input_dim": widths[0],
            "layers": layers,
            "loss": self.net.loss,
            "optimizer": (
                {"type": "adam", "lr": 1e-3}
                if optimizer == "adam"
                else {"type": "sgd", "lr": self.net.lr}
            ),
            "training": {
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "shuffle": self.batch_size is not None,
            },
            "seed": 0,
            "dtype": str(np.dtype(self.dtype)),
        }


def xor() -> Workload:
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    Y = np.array([[0.0], [1.0], [1.0], [0.0]])
    net = Net((2, 3, 1), "sigmoid", "sigmoid", "squared_error", 1.0)
    return Workload("xor 2-3-1", net, X, Y, np.dtype(np.float64), None, 2000)


def moons(seed: int = 100) -> Workload:
    """900 two-moons-like points (a NumPy re-implementation of scikit-learn's recipe)."""
    rng = np.random.default_rng(seed)
    n = 450
    t_out, t_in = np.linspace(0, np.pi, n), np.linspace(0, np.pi, n)
    X = np.vstack(
        [
            np.column_stack([np.cos(t_out), np.sin(t_out)]),
            np.column_stack([1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5]),
        ]
    )
    X += rng.normal(scale=0.2, size=X.shape)
    Y = np.repeat([0.0, 1.0], n)[:, None]
    net = Net((2, 25, 50, 50, 25, 1), "relu", "sigmoid", "bce", 0.01)
    return Workload("moons 2-25-50-50-25-1", net, X, Y, np.dtype(np.float64), None, 200)


def mnist_shaped(batch_size: int, n: int = 60_000, seed: int = 0) -> Workload:
    """Synthetic 60,000 x 784 float32 data with 10 one-hot classes (MNIST's shapes)."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, 784), dtype=np.float32)
    labels = rng.integers(0, 10, n)
    Y = np.eye(10, dtype=np.float32)[labels]
    net = Net((784, 256, 128, 10), "relu", "softmax", "categorical_crossentropy", 0.01)
    return Workload(f"mnist-shaped b={batch_size}", net, X, Y, np.dtype(np.float32), batch_size, 1)


def mnist_regularized(batch_size: int = 128, n: int = 60_000) -> Workload:
    """:func:`mnist_shaped` with ``batch_norm`` and ``dropout`` (rate 0.5) after each hidden
    layer (``linear, relu, batch_norm, dropout``)."""
    plain = mnist_shaped(batch_size, n=n)
    return Workload(
        f"mnist-shaped + batch_norm + dropout b={batch_size}",
        plain.net,
        plain.X,
        plain.Y,
        plain.dtype,
        batch_size,
        1,
        ("batch_norm", "dropout"),
    )
