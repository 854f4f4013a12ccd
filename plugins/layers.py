"""Built-in layers: plain maths (their fused forms are rules in :mod:`.fusions`)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from microfw import Initializer, Layer, Regularizer, WorkBuffer, hookimpl, ref
from microfw.core.interfaces import Array, Store

from .ops import dense_backward, row_sum, softmax_into


class Linear(Layer):
    """y = x W + b, with W (n_in, units) and b (units,)."""

    name = "linear"
    output_range = (-np.inf, np.inf)
    example_params = {"units": 3}

    units: Annotated[int, Field(gt=0)]
    init: Initializer = ref("xavier")
    bias_init: Initializer = ref("zeros")
    use_bias: bool = True
    kernel_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None

    def output_dim(self, n_in: int) -> int:
        return self.units

    def build(self, n_in: int, store: Store) -> None:
        self.W = store.add("W", (n_in, self.units), self.init, self.kernel_regularizer)
        self.dW = store.grad("W")
        self.b: Array | None = None
        self.db: Array | None = None
        if self.use_bias:
            self.b = store.add("b", (self.units,), self.bias_init, self.bias_regularizer)
            self.db = store.grad("b")
        self._out = WorkBuffer()
        self._dx = WorkBuffer()

    def forward(self, x: Array, training: bool = False) -> Array:
        y: Array
        if not training:
            y = x @ self.W
        else:
            self._x = x
            y = self._out.get((x.shape[0], self.units), self.W.dtype)
            np.matmul(x, self.W, out=y)
        if self.b is not None:
            y += self.b
        return y

    def backward(self, dy: Array) -> Array:
        dx = dense_backward(self._x, dy, self.W, self.dW, self.db, self._dx)
        assert dx is not None
        return dx

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Gemm(x, W, b), or MatMul(x, W) without a bias."""
        W, *b = ctx.weights(self)
        if not b:
            return str(ctx.node("MatMul", [x, ctx.constant(W, "W")]))
        return str(ctx.node("Gemm", [x, ctx.constant(W, "W"), ctx.constant(b[0], "b")]))


class Softmax(Layer):
    """y_i = exp(x_i - max(x)) / sum_j exp(x_j - max(x)) per row; dx = y (dy - sum(dy y))."""

    name = "softmax"
    output_range = (0.0, 1.0)
    output_kind = "distribution"

    def output_dim(self, n_in: int) -> int:
        if n_in < 2:
            raise ValueError(
                f"softmax needs at least 2 inputs (one per class), got {n_in}: a softmax over "
                "one column is constantly 1 (for two classes with one output use 'sigmoid')"
            )
        return n_in

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._y_buffer = WorkBuffer()
        self._dx_buffer = WorkBuffer()
        self._rows = WorkBuffer()

    def forward(self, x: Array, training: bool = False) -> Array:
        y = self._y_buffer.get(x.shape, x.dtype) if training else np.empty_like(x)
        softmax_into(x, y, self._rows)
        if training:
            self._y = y
        return y

    def backward(self, dy: Array) -> Array:
        # The Jacobian-vector product of each row: J = diag(y) - y y^T, so J dy = y (dy - y.dy).
        y = self._y
        dx = self._dx_buffer.get(dy.shape, dy.dtype)
        dots = self._rows.get((dy.shape[0],), dy.dtype)
        np.multiply(dy, y, out=dx)
        row_sum(dx, out=dots)
        np.subtract(dy, dots[:, None], out=dx)
        dx *= y
        return dx

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX (see microfw.onnx): Softmax over the last axis."""
        return str(ctx.node("Softmax", [x], axis=-1))


@hookimpl
def register_layers() -> list[type[Layer]]:
    from .mode_layers import BatchNorm, Dropout, LayerNorm

    return [Linear, Softmax, Dropout, BatchNorm, LayerNorm]
