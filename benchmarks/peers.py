"""Peer frameworks on the same workloads: PyTorch CPU eager and scikit-learn's MLPClassifier.

Both are optional (the ``bench`` extra); :func:`available` says which are importable.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from benchmarks.handwritten import Net, init_weights


def available(module: str) -> bool:
    """Whether ``module`` can be imported."""
    return importlib.util.find_spec(module) is not None


class TorchEager:
    """The idiomatic PyTorch loop: ``nn.Sequential``, autograd, ``optim.SGD`` (or
    ``optim.Adam`` at lr 1e-3 with ``optimizer="adam"``, its default ``foreach`` form), one
    thread."""

    def __init__(
        self,
        net: Net,
        X: np.ndarray,
        Y: np.ndarray,
        dtype: np.dtype,
        batch_size: int | None = None,
        seed: int = 0,
        optimizer: str = "sgd",
        after_hidden: tuple[str, ...] = (),
    ) -> None:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(seed)  # dropout masks
        tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
        layers: list[torch.nn.Module] = []
        weights = init_weights(net, np.dtype(dtype))
        for i, (W, b) in enumerate(weights):
            lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=tdtype)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(torch.nn.ReLU() if net.hidden == "relu" else torch.nn.Sigmoid())
                for name in after_hidden:  # microfw's defaults: momentum 0.1, eps 1e-5, p 0.5
                    if name == "batch_norm":
                        layers.append(torch.nn.BatchNorm1d(W.shape[1], dtype=tdtype))
                    elif name == "dropout":
                        layers.append(torch.nn.Dropout(0.5))
                    else:
                        raise ValueError(f"no PyTorch layer for {name!r}")
            elif net.output == "sigmoid":
                layers.append(torch.nn.Sigmoid())
        self.model = torch.nn.Sequential(*layers)
        self.X = torch.from_numpy(np.ascontiguousarray(X, dtype=dtype))
        self.Y = torch.from_numpy(np.ascontiguousarray(Y, dtype=dtype))
        if net.loss == "categorical_crossentropy":  # softmax folded into the loss, as usual
            self.targets = self.Y.argmax(dim=1)
            self.loss_fn = torch.nn.CrossEntropyLoss()
        else:
            self.targets = self.Y
            self.loss_fn = torch.nn.BCELoss() if net.loss == "bce" else self._half_mse
        if optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        else:
            self.opt = torch.optim.SGD(self.model.parameters(), lr=net.lr)
        self.batch_size = batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.torch = torch

    @staticmethod
    def _half_mse(p, y):  # type: ignore[no-untyped-def]
        return ((p - y) ** 2).sum() / (2 * p.shape[0])

    def _step(self, x, t) -> float:  # type: ignore[no-untyped-def]
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(x), t)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def epoch(self) -> float:
        n = self.X.shape[0]
        if self.batch_size is None or self.batch_size >= n:
            return self._step(self.X, self.targets)
        perm = self.torch.randperm(n, generator=self.gen)
        X, T, bs = self.X[perm], self.targets[perm], self.batch_size
        total = 0.0
        for start in range(0, n, bs):
            total += self._step(X[start : start + bs], T[start : start + bs]) * min(bs, n - start)
        return total / n


class SklearnMLP:
    """``MLPClassifier`` with plain SGD, constant rate, no momentum or L2: one epoch per call."""

    def __init__(
        self,
        net: Net,
        X: np.ndarray,
        Y: np.ndarray,
        dtype: np.dtype,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        from sklearn.neural_network import MLPClassifier

        self.X = np.ascontiguousarray(X, dtype=dtype)
        self.y = Y.argmax(axis=1) if Y.shape[1] > 1 else Y.ravel()
        self.clf = MLPClassifier(
            hidden_layer_sizes=net.widths[1:-1],
            activation="relu" if net.hidden == "relu" else "logistic",
            solver="sgd",
            learning_rate_init=net.lr,
            momentum=0.0,
            alpha=0.0,
            batch_size=batch_size or X.shape[0],
            shuffle=batch_size is not None,
            random_state=seed,
        )
        self.classes = np.unique(self.y)

    def epoch(self) -> float:
        self.clf.partial_fit(self.X, self.y, classes=self.classes)
        return float(self.clf.loss_)
