"""Why squared error stalls where cross-entropy does not (the AND gate, weights forced).

Both networks are one neuron on the AND gate, started from the same bad weights
W = [[-10], [60]], b = 0: the point (0, 1) is then classified 1 with an output
sigmoid(60) ~ 1, badly wrong and saturated.

* ``and_squared_error.json`` (sigmoid output, squared error): the gradient reaching W is
  (y_pred - y) * y_pred * (1 - y_pred) and the last factor is ~0 at a saturated output, so
  w2 receives no gradient at all and training stalls at 75% accuracy.
* ``and_bce.json`` (linear output, binary cross-entropy from logits): the sigmoid's derivative
  cancels out of the gradient, (sigmoid(z) - y) / m, which is large exactly when the output is
  confidently wrong, so the neuron recovers within a few hundred epochs.

Run: ``python examples/and_gate/and_gate.py``
"""

from pathlib import Path

import numpy as np

import microfw as mf
from microfw.data import load_data

HERE = Path(__file__).parent
BAD_WEIGHTS = [np.array([[-10.0], [60.0]]), np.zeros(1)]


def run(spec: str) -> mf.History:
    data = load_data(HERE / "data.csv", target="y")
    model = mf.build(HERE / spec)
    model.set_weights(BAD_WEIGHTS)
    _, (dW, db) = model.compute_gradients(data.X, data.y)
    print(f"== {spec}: initial gradient dW = {dW.ravel()}, db = {db}")
    history = model.fit(data.X, data.y)
    accuracy = history.history["accuracy"]
    first = next((epoch for epoch, a in enumerate(accuracy) if a == 1.0), None)
    loss = history.history["loss"]
    print(f"loss {loss[0]:.4g} -> {loss[-1]:.4g}, final accuracy {accuracy[-1]:.2f}, ", end="")
    print(f"first epoch at 100%: {first}")
    return history


def main() -> None:
    run("and_squared_error.json")
    run("and_bce.json")


if __name__ == "__main__":
    main()
