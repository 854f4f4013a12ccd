"""Hand-written NumPy baselines: the same maths as microfw, written out for one network.

Three flavours, all with rows = samples unless named otherwise:

* ``SeedsLoop``: the seed tutorials' way (examples as columns, a fresh array per operation).
* ``LeanLoop``: a careful hand loop with rows = samples and preallocated buffers.
* ``GemmFloor``: only the matrix products one epoch needs (every batch, the last one possibly
  smaller), on preallocated arrays: the time no implementation of this maths on this BLAS
  can beat.

Hidden activations are relu or sigmoid, the output is sigmoid (squared error or BCE) or
softmax (categorical cross-entropy); plain gradient descent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Net:
    """A dense network: widths ``[n_in, ..., n_out]``, hidden and output activations, loss."""

    widths: tuple[int, ...]
    hidden: str  # "relu" | "sigmoid"
    output: str  # "sigmoid" | "softmax"
    loss: str  # "squared_error" | "bce" | "categorical_crossentropy"
    lr: float


def init_weights(net: Net, dtype: np.dtype, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weights ``(n_in, n_out)`` and zero biases, LeCun-normal."""
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype),
            np.zeros(b, dtype=dtype),
        )
        for a, b in zip(net.widths[:-1], net.widths[1:], strict=True)
    ]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


class SeedsLoop:
    """The tutorials' loop: features x examples, W (n_out, n_in), new arrays everywhere."""

    def __init__(self, net: Net, X: np.ndarray, Y: np.ndarray, dtype: np.dtype) -> None:
        self.net = net
        self.X = np.ascontiguousarray(X.T, dtype=dtype)
        self.Y = np.ascontiguousarray(Y.T, dtype=dtype)
        self.params = [(W.T.copy(), b[:, None].copy()) for W, b in init_weights(net, dtype)]

    def epoch(self) -> float:
        net, m = self.net, self.X.shape[1]
        acts, zs = [self.X], []
        last = len(self.params) - 1
        for i, (W, b) in enumerate(self.params):
            z = W @ acts[-1] + b
            zs.append(z)
            if i < last:
                acts.append(np.maximum(0, z) if net.hidden == "relu" else _sigmoid(z))
            elif net.output == "softmax":
                e = np.exp(z - z.max(axis=0, keepdims=True))
                acts.append(e / e.sum(axis=0, keepdims=True))
            else:
                acts.append(_sigmoid(z))
        p, y = acts[-1], self.Y
        if net.loss == "squared_error":
            cost = float(np.sum((y - p) ** 2)) / (2 * m)
            dz = (p - y) / m * p * (1 - p)
        elif net.loss == "bce":
            pc = np.clip(p, 1e-7, 1 - 1e-7)
            cost = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
            dz = (p - y) / m
        else:
            cost = float(-np.sum(y * np.log(np.clip(p, 1e-7, 1))) / m)
            dz = (p - y) / m
        for i in range(last, -1, -1):
            W, b = self.params[i]
            dW = dz @ acts[i].T
            db = np.sum(dz, axis=1, keepdims=True)
            if i > 0:
                da = W.T @ dz
                a = acts[i]
                dz = da * (zs[i - 1] > 0) if net.hidden == "relu" else da * a * (1 - a)
            self.params[i] = (W - net.lr * dW, b - net.lr * db)
        return cost


