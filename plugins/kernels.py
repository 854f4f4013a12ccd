"""Compiled kernels of the built-in plugins, with numba (the ``fast`` extra).

NumPy spends one pass over an array per operation; right after a matrix product those passes
dominate what is left of an epoch. A kernel here does several operations in one pass. Each is
plain Python compiled by numba on first use (cached on disk where numba can) and
computes what its NumPy equivalent does: bit for bit, except the softmax kernel, whose exp and
row sums may differ in the last bit.

Without numba (or with ``NUMBA_DISABLE_JIT=1``), :func:`available` is false: the plugins take
their NumPy paths (and the fusion rules that need a kernel do not apply).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from microfw.core.interfaces import Array


@functools.cache
def available() -> bool:
    """Whether the kernels compile: numba imports (tried once, on the first question) and
    ``NUMBA_DISABLE_JIT`` (numba's debugging switch, which would run them as slow Python loops)
    is not set. A numba that is installed but fails to import (as after a NumPy upgrade it does
    not support) gives a warning and the NumPy paths."""
    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return False
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        warnings.warn(
            f"numba is installed but cannot be imported ({exc}); microfw uses its NumPy paths",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def bias_relu(x: Array, bias: Array, out: Array) -> None:
    """``out = maximum(x + bias, 0)``, ``bias`` ``(n,)`` added to every row of a 2-D ``x``
    (``out`` may be ``x``), in one pass (compiled only): the same bits as NumPy's add and
    maximum (NaN stays NaN, -0.0 becomes 0.0)."""
    _compiled(_bias_relu)(x, bias, out)


def _bias_relu(x: Any, bias: Any, out: Any) -> None:
    rows, cols = x.shape
    for i in range(rows):
        for j in range(cols):
            v = x[i, j] + bias[j]
            if v > 0 or v != v:  # positive, or NaN (propagated like np.maximum)
                out[i, j] = v
            else:
                out[i, j] = 0


def outer(a: Array, b: Array, out: Array) -> None:
    """``out[i, j] = a[i] * b[j]`` for 1-D ``a`` and ``b`` (compiled only), the same bits as
    ``np.multiply.outer``."""
    _compiled(_outer)(a, b, out)


def _outer(a: Any, b: Any, out: Any) -> None:
    for i in range(a.size):
        for j in range(b.size):
            out[i, j] = a[i] * b[j]


def softmax_rows(x: Array, out: Array) -> None:
    """``out[i] = exp(x[i] - max(x[i])) / sum(exp(x[i] - max(x[i])))`` for each row of a 2-D
    ``x``, one row at a time (compiled only: the softmax layer has its NumPy passes). Agrees
    with them to rounding (exp and the row sum may differ in the last bit); a row holding NaN,
    or infinities of both signs, gives NaN as there."""
    _compiled(_softmax_rows)(x, out)


def _softmax_rows(x: Any, out: Any) -> None:
    rows, cols = x.shape
    for i in range(rows):
        top = x[i, 0]
        for j in range(1, cols):
            if x[i, j] > top or x[i, j] != x[i, j]:  # NaN wins, as in np.maximum
                top = x[i, j]
        total = 0.0
        for j in range(cols):
            e = math.exp(x[i, j] - top)
            out[i, j] = e
            total += e
        for j in range(cols):
            out[i, j] /= total


def sgd_step(p: Array, g: Array, v: Array, lr: float, momentum: float, nesterov: bool) -> None:
    """One SGD step over 1-D ``p`` with gradient ``g`` and velocity ``v`` (unused without
    momentum), in one pass: ``p -= lr g``; with momentum ``v = momentum v - lr g`` and
    ``p += v`` (nesterov: ``p += momentum v - lr g``). Compiled only: NumPy callers keep
    their own passes. Scalars are taken in ``p``'s dtype, as NumPy does."""
    t = p.dtype.type
    _compiled(_sgd_step)(p, g, v, t(lr), t(momentum), nesterov)


def _sgd_step(p: Any, g: Any, v: Any, lr: Any, momentum: Any, nesterov: bool) -> None:
    if momentum == 0:
        for i in range(p.size):
            p[i] -= g[i] * lr
    elif nesterov:
        for i in range(p.size):
            step = g[i] * lr
            velocity = v[i] * momentum - step
            v[i] = velocity
            p[i] = (p[i] - step) + velocity * momentum
    else:
        for i in range(p.size):
            velocity = v[i] * momentum - g[i] * lr
            v[i] = velocity
            p[i] += velocity


def sgd_torch_step(
    p: Array, g: Array, b: Array, lr: float, momentum: float, nesterov: bool
) -> None:
    """One SGD step with PyTorch's momentum over 1-D arrays, in one pass (compiled only):
    ``b = momentum b + g`` and ``p -= lr b`` (nesterov: ``p -= lr (g + momentum b)``)."""
    t = p.dtype.type
    _compiled(_sgd_torch_step)(p, g, b, t(lr), t(momentum), nesterov)


def _sgd_torch_step(p: Any, g: Any, b: Any, lr: Any, momentum: Any, nesterov: bool) -> None:
    if nesterov:
        for i in range(p.size):
            buf = b[i] * momentum + g[i]
            b[i] = buf
            p[i] -= (g[i] + buf * momentum) * lr
    else:
        for i in range(p.size):
            buf = b[i] * momentum + g[i]
            b[i] = buf
            p[i] -= buf * lr


def adam_step(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    v_max: Array,
    *,
    lr: float,
    beta_1: float,
    beta_2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
    amsgrad: bool,
    step: int,
) -> None:
    """One Adam (or AdamW, ``decoupled``) step of ``torch.optim.Adam`` over 1-D arrays, in one
    pass (compiled only): the same operations in the same order as the NumPy path of the
    ``adam`` plugin. ``v_max`` is used only with ``amsgrad``; ``step`` counts from 1."""
    t = p.dtype.type
    bias_1 = 1 - beta_1**step
    bias_2_sqrt = math.sqrt(1 - beta_2**step)
    # Divisors are sqrt(v) / bias_2_sqrt + eps with eps > 0: never zero.
    _compiled(_adam_step, "numpy")(
        p,
        g,
        m,
        v,
        v_max,
        t(lr / bias_1),
        t(beta_1),
        t(1 - beta_1),
        t(beta_2),
        t(1 - beta_2),
        t(eps),
        t(bias_2_sqrt),
        t(0.0 if decoupled else weight_decay),
        t(1 - lr * weight_decay if decoupled else 1.0),
        amsgrad,
    )


def _adam_step(
    p: Any,
    g: Any,
    m: Any,
    v: Any,
    v_max: Any,
    step_size: Any,
    b1: Any,
    c1: Any,
    b2: Any,
    c2: Any,
    eps: Any,
    bias_2_sqrt: Any,
    coupled: Any,
    shrink: Any,
    amsgrad: bool,
) -> None:
    # Branch-free loops (so they vectorise): weight decay as exact identities when unused,
    # g + p * 0 and p * 1 (``coupled`` and ``shrink`` come so from adam_step).
    if amsgrad:
        for i in range(p.size):
            pi = p[i]
            gi = g[i] + pi * coupled
            mi = m[i] * b1 + gi * c1
            vi = v[i] * b2 + (gi * c2) * gi
            m[i] = mi
            v[i] = vi
            vi = max(v_max[i], vi)
            v_max[i] = vi
            p[i] = pi * shrink - (mi / (math.sqrt(vi) / bias_2_sqrt + eps)) * step_size
    else:
        for i in range(p.size):
            pi = p[i]
            gi = g[i] + pi * coupled
            mi = m[i] * b1 + gi * c1
            vi = v[i] * b2 + (gi * c2) * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi * shrink - (mi / (math.sqrt(vi) / bias_2_sqrt + eps)) * step_size


def rmsprop_step(
    p: Array,
    g: Array,
    square_avg: Array,
    grad_avg: Array,
    buf: Array,
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
) -> None:
    """One ``torch.optim.RMSprop`` step over 1-D arrays in one pass (compiled only), the
    operations and order of the ``rmsprop`` plugin's NumPy path. ``grad_avg`` is used only
    when ``centered``, ``buf`` only with ``momentum`` > 0."""
    t = p.dtype.type
    # Divisors are sqrt(...) + eps with eps > 0: never zero.
    _compiled(_rmsprop_step, "numpy")(
        p,
        g,
        square_avg,
        grad_avg,
        buf,
        t(lr),
        t(rho),
        t(1 - rho),
        t(eps),
        t(weight_decay),
        t(momentum),
        centered,
        momentum > 0,
    )


def _rmsprop_step(
    p: Any,
    g: Any,
    sq: Any,
    ga: Any,
    buf: Any,
    lr: Any,
    rho: Any,
    c: Any,
    eps: Any,
    wd: Any,
    momentum: Any,
    centered: bool,
    with_momentum: bool,
) -> None:
    for i in range(p.size):
        pi = p[i]
        gi = g[i] + pi * wd
        si = sq[i] * rho + (gi * c) * gi
        sq[i] = si
        if centered:
            ai = ga[i] * rho + gi * c
            ga[i] = ai
            x = gi / (math.sqrt(si - ai * ai) + eps)
        else:
            x = gi / (math.sqrt(si) + eps)
        if with_momentum:
            bi = buf[i] * momentum + x
            buf[i] = bi
            p[i] = pi - bi * lr
        else:
            p[i] = pi - x * lr


def adagrad_step(
    p: Array, g: Array, accumulator: Array, *, lr: float, eps: float, weight_decay: float
) -> None:
    """One ``torch.optim.Adagrad`` step over 1-D arrays in one pass (compiled only), with
    ``lr`` already decayed: ``s += g^2; p -= lr g / (sqrt(s) + eps)``."""
    t = p.dtype.type
    # Divisors are sqrt(s) + eps with eps > 0: never zero.
    _compiled(_adagrad_step, "numpy")(p, g, accumulator, t(lr), t(eps), t(weight_decay))


def _adagrad_step(p: Any, g: Any, acc: Any, lr: Any, eps: Any, wd: Any) -> None:
    for i in range(p.size):
        pi = p[i]
        gi = g[i] + pi * wd
        si = acc[i] + gi * gi
        acc[i] = si
        p[i] = pi - (gi / (math.sqrt(si) + eps)) * lr


@functools.cache
def _compiled(
    function: Callable[..., Any], error_model: Literal["python", "numpy"] = "python"
) -> Callable[..., Any]:
    """``function`` compiled by numba, cached on disk when its directory allows it.

    ``error_model="numpy"`` drops numba's check for division by zero (which would raise
    ``ZeroDivisionError`` and keeps the loop from vectorising), for kernels whose divisors
    cannot be zero.
    """
    import numba

    try:
        return numba.njit(cache=True, nogil=True, error_model=error_model)(function)
    except RuntimeError:  # no writable cache location: compile in memory each process
        return numba.njit(nogil=True, error_model=error_model)(function)


def erf(x: Array, out: Array) -> None:
    """``out[i] = math.erf(x[i])`` for 1-D ``x`` (compiled only). For float32 ``x`` numba
    calls the C library's float32 ``erff``: one unit in the last place off the NumPy path
    (float64 erf rounded to float32) for about 1% of elements."""
    _compiled(_erf)(x, out)


def _erf(x: Any, out: Any) -> None:
    for i in range(x.size):
        out[i] = math.erf(float(x[i]))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
"""splitmix64's constants (Steele, Lea and Flood 2014)."""


def dropout_mask(
    seed: int, threshold: int, x: Array, scale: float, keep: Array, out: Array
) -> None:
    """For every element ``i`` of 2-D ``x`` (row-major): ``keep[i] = splitmix64(seed, i) >>
    32 >= threshold`` and ``out[i] = x[i] * keep[i] * scale`` (compiled only; the NumPy twin
    is :func:`microfw_plugins.ops.dropout_keep`, with the same bits)."""
    _compiled(_dropout_mask)(
        np.uint64(seed), np.uint64(threshold), x, x.dtype.type(scale), keep, out
    )


def _dropout_mask(seed: Any, threshold: Any, x: Any, scale: Any, keep: Any, out: Any) -> None:
    rows, cols = x.shape
    s = seed
    for i in range(rows):
        for j in range(cols):
            z = s + np.uint64(i * cols + j + 1) * _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _MIX1
            z = (z ^ (z >> np.uint64(27))) * _MIX2
            z = z ^ (z >> np.uint64(31))
            k = (z >> np.uint64(32)) >= threshold
            keep[i, j] = k
            out[i, j] = x[i, j] * scale if k else x[i, j] * 0


def batch_norm_train(
    x: Array, eps: float, gamma: Array, beta: Array, xhat: Array, y: Array, stats: Array
) -> None:
    """Training-mode batch normalisation of 2-D ``x`` in three passes (compiled only):
    ``stats[0]`` the column means, ``stats[1]`` the biased variances, ``stats[2]`` ``1 /
    sqrt(var + eps)`` (float64 sums), ``xhat = (x - mean) stats[2]`` and ``y = xhat gamma +
    beta``. The NumPy twin is :class:`microfw_plugins.mode_layers.BatchNorm`'s own passes."""
    _compiled(_batch_norm_train)(x, eps, gamma, beta, xhat, y, stats)


def _batch_norm_train(
    x: Any, eps: float, gamma: Any, beta: Any, xhat: Any, y: Any, stats: Any
) -> None:
    rows, cols = x.shape
    mean, var, inv = stats[0], stats[1], stats[2]
    mean[:] = 0.0
    var[:] = 0.0
    for i in range(rows):
        for j in range(cols):
            mean[j] += x[i, j]
    for j in range(cols):
        mean[j] /= rows
    for i in range(rows):
        for j in range(cols):
            d = x[i, j] - mean[j]
            var[j] += d * d
    for j in range(cols):
        var[j] /= rows
        inv[j] = 1.0 / math.sqrt(var[j] + eps)
    for i in range(rows):
        for j in range(cols):
            h = (x[i, j] - mean[j]) * inv[j]
            xhat[i, j] = h
            y[i, j] = h * gamma[j] + beta[j]


def batch_norm_backward(dy: Array, xhat: Array, factor: Array, sums: Array, dx: Array) -> None:
    """``sums[0] = sum(dy)``, ``sums[1] = sum(dy xhat)`` per column (float64), then ``dx =
    factor (dy - sums[0] / m - xhat sums[1] / m)`` (compiled only), in two passes."""
    _compiled(_batch_norm_backward)(dy, xhat, factor, sums, dx)


def _batch_norm_backward(dy: Any, xhat: Any, factor: Any, sums: Any, dx: Any) -> None:
    rows, cols = dy.shape
    s, sx = sums[0], sums[1]
    s[:] = 0.0
    sx[:] = 0.0
    for i in range(rows):
        for j in range(cols):
            s[j] += dy[i, j]
            sx[j] += dy[i, j] * xhat[i, j]
    for i in range(rows):
        for j in range(cols):
            dx[i, j] = factor[j] * (dy[i, j] - s[j] / rows - xhat[i, j] * (sx[j] / rows))
