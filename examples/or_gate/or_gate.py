"""The OR gate: one sigmoid neuron trained with squared error (first seed tutorial, part I).

After 5000 full-batch epochs at lr 1 the cost is about 0.0005, as the tutorial says, and the
neuron fires whenever x1 or x2 (or both) is 1.

Run: ``python examples/or_gate/or_gate.py``
"""

from pathlib import Path

import microfw as mf
from microfw.data import load_data

HERE = Path(__file__).parent


def main() -> None:
    data = load_data(HERE / "data.csv", target="y")
    model = mf.build(HERE / "or_gate.json")
    model.fit(data.X, data.y, callbacks=[mf.CostLogger(every=1000)])
    W, b = model.get_weights()
    print("weights:", W.ravel(), "bias:", b)
    print("predictions:", (model.predict(data.X) >= 0.5).astype(int).ravel())
    print("metrics:", model.evaluate(data.X, data.y))


if __name__ == "__main__":
    main()
