"""The two moons of the second seed tutorial: a 2-25-50-50-25-1 ReLU network.

``train.csv`` and ``test.csv`` were generated once with scikit-learn:
``make_moons(n_samples=1000, noise=0.2, random_state=100)`` split by
``train_test_split(test_size=0.1, random_state=42)`` (900 train, 100 test, no scaling).
Weights and biases are drawn N(0, 0.1^2) (the ``normal`` initializer, std 0.1) from
``RandomState(2)`` in the tutorial's order (``"rng": "legacy"``); binary cross-entropy,
full-batch gradient descent at lr 0.01 for 10000 epochs. Test accuracy: 0.98.

Run: ``python examples/moons/moons.py`` (10-15 s)
"""

from pathlib import Path

import microfw as mf
from microfw.data import load_data

HERE = Path(__file__).parent


def main() -> None:
    train = load_data(HERE / "train.csv", target="y")
    test = load_data(HERE / "test.csv", target="y")
    model = mf.build(HERE / "moons.json")
    model.fit(train.X, train.y, callbacks=[mf.CostLogger(every=1000)])
    print("train:", model.evaluate(train.X, train.y))
    print("test: ", model.evaluate(test.X, test.y))


if __name__ == "__main__":
    main()
