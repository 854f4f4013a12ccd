"""The core layer that wraps an element-wise :class:`~microfw.Activation`."""

from __future__ import annotations

from typing import Any

from microfw.buffers import WorkBuffer
from microfw.interfaces import Activation, Array, Layer


class ActivationLayer(Layer):
    """``y = f(x)`` element-wise, ``dL/dx = dL/dy * f'(x, y)``; caches ``x`` and ``y``.

    Not registered: a spec names the activation itself (``"sigmoid"``), and :attr:`name` and
    :meth:`get_params` are the activation's, so the layer writes back as the same spec entry.
    In training it works in reused buffers, through the activation's
    ``forward_into``/``backward_into``.
    """

    def __init__(self, activation: Activation) -> None:
        self.activation = activation
        self._param_names = ()
        self._y_buffer = WorkBuffer()
        self._dx_buffer = WorkBuffer()

    @property  # type: ignore[override]
    def name(self) -> str:  # the activation's public name, so to_ref() round-trips
        return self.activation.name

    def get_params(self) -> dict[str, Any]:
        """The wrapped activation's parameters."""
        return self.activation.get_params()

    in_place = False
    """Set by the model when ``x`` may be overwritten (see :meth:`Sequential` set-up): ``y``
    is then computed over ``x``, saving a buffer and memory traffic."""

    bias: Array | None = None
    """Set by the model with :attr:`in_place` when the layer before defers its bias to this
    activation (see :meth:`Layer.defer_bias`): training computes ``f(x + bias)`` over ``x``."""

    def forward(self, x: Array, training: bool = True) -> Array:
        if not training:
            return self.activation.forward(x)
        if self.in_place:
            if self.bias is None:
                self.activation.forward_into(x, x)
            else:
                self.activation.forward_bias_into(x, self.bias, x)
            self._x = self._y = x
            return x
        self._x = x
        self._y = self._y_buffer.get(x.shape, x.dtype)
        self.activation.forward_into(x, self._y)
        return self._y

    grad_in_place = False
    """Set by the model when ``dy`` may be overwritten (the next layer declares
    ``grad_is_scratch`` and the activation ``backward_in_place``): ``dx`` is computed over it."""

    def backward(self, dy: Array) -> Array:
        if self.grad_in_place:
            self.activation.backward_into(self._x, self._y, dy, dy)
            return dy
        dx = self._dx_buffer.get(dy.shape, dy.dtype)
        self.activation.backward_into(self._x, self._y, dy, dx)
        return dx

    def __repr__(self) -> str:
        return f"ActivationLayer({self.activation!r})"

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX: the wrapped activation's own ``to_onnx`` (see :mod:`microfw.onnx`)."""
        return str(ctx.call(self.activation, x))
