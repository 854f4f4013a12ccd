"""Work arrays reused from batch to batch, for layers and the fit loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from microfw.interfaces import Array


class WorkBuffer:
    """One array reused for every batch: sized by the largest batch seen, sliced for smaller.

    ``get((rows, *rest), dtype)`` returns the first ``rows`` rows of the array, a contiguous
    view; the array is reallocated only when a batch is larger, or the trailing shape or the
    dtype changes. The last, smaller batch of an epoch thus costs no new memory.
    """

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: Array | None = None

    def get(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Array:
        """A ``shape`` array of ``dtype`` whose contents are left over from earlier use."""
        a = self.array
        if a is None or a.shape[0] < shape[0] or a.shape[1:] != shape[1:] or a.dtype != dtype:
            a = self.array = np.empty(shape, dtype)
        return a[: shape[0]]
