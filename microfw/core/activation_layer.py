"""The core layer that wraps an element-wise :class:`~microfw.Activation`."""

from __future__ import annotations

from typing import Any

from microfw.core.interfaces import Activation, Array, Layer, _same_shape


class ActivationLayer(Layer):
    """``y = f(x)`` element-wise, ``dL/dx = dL/dy * f'(x, y)``; caches ``x`` and ``y``.

    Not registered: a spec names the activation itself (``"sigmoid"``), and :attr:`name` and
    :meth:`get_params` are the activation's, so the layer writes back as the same spec entry.
    These are the plain methods; the planner may run the activation in reused buffers
    (``forward_into``/``backward_into``) or fused with its neighbours.
    """

    def __init__(self, activation: Activation) -> None:
        self.activation = activation
        self._param_names = ()

    @property
    def name(self) -> str:  # type: ignore[override]  # the activation's name: to_ref() round-trips
        return self.activation.name

    def get_params(self) -> dict[str, Any]:
        """The wrapped activation's parameters."""
        return self.activation.get_params()

    def forward(self, x: Array, training: bool = False) -> Array:
        y = self.activation.forward(x)  # its shape: checked at the model's boundary
        if training:
            self._x, self._y = x, y
        return y

    def backward(self, dy: Array) -> Array:
        derivative = self.activation.derivative(self._x, self._y)
        checked: Array = _same_shape(self.activation, "derivative", derivative, self._x)
        return dy * checked

    def __repr__(self) -> str:
        return f"ActivationLayer({self.activation!r})"

    def to_onnx(self, ctx: Any, x: str) -> str:
        """ONNX: the wrapped activation's own ``to_onnx`` (see :mod:`microfw.onnx`)."""
        return str(ctx.call(self.activation, x))
