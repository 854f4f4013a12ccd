"""Built-in layers whose training and inference modes differ, and layer normalisation.

``m`` is the number of rows of the batch, ``k`` the number of features. Each maps its
inference forward to ONNX (``to_onnx``, see :mod:`microfw.onnx`) as the same arithmetic in the
same order, in the model's dtype.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from microfw import Layer, WorkBuffer
from microfw.core.interfaces import Array, Store

from . import kernels, onnx_ops
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

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Identity, inference's y = x (``rate`` plays no part)."""
        return str(ctx.node("Identity", [x]))


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

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): the inference forward from the running statistics,
        (x - running_mean) / sqrt(running_var + eps) (gamma, beta where present), the
        divisor computed here as ``forward`` computes it. Not BatchNormalization: its epsilon
        is a float32 attribute, and onnxruntime's kernel rounds otherwise, as a scale and
        shift would (on x near the mean: 7e-11 relative off in float64, 0.1 in float32)."""
        std = np.sqrt(self.running_var + self.eps)
        y = ctx.node("Sub", [x, ctx.constant(self.running_mean, "running_mean")])
        y = ctx.node("Div", [y, ctx.constant(std, "running_std")])
        return _onnx_affine(ctx, y, self.gamma, self.beta)


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
        self._features = n_in
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

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): ``forward``'s steps over each row's features: the mean
        summed in NumPy's order (``_onnx_row_sum``), so that x - mean rounds as NumPy's even
        where it cancels; var = ReduceSumSquare(x - mean) / k; (x - mean) (1 / sqrt(var +
        eps)); gamma and beta with ``elementwise_affine``. Not LayerNormalization: its
        epsilon is a float32 attribute and onnxruntime's kernel rounds otherwise (on normal
        rows 5e-12 relative off in float64, 1e-4 in float32; 4e-11 and 2e-2 on rows around
        100, as if var were E[x^2] - E[x]^2)."""
        k = self._features
        count = ctx.constant(float(k), "features")
        mean = ctx.node("Div", [_onnx_row_sum(ctx, x, 0, k), count])
        centred = ctx.node("Sub", [x, mean])
        squares = _onnx_sum_of_squares(ctx, centred)
        var = ctx.node("Div", [squares, count])
        std = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.constant(self.eps, "eps")])])
        # Reciprocal, not Div(1, std): onnxruntime rewrites Div(1, s) then Mul(c, .) as Div(c, s)
        y = ctx.node("Mul", [centred, ctx.node("Reciprocal", [std])])
        return _onnx_affine(ctx, y, self.gamma, self.beta)


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


def _onnx_affine(ctx: Any, y: str, gamma: Array | None, beta: Array | None) -> str:
    """ONNX: y gamma + beta, each where present (as the layers' in-place ``*=`` and ``+=``)."""
    if gamma is not None:
        y = ctx.node("Mul", [y, ctx.constant(gamma, "gamma")])
    if beta is not None:
        y = ctx.node("Add", [y, ctx.constant(beta, "beta")])
    return str(y)


_PAIRWISE_BLOCK = 128
"""NumPy's PW_BLOCKSIZE: the pairwise sum splits longer runs in two."""


def _onnx_row_sum(ctx: Any, x: str, start: int, stop: int) -> str:
    """ONNX: the sum over columns ``start:stop`` of 2-D ``x``, ``(m, 1)``, added in the order
    of NumPy's pairwise summation (``x.sum(axis=1)`` of a C-ordered array, numpy's
    ``pairwise_sum`` in ``loops_utils.h.src``), so that it rounds exactly as NumPy's:
    fewer than 8 columns one after the other; up to 128 in 8 running sums (of every 8th
    column), added as ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)), then the rest one
    by one; more in two halves (the first a multiple of 8 columns), each summed so.
    onnxruntime's ReduceSum adds in another order."""
    n = stop - start

    def columns(first: int, last: int) -> str:
        return str(ctx.node("Slice", [x, *_slice_bounds(ctx, first, last, 1)]))

    def pairs(y: str, width: int) -> str:  # (y0 + y1, y2 + y3, ...) of an even width
        even = ctx.node("Slice", [y, *_slice_bounds(ctx, 0, width, 2)])
        odd = ctx.node("Slice", [y, *_slice_bounds(ctx, 1, width, 2)])
        return str(ctx.node("Add", [even, odd]))

    if n < 8:
        total = columns(start, start + 1)
        for j in range(start + 1, stop):
            total = ctx.node("Add", [total, columns(j, j + 1)])
        return str(total)
    if n <= _PAIRWISE_BLOCK:
        blocks = n - n % 8
        running = columns(start, start + 8)
        for j in range(start + 8, start + blocks, 8):
            running = ctx.node("Add", [running, columns(j, j + 8)])
        total = pairs(pairs(pairs(running, 8), 4), 2)
        for j in range(start + blocks, stop):
            total = ctx.node("Add", [total, columns(j, j + 1)])
        return str(total)
    half = n // 2
    half -= half % 8
    left = _onnx_row_sum(ctx, x, start, start + half)
    return str(ctx.node("Add", [left, _onnx_row_sum(ctx, x, start + half, stop)]))


def _onnx_sum_of_squares(ctx: Any, x: str) -> str:
    """ONNX: ReduceSumSquare of 2-D ``x`` over its columns, ``(m, 1)``; in a float32 model
    summed in float64 and rounded (NumPy's einsum has its own order, and float32 sums of
    hundreds of terms drift apart by several units in the last place)."""
    return onnx_ops.in_float64(
        ctx, x, lambda v: str(ctx.node("ReduceSumSquare", [v], axes=[1], keepdims=1))
    )


def _slice_bounds(ctx: Any, start: int, stop: int, step: int) -> list[str]:
    """Slice's starts, ends, axes (1) and steps inputs, for columns ``start:stop:step``."""
    return [ctx.constant([v], "slice", np.int64) for v in (start, stop, 1, step)]