class LeanLoop:
    """A careful hand loop: rows = samples, buffers allocated once per batch size, ``out=``.

    With ``batch_size`` the rows are shuffled once per epoch (one gather) and cut into
    contiguous mini-batches, the last one possibly smaller.
    """

    def __init__(
        self,
        net: Net,
        X: np.ndarray,
        Y: np.ndarray,
        dtype: np.dtype,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.net = net
        self.X = np.ascontiguousarray(X, dtype=dtype)
        self.Y = np.ascontiguousarray(Y, dtype=dtype)
        self.dtype = dtype
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.params = init_weights(net, dtype)
        self.g = [(np.empty_like(W), np.empty_like(b)) for W, b in self.params]
        self.buffers: dict[int, tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = {}

    def _buffers(self, m: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        if m not in self.buffers:
            widths = self.net.widths[1:]
            self.buffers[m] = (
                [np.empty((m, w), self.dtype) for w in widths],
                [np.empty((m, w), self.dtype) for w in widths],
                [np.zeros((m, w), self.dtype) for w in widths],
            )
        return self.buffers[m]

    def epoch(self) -> float:
        n = self.X.shape[0]
        if self.batch_size is None or self.batch_size >= n:
            return self.step(self.X, self.Y)
        perm = self.rng.permutation(n)
        X, Y, bs = self.X[perm], self.Y[perm], self.batch_size
        total = 0.0
        for start in range(0, n, bs):
            xb, yb = X[start : start + bs], Y[start : start + bs]
            total += self.step(xb, yb) * xb.shape[0]
        return total / n

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        net, m = self.net, x.shape[0]
        acts, d, zero = self._buffers(m)
        a, g = [x, *acts], self.g
        last = len(self.params) - 1
        for i, (W, b) in enumerate(self.params):
            z = a[i + 1]
            np.matmul(a[i], W, out=z)
            z += b
            if i < last and net.hidden == "relu":
                np.maximum(z, zero[i], out=z)
            elif i == last and net.output == "softmax":
                z -= z.max(axis=1, keepdims=True)
                np.exp(z, out=z)
                z /= z.sum(axis=1, keepdims=True)
            else:
                np.negative(z, out=z)
                np.exp(z, out=z)
                z += 1
                np.reciprocal(z, out=z)
        p, dz = a[-1], d[-1]
        np.subtract(p, y, out=dz)
        if net.loss == "squared_error":
            cost = float(np.vdot(dz, dz)) / (2 * m)
            dz *= p
            dz *= 1 - p
        elif net.loss == "bce":
            pc = np.clip(p, 1e-7, 1 - 1e-7)
            cost = -float(np.vdot(y, np.log(pc)) + np.vdot(1 - y, np.log1p(-pc))) / p.size
        else:
            cost = -float(np.vdot(y, np.log(np.clip(p, 1e-7, 1)))) / m
        dz /= m
        for i in range(last, -1, -1):
            W, b = self.params[i]
            dW, db = g[i]
            np.matmul(a[i].T, d[i], out=dW)
            np.sum(d[i], axis=0, out=db)
            if i > 0:
                da = d[i - 1]
                np.matmul(d[i], W.T, out=da)
                if net.hidden == "relu":
                    da *= a[i] > 0
                else:
                    da *= a[i]
                    da *= 1 - a[i]
            dW *= net.lr
            db *= net.lr
            W -= dW
            b -= db
        return cost


class GemmFloor:
    """Only the matrix products of one epoch (forward, dW, dX) on preallocated arrays, batch
    by batch (the last one possibly smaller); one batch of every row without ``batch_size``."""

    def __init__(
        self, net: Net, X: np.ndarray, dtype: np.dtype, batch_size: int | None = None
    ) -> None:
        n = X.shape[0]
        bs = batch_size or n
        X = np.ascontiguousarray(X, dtype=dtype)
        self.params = [W for W, _ in init_weights(net, dtype)]
        a = [np.full((bs, w), 0.5, dtype) for w in net.widths[1:]]
        d = [np.full((bs, w), 0.1, dtype) for w in net.widths[1:]]
        self.g = [np.empty_like(W) for W in self.params]
        # Each batch's operands, as views made once: the epoch only runs the products.
        self.batches = []
        for start in range(0, n, bs):
            m = min(bs, n - start)
            self.batches.append(([X[start : start + m], *(b[:m] for b in a)], [b[:m] for b in d]))

    def epoch(self) -> float:
        params, g = self.params, self.g
        for a, d in self.batches:
            for i, W in enumerate(params):
                np.matmul(a[i], W, out=a[i + 1])
            for i in range(len(params) - 1, -1, -1):
                np.matmul(a[i].T, d[i], out=g[i])
                if i > 0:
                    np.matmul(d[i], params[i].T, out=d[i - 1])
        return 0.0
