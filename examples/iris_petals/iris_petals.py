"""Iris petals: is a flower virginica? One sigmoid neuron on petal length and width.

``data.csv`` is the public-domain iris data (150 flowers), petal columns only, with the
label ``virginica`` (1 for Iris virginica, 0 for the other two species). Binary cross-entropy,
lr 1, 5000 full-batch epochs, plain init, legacy RNG seed 48: 96% training accuracy (the two
classes overlap a little, so no straight line separates them perfectly).

Run: ``python examples/iris_petals/iris_petals.py``
"""

from pathlib import Path

import microfw as mf
from microfw.data import load_data

HERE = Path(__file__).parent


def main() -> None:
    data = load_data(HERE / "data.csv", target="virginica")
    model = mf.build(HERE / "iris_petals.json")
    model.fit(data.X, data.y, callbacks=[mf.CostLogger(every=1000)])
    print("metrics:", model.evaluate(data.X, data.y))


if __name__ == "__main__":
    main()
