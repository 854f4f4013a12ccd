"""XOR with the feature cross x1*x2 as a third input: a single neuron then suffices.

``data.csv`` holds x1, x2 and the synthetic feature x1_x2 = x1 * x2. The network is 3-1
(one sigmoid neuron, plain init), squared error, lr 1, 5000 full-batch epochs, legacy RNG with
seed 48. The decision boundary is drawn over (x1, x2): the same cross is applied to the grid
as to the data, so the boundary comes out curved.

Run: ``python examples/xor_feature_cross/xor_feature_cross.py`` (the plot needs microfw[plot])
"""

from pathlib import Path

import numpy as np

import microfw as mf
from microfw.data import load_data

HERE = Path(__file__).parent


def cross(X2: np.ndarray) -> np.ndarray:
    """(x1, x2) -> (x1, x2, x1 * x2): the feature cross, for the grid as for the data."""
    return np.c_[X2, X2[:, 0] * X2[:, 1]]


def main(out: Path = Path("runs/xor_feature_cross")) -> None:
    data = load_data(HERE / "data.csv", target="y")
    model = mf.build(HERE / "xor_feature_cross.json")
    model.fit(data.X, data.y, callbacks=[mf.CostLogger(every=1000)])
    print("weights (x1, x2, x1*x2):", model.get_weights()[0].ravel())
    print("predictions:", (model.predict(data.X) >= 0.5).astype(int).ravel())
    print("metrics:", model.evaluate(data.X, data.y))
    from microfw.plots import plot_decision_boundary

    path = plot_decision_boundary(
        model, data.X[:, :2], data.y, out / "decision_boundary.png", transform=cross
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
