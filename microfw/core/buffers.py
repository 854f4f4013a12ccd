"""Work arrays reused from batch to batch, for layers and the fit loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from microfw.core.interfaces import Array


class WorkBuffer:
    """One array reused for every batch: sized by the largest batch seen, sliced for smaller.

    ``get((rows, *rest), dtype)`` returns the first ``rows`` rows of the array, a contiguous
    view; the array is reallocated only when a batch is larger, or the trailing shape or the
    dtype changes. The last, smaller batch of an epoch thus costs no new memory.
    """

    __slots__ = ("_key", "_view", "array")

    def __init__(self) -> None:
        self.array: Array | None = None
        self._key: tuple[tuple[int, ...], np.dtype[Any]] | None = None
        self._view: Array | None = None

    def get(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
        """A ``shape`` array of ``dtype`` whose contents are left over from earlier use."""
        key = (shape, dtype)
        if key == self._key:  # the usual case: the same batch shape as last time
            return self._view  # type: ignore[return-value]
        a = self.array
        if a is None or a.shape[0] < shape[0] or a.shape[1:] != shape[1:] or a.dtype != dtype:
            a = self.array = np.empty(shape, dtype)
        self._key, self._view = key, a[: shape[0]]
        return self._view
