"""A plugin defined in a script: register a class, then name it in a spec.

``@microfw.register`` adds the class to the registry in use, through the same pluggy path as an
installed package, so ``"swish"`` is usable by name right after, and microfw's own contract
and gradient checks run on it. (To share a plugin, package it: see ``examples/plugin_package``.)

Run: ``python examples/custom_activation/custom_activation.py``
"""

from pathlib import Path

import numpy as np

import microfw as mf
import microfw.testing
from microfw.data import load_data

XOR = Path(__file__).resolve().parents[1] / "xor" / "data.csv"


@mf.register
class Swish(mf.Activation):
    """y = x * sigmoid(beta x); y' = beta y + sigmoid(beta x) (1 - beta y)."""

    name = "swish"
    beta: float = 1.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x / (1 + np.exp(-self.beta * x))

    def derivative(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        s = 1 / (1 + np.exp(-self.beta * x))
        return self.beta * y + s * (1 - self.beta * y)


SPEC = {
    "spec_version": 1,
    "input_dim": 2,
    "layers": [
        {"type": "linear", "units": 4, "activation": {"type": "swish", "beta": 1.5}},
        {"type": "linear", "units": 1},
        "sigmoid",
    ],
    "loss": "bce",
    "optimizer": {"type": "sgd", "lr": 0.5},
    "training": {"epochs": 3000},
    "seed": 1,
}


def main() -> None:
    print("checks passed:", ", ".join(microfw.testing.check_plugin(Swish)))
    data = load_data(XOR, target="y")
    model = mf.build(SPEC)
    model.fit(data.X, data.y, callbacks=[mf.CostLogger(every=1000)])
    print("predictions:", (model.predict(data.X) >= 0.5).astype(int).ravel())
    print("metrics:", model.evaluate(data.X, data.y))


if __name__ == "__main__":
    main()
