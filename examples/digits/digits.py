"""Handwritten digits, 10 classes: softmax output and categorical cross-entropy.

``train.npz`` and ``test.npz`` hold scikit-learn's bundled 8x8 digits (1797 images), pixel
values divided by 16, split 80/20 (stratified, ``random_state=0``); ``y`` holds the integer
labels 0-9, one-hot encoded here for the 10 softmax outputs. 64-32-10 (ReLU, he init),
SGD lr 0.1, mini-batches of 32, 50 epochs, 10% of the training rows held out for
``val_loss``: about 96% test accuracy in well under a second.

Run: ``python examples/digits/digits.py``
"""

from pathlib import Path

import microfw as mf
from microfw.data import load_data, targets_for

HERE = Path(__file__).parent


def main() -> None:
    model = mf.build(HERE / "digits.json")
    train = load_data(HERE / "train.npz")
    test = load_data(HERE / "test.npz")
    y_train = targets_for(train, model.output_dim, model.loss)  # labels 0-9 -> one-hot
    y_test = targets_for(test, model.output_dim, model.loss)
    history = model.fit(train.X, y_train)
    last = {key: round(values[-1], 4) for key, values in history.history.items()}
    print("last epoch:", last)
    print("test:", model.evaluate(test.X, y_test))


if __name__ == "__main__":
    main()
