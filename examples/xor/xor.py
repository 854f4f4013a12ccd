"""XOR, as in the first seed tutorial: three networks on the four XOR points.

* ``xor_2_3_1.json``: 2-3-1 sigmoid, xavier, squared error, lr 1, 5000 full-batch epochs.
  With ``"rng": "legacy"`` and seed 48 it prints the tutorial's costs exactly:
  ``Cost at epoch#0: 0.12926510193084198`` ... ``Cost at epoch#4900: 0.000921016643061...``
* ``xor_2_5_3_1.json``: a deeper 2-5-3-1 network, same settings.
* ``xor_bce.json``: 2-3-1 with binary cross-entropy and plain init at lr 5.

Run: ``python examples/xor/xor.py``
"""

from pathlib import Path

import microfw as mf
from microfw.data import load_data

HERE = Path(__file__).parent
SPECS = ["xor_2_3_1.json", "xor_2_5_3_1.json", "xor_bce.json"]


def main() -> None:
    data = load_data(HERE / "data.csv", target="y")
    for name in SPECS:
        print(f"== {name}")
        model = mf.build(HERE / name)
        every = 100 if name == "xor_2_3_1.json" else 1000
        model.fit(data.X, data.y, callbacks=[mf.CostLogger(every=every)])
        print("predictions:", (model.predict(data.X) >= 0.5).astype(int).ravel())
        print("metrics:", model.evaluate(data.X, data.y))


if __name__ == "__main__":
    main()
