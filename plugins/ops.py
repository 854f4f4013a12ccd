"""Array operations shared by the built-in plugins and their fusion rules.

Plain NumPy in the caller's buffers, with the compiled kernels of :mod:`.kernels` where they
pay. Each function computes one formula; the plugins read as their maths and call these.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from microfw import Array, WorkBuffer

from . import kernels


def sigmoid_into(x: Array, out: Array) -> None:
    """out = 1 / (1 + exp(-x)), the seeds' formula, with -x capped so exp() cannot overflow.

    The cap, -log(tiny) (708.4 in float64, 87.3 in float32), makes the smallest result the
    dtype's smallest normal number (2.2e-308, 1.2e-38): below x = -708.4 the true value is
    smaller still, and denormal numbers, which slow every later operation, never appear.
    ``out`` may be ``x``.
    """
    np.negative(x, out=out)
    np.minimum(out, exp_cap(out.dtype), out=out)
    np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)


@cache
def exp_cap(dtype: np.dtype[Any]) -> Any:
    """-log of the smallest normal number of ``dtype``."""
    return -np.log(np.finfo(dtype).tiny)


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)) in a new array, without overflow."""
    out = np.empty_like(x)
    sigmoid_into(x, out)
    return out


def softmax_into(x: Array, out: Array, rows: WorkBuffer) -> None:
    """Row-wise softmax of a 2-D ``x`` into ``out``; ``rows`` is a work buffer of one value per
    row. Subtracting the row maximum keeps exp() in (0, 1]: no overflow for large inputs.

    Small arrays (up to 4096 values) take the compiled row-by-row kernel, where per-call costs
    dominate; larger ones NumPy's vectorised passes (see the benchmarks' README for timings).
    """
    if x.size <= 4096 and kernels.available():
        kernels.softmax_rows(x, out)
        return
    per_row = rows.get((x.shape[0],), x.dtype)
    row_max(x, out=per_row)
    np.subtract(x, per_row[:, None], out=out)
    np.exp(out, out=out)
    row_sum(out, out=per_row)
    out /= per_row[:, None]


def logsumexp_rows(x: Array) -> Array:
    """log(sum(exp(x))) of each row of a 2-D ``x``, without overflow or underflow."""
    top = row_max(x, out=np.empty(x.shape[0], x.dtype))
    shifted = np.subtract(x, top[:, None])
    np.exp(shifted, out=shifted)
    total = row_sum(shifted, out=np.empty(x.shape[0], x.dtype))
    np.log(total, out=total)
    total += top
    return total


def row_max(x: Array, out: Array) -> Array:
    """The maximum of each row of a 2-D ``x`` into ``out`` ``(n_rows,)``.

    For a few columns, a running maximum over them is several times faster than NumPy's
    reduction along short rows; the result is the same.
    """
    if x.shape[1] > 32:
        return np.maximum.reduce(x, axis=1, out=out)
    np.copyto(out, x[:, 0])
    for j in range(1, x.shape[1]):
        np.maximum(out, x[:, j], out=out)
    return out


def row_sum(x: Array, out: Array) -> Array:
    """The sum of each row of a 2-D ``x`` into ``out`` ``(n_rows,)``, as a BLAS product with
    ones (faster than ``np.add.reduce`` along short rows)."""
    return np.matmul(x, ones(x.shape[1], x.dtype), out=out)


_ONES: dict[np.dtype[Any], Array] = {}


def ones(n: int, dtype: np.dtype[Any]) -> Array:
    """``n`` ones of ``dtype``, read-only: a view of one array per dtype, grown when a longer
    one is asked for (column and row sums are products with it)."""
    vector = _ONES.get(dtype)
    if vector is None or vector.shape[0] < n:
        vector = _ONES[dtype] = np.ones(n, dtype)
        vector.flags.writeable = False
    return vector[:n]


def dense_backward(
    x: Array, dz: Array, W: Array, dW: Array, db: Array | None, dx: WorkBuffer | None
) -> Array | None:
    """Gradients of ``z = x W + b``: ``dW = x^T dz``, ``db`` the column sums of ``dz``, and
    ``dx = dz W^T`` in ``dx``'s buffer (skipped, returning None, when ``dx`` is None).

    The column sums are a BLAS product with ones, as for ``dW``. A one-unit layer's input
    gradient is an outer product, faster compiled (or with einsum) than a GEMM with k = 1.
    """
    np.matmul(x.T, dz, out=dW)
    if db is not None:
        np.matmul(ones(dz.shape[0], dz.dtype), dz, out=db)
    if dx is None:
        return None
    out = dx.get((dz.shape[0], W.shape[0]), W.dtype)
    if W.shape[1] == 1:
        if kernels.available():
            kernels.outer(dz[:, 0], W[:, 0], out)
        elif out.size >= 1024:
            np.einsum("i,j->ij", dz[:, 0], W[:, 0], out=out, casting="same_kind")
        else:
            np.multiply(dz, W.T, out=out)
    else:
        np.matmul(dz, W.T, out=out)
    return out


_erf_object = np.frompyfunc(math.erf, 1, 1)


def erf(x: Array) -> Array:
    """The error function element-wise, in ``x``'s dtype: ``math.erf`` (the C library's, as
    torch uses) on every element, through the compiled kernel when numba is available."""
    out = np.empty(x.shape, x.dtype)  # C order, so that reshape(-1) is a view
    if kernels.available():
        kernels.erf(np.ravel(x), out.reshape(-1))
    else:
        out[...] = _erf_object(x.astype(np.float64))
    return out


def dropout_keep(seed: int, threshold: int, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """The dropout mask of :func:`.kernels.dropout_mask` in NumPy: element ``i`` (row-major,
    from 0) is kept where the high 32 bits of ``splitmix64(seed + (i + 1) * golden)`` are at
    least ``threshold``."""
    z = np.arange(1, math.prod(shape) + 1, dtype=np.uint64)
    z *= kernels._GOLDEN  # unsigned arithmetic wraps around, as splitmix64 wants
    z += np.uint64(seed)
    z ^= z >> np.uint64(30)
    z *= kernels._MIX1
    z ^= z >> np.uint64(27)
    z *= kernels._MIX2
    z ^= z >> np.uint64(31)
    z >>= np.uint64(32)
    keep: NDArray[np.bool_] = (z >= np.uint64(threshold)).reshape(shape)
    return keep
