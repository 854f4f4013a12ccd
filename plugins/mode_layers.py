"""Built-in layers whose training and inference modes differ, and layer normalisation.

``m`` is the number of rows of the batch, ``k`` the number of features.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from microfw import Layer, WorkBuffer
from microfw.core.interfaces import Array, Store

from . import kernels
from .ops import dropout_keep


class Dropout(Layer):
    """Training: y = x keep / (1 - rate), keep ~ Bernoulli(1 - rate) each; inference: y = x.

    Inverted dropout, as ``torch.nn.Dropout`` and Keras: the surviving values are scaled in
    training so that inference needs no change. The masks come from the layer's own random
    stream (``store.stream("mask")``), derived from the model's seed, so a run repeats
    exactly: each batch takes one 64-bit draw ``s`` from it, and element ``i`` (row-major) is
    kept where the high 32 bits of ``splitmix64(s, i)`` are at least ``round(rate * 2**32)``
    (:func:`.ops.dropout_keep`; compiled with :func:`.kernels.dropout_mask`), whatever the
    model's dtype, so float32 and float64 models drop the same elements.
    """

    name = "dropout"
    modes_differ = True
    last_layer_advice = (
        "dropout as the last layer zeroes outputs the loss sees in training; put it before a layer"
    )

    rate: Annotated[float, Field(ge=0, lt=1)] = 0.5

    def build(self, n_in: int, store: Store) -> None:
        self._rng = store.stream("mask")
        self._threshold = min(round(self.rate * 2**32), 2**32 - 1)
        self._keep, self._out, self._dx = WorkBuffer(), WorkBuffer(), WorkBuffer()

    def forward(self, x: Array, training: bool = False) -> Array:
        if not training:
            return x.copy()
        seed = int(self._rng.bit_generator.random_raw())
        keep = self._keep.get(x.shape, np.dtype(np.bool_))
        y = self._out.get(x.shape, x.dtype)
        scale = 1 / (1 - self.rate)
        if kernels.available() and x.ndim == 2:
            kernels.dropout_mask(seed, self._threshold, x, scale, keep, y)
        else:
            keep[...] = dropout_keep(seed, self._threshold, x.shape)
            np.multiply(x, keep, out=y)
            y *= scale
        return y

    def backward(self, dy: Array) -> Array:
        keep = self._keep.get(dy.shape, np.dtype(np.bool_))
        dx = self._dx.get(dy.shape, dy.dtype)
        np.multiply(dy, keep, out=dx)
        dx *= 1 / (1 - self.rate)
        return dx


class BatchNorm(Layer):
    """y = gamma (x - mean) / sqrt(var + eps) + beta per feature, as ``torch.nn.BatchNorm1d``.

    Training uses the batch's mean and biased variance and updates the running statistics
    ``running = (1 - momentum) running + momentum batch`` (the running variance from the
    unbiased batch variance, ``var * m / (m - 1)``); inference uses the running statistics.
    They are non-trainable state (``running_mean`` from 0, ``running_var`` from 1), saved and
    loaded with the weights. ``center`` adds the learnt ``beta``, ``scale`` the learnt
    ``gamma``. A training batch needs at least 2 rows. With numba, training runs as two
    compiled kernels (:func:`.kernels.batch_norm_train`, :func:`.kernels.batch_norm_backward`:
    fewer passes, float64 column sums); otherwise the NumPy passes below, the same maths.
    """

    name = "batch_norm"
    modes_differ = True

    momentum: Annotated[float, Field(ge=0, le=1)] = 0.1
    eps: Annotated[float, Field(gt=0)] = 1e-5
    center: bool = True
    scale: bool = True

    def build(self, n_in: int, store: Store) -> None:
        self.gamma, self.dgamma, self.beta, self.dbeta = _affine(
            store, n_in, scale=self.scale, center=self.center
        )
        self.running_mean = store.add_state("running_mean", (n_in,), 0.0)
        self.running_var = store.add_state("running_var", (n_in,), 1.0)
        self._xhat, self._out, self._dx = WorkBuffer(), WorkBuffer(), WorkBuffer()

    def forward(self, x: Array, training: bool = False) -> Array:
        if not training:
            fresh: Array = x - self.running_mean
            fresh /= np.sqrt(self.running_var + self.eps)
            return self._affine(fresh)
        m = x.shape[0]
        if m < 2:
            raise ValueError(
                f"batch_norm needs at least 2 rows per training batch, got {m} (as "
                "torch.nn.BatchNorm1d); choose a batch_size that leaves no 1-row last batch"
            )
        xhat = self._xhat.get(x.shape, x.dtype)
        y = self._out.get(x.shape, x.dtype)
        if kernels.available() and self.gamma is not None and self.beta is not None:
            stats = np.empty((3, x.shape[1]))
            kernels.batch_norm_train(x, self.eps, self.gamma, self.beta, xhat, y, stats)
            self._inv_std = stats[2].astype(x.dtype)
            self._update_running(stats[0], stats[1], m)
            return y
        mean = x.mean(axis=0)
        np.subtract(x, mean, out=xhat)
        var = np.einsum("ij,ij->j", xhat, xhat) / m  # biased
        inv_std = 1 / np.sqrt(var + self.eps)
        xhat *= inv_std
        self._inv_std = inv_std
        self._update_running(mean, var, m)
        if self.gamma is not None:
            np.multiply(xhat, self.gamma, out=y)
        else:
            np.copyto(y, xhat)
        if self.beta is not None:
            y += self.beta
        return y

    def _update_running(self, mean: Array, var: Array, m: int) -> None:
        """running = (1 - momentum) running + momentum batch (unbiased variance)."""
        keep = 1 - self.momentum
        self.running_mean *= keep
        self.running_mean += self.momentum * mean
        self.running_var *= keep
        self.running_var += (self.momentum * m / (m - 1)) * var

    def _affine(self, y: Array) -> Array:
        if self.gamma is not None:
            y *= self.gamma
        if self.beta is not None:
            y += self.beta
        return y

    def backward(self, dy: Array) -> Array:
        xhat = self._xhat.get(dy.shape, dy.dtype)  # the last training forward's
        m = dy.shape[0]
        factor = self._inv_std if self.gamma is None else self._inv_std * self.gamma
        dx = self._dx.get(dy.shape, dy.dtype)
        if kernels.available():
            sums = np.empty((2, dy.shape[1]))
            kernels.batch_norm_backward(dy, xhat, factor, sums, dx)
            if self.dbeta is not None:
                self.dbeta[...] = sums[0]
            if self.dgamma is not None:
                self.dgamma[...] = sums[1]
            return dx
        sum_dy = dy.sum(axis=0)
        sum_dy_xhat = np.einsum("ij,ij->j", dy, xhat)
        if self.dbeta is not None:
            self.dbeta[...] = sum_dy
        if self.dgamma is not None:
            self.dgamma[...] = sum_dy_xhat
        # dx = gamma / (m std) (m dy - sum(dy) - xhat sum(dy xhat)), per feature
        np.multiply(xhat, sum_dy_xhat / m, out=dx)
        dx += sum_dy / m
        np.subtract(dy, dx, out=dx)
        dx *= factor
        return dx


class LayerNorm(Layer):
    """y = gamma (x - mean) / sqrt(var + eps) + beta, mean and var over each row's features.

    As ``torch.nn.LayerNorm(k)`` (biased variance; the same in training and inference).

    ``elementwise_affine`` adds the learnt per-feature ``gamma`` (from 1) and ``beta`` (from 0).
    """

    name = "layer_norm"

    eps: Annotated[float, Field(gt=0)] = 1e-5
    elementwise_affine: bool = True

    def build(self, n_in: int, store: Store) -> None:
        affine = self.elementwise_affine
        self.gamma, self.dgamma, self.beta, self.dbeta = _affine(
            store, n_in, scale=affine, center=affine
        )
        self._xhat, self._out, self._dx = WorkBuffer(), WorkBuffer(), WorkBuffer()

    def forward(self, x: Array, training: bool = False) -> Array:
        k = x.shape[1]
        xhat = self._xhat.get(x.shape, x.dtype) if training else np.empty_like(x)
        np.subtract(x, x.mean(axis=1, keepdims=True), out=xhat)
        var = np.einsum("ij,ij->i", xhat, xhat) / k
        inv_std = 1 / np.sqrt(var + self.eps)
        xhat *= inv_std[:, None]
        if not training:
            y = xhat
        else:
            self._inv_std = inv_std
            y = self._out.get(x.shape, x.dtype)
            np.copyto(y, xhat)
        if self.gamma is not None:
            y *= self.gamma
        if self.beta is not None:
            y += self.beta
        return y

    def backward(self, dy: Array) -> Array:
        k = dy.shape[1]
        xhat = self._xhat.get(dy.shape, dy.dtype)
        if self.dgamma is not None and self.dbeta is not None:
            self.dgamma[...] = np.einsum("ij,ij->j", dy, xhat)
            self.dbeta[...] = dy.sum(axis=0)
        dx = self._dx.get(dy.shape, dy.dtype)
        g = dy * self.gamma if self.gamma is not None else dy  # d loss / d xhat
        # dx = 1 / (k std) (k g - sum(g) - xhat sum(g xhat)), per row
        np.multiply(xhat, (np.einsum("ij,ij->i", g, xhat) / k)[:, None], out=dx)
        dx += (g.sum(axis=1) / k)[:, None]
        np.subtract(g, dx, out=dx)
        dx *= self._inv_std[:, None]
        return dx


def _affine(
    store: Store, n_in: int, *, scale: bool, center: bool
) -> tuple[Array | None, Array | None, Array | None, Array | None]:
    """A normalisation's per-feature ``gamma`` (from 1) and ``beta`` (from 0), each with its
    gradient, declared where asked for: ``(gamma, dgamma, beta, dbeta)``, None where not."""
    gamma = store.add("gamma", (n_in,), 1.0) if scale else None
    dgamma = store.grad("gamma") if scale else None
    beta = store.add("beta", (n_in,), 0.0) if center else None
    dbeta = store.grad("beta") if center else None
    return gamma, dgamma, beta, dbeta
