"""The core layer that wraps an element-wise :class:`~microfw.Activation`."""

from __future__ import annotations

from typing import Any

import numpy as np

from microfw.interfaces import Activation, Array, Layer


class ActivationLayer(Layer):
    """``y = f(x)`` element-wise, ``dL/dx = dL/dy * f'(x, y)``; caches ``x`` and ``y``.

    Not registered: a spec names the activation itself (``"sigmoid"``), and :attr:`name` and
    :meth:`get_params` are the activation's, so the layer writes back as the same spec entry.
    In training it works in buffers kept per batch shape, through the activation's
    ``forward_into``/``backward_into``.
    """

    def __init__(self, activation: Activation) -> None:
        self.activation = activation
        self._param_names = ()
        self._buffers: dict[tuple[int, ...], tuple[Array, Array]] = {}

    @property  # type: ignore[override]
    def name(self) -> str:  # the activation's public name, so to_ref() round-trips
        return self.activation.name

    def get_params(self) -> dict[str, Any]:
        """The wrapped activation's parameters."""
        return self.activation.get_params()

    def forward(self, x: Array, training: bool = True) -> Array:
        if not training:
            return self.activation.forward(x)
        buffers = self._buffers.get(x.shape)
        if buffers is None or buffers[0].dtype != x.dtype:
            if len(self._buffers) > 4:  # a few batch shapes at most; drop stale ones
                self._buffers.clear()
            buffers = self._buffers[x.shape] = (np.empty_like(x), np.empty_like(x))
        self._x, self._y, self._dx = x, buffers[0], buffers[1]
        self.activation.forward_into(x, self._y)
        return self._y

    def backward(self, dy: Array) -> Array:
        self.activation.backward_into(self._x, self._y, dy, self._dx)
        return self._dx

    def __repr__(self) -> str:
        return f"ActivationLayer({self.activation!r})"
