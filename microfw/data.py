"""Data files for the ``microfw`` command: CSV with a header, or ``.npz`` with ``X`` and ``y``.

* **CSV**: a header row, then one numeric row per example. ``target`` names the column that
  holds the labels; every other column is a feature, in file order.
* **npz**: arrays ``X`` ``(n_samples, n_features)`` and ``y`` ``(n_samples,)`` or
  ``(n_samples, n_outputs)``, read with ``allow_pickle=False``; ``target`` names another
  array for the targets instead of ``y``. The targets may be absent for prediction.

:func:`targets_for` shapes labels for a model: a single label column given to a model with
``k > 1`` outputs must hold the integer class labels ``0 .. k-1`` and is one-hot encoded
(the form ``categorical_crossentropy`` with a softmax output expects); otherwise the width of
``y`` must equal the model's output width. The loss then checks the values are in its domain.

Every problem is a :class:`DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microfw.core.interfaces import Array, Loss
from microfw.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` ``(n_samples, n_features)``, targets ``y`` (or None) and their origin."""

    X: Array
    y: Array | None
    source: str
    feature_names: tuple[str, ...]


def load_data(path: str | Path, target: str | None = None, *, need_target: bool = True) -> Dataset:
    """Read a CSV or ``.npz`` data file.

    Args:
        path: the file; ``.npz`` is read as arrays, anything else as CSV.
        target: the CSV column holding the labels; for ``.npz``, the array (default ``y``).
        need_target: if true, a file without targets is an error.

    Raises:
        DataError: missing or empty file, non-numeric cell, NaN or infinity, unknown target.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    if path.suffix == ".npz":
        data = _load_npz(path, target, need_target)
    else:
        data = _load_csv(path, target, need_target)
    _check_finite(data.X, path, "X")
    if data.y is not None:
        _check_finite(data.y, path, "y")
    return data


def _load_npz(path: Path, target: str | None, need_target: bool) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if "X" not in arrays:
        raise DataError(f"{path}: no array 'X' (arrays: {', '.join(arrays) or 'none'})")
    X, y = arrays["X"], arrays.get(target or "y")
    if y is None and (need_target or target is not None):
        raise DataError(
            f"{path}: no array {target or 'y'!r} with the targets (arrays: {', '.join(arrays)})"
        )
    X = _numeric(X, path, "X")
    if X.ndim != 2:
        raise DataError(f"{path}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise DataError(f"{path}: no examples (X has shape {X.shape})")
    if y is not None:
        y = _numeric(y, path, "y")
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise DataError(
                f"{path}: y must have one row per example of X ({X.shape[0]}), got shape {y.shape}"
            )
    names = tuple(f"x{i + 1}" for i in range(X.shape[1]))
    return Dataset(X, y, str(path), names)


def _numeric(a: np.ndarray, path: Path, key: str) -> Array:
    # The kinds the model accepts: complex would lose its imaginary part in the cast, and
    # timedelta64 (a numpy "number") would become a count of its unit.
    if a.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: {key} must hold bool, integer or float numbers, got dtype {a.dtype}"
        )
    return a.astype(np.float64)


def _load_csv(path: Path, target: str | None, need_target: bool) -> Dataset:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)  # blank rows skipped; each row kept with its line number
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file (expected a header row and data rows)")
    header = [name.strip() for name in rows[0][1]]
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    if target is None:
        if need_target:
            raise DataError(
                f"{path}: name the target column with --target (columns: {', '.join(header)})"
            )
    elif target not in header:
        raise DataError(
            f"{path}: no column {target!r} for the target (columns: {', '.join(header)})"
        )
    values = np.empty((len(body), len(header)))
    for i, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise DataError(
                    f"{path}: line {line}, column {header[j]!r}: not a number ({cell!r})"
                ) from None
    if target is None:
        return Dataset(values, None, str(path), tuple(header))
    t = header.index(target)
    features = [j for j in range(len(header)) if j != t]
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {target!r}")
    return Dataset(values[:, features], values[:, t], str(path), tuple(header[j] for j in features))


def _check_finite(a: Array, path: Path, key: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.argwhere(bad)[0]
        raise DataError(
            f"{path}: {key} holds {int(bad.sum())} NaN or infinite value(s), "
            f"the first at index {tuple(int(i) for i in where)}"
        )


def check_features(data: Dataset, n_features: int) -> None:
    """Raise :class:`DataError` unless ``data.X`` has ``n_features`` columns."""
    if data.X.shape[1] != n_features:
        raise DataError(
            f"{data.source}: the model expects {n_features} feature(s), the data has "
            f"{data.X.shape[1]} ({', '.join(data.feature_names)})"
        )


def targets_for(data: Dataset, n_outputs: int, loss: Loss | None = None) -> Array:
    """``data.y`` as ``(n_samples, n_outputs)`` for a model, checked against ``loss``'s domain.

    A single label column for ``n_outputs > 1`` is one-hot encoded from integer labels.

    Raises:
        DataError: no targets, wrong width, non-integer or out-of-range class labels, or
            values outside the loss's domain.
    """
    if data.y is None:
        raise DataError(f"{data.source}: no targets")
    y = data.y.reshape(len(data.y), -1)
    if loss is not None and loss.target_dim(n_outputs) == 1 and n_outputs > 1:
        if y.shape[1] != 1:
            raise DataError(
                f"{data.source}: loss {loss.name!r} takes one column of class labels, the "
                f"targets have {y.shape[1]} columns"
            )
        _one_hot(y[:, 0], n_outputs, data.source)  # checks the labels
    elif y.shape[1] == 1 and n_outputs > 1:
        y = _one_hot(y[:, 0], n_outputs, data.source)
    elif y.shape[1] != n_outputs:
        raise DataError(
            f"{data.source}: the model has {n_outputs} output(s), the targets have {y.shape[1]} "
            "column(s)"
        )
    if loss is not None:
        try:
            loss.check_targets(y)
        except ValueError as exc:
            raise DataError(f"{data.source}: targets unfit for loss {loss.name!r}: {exc}") from None
    return y


def _one_hot(labels: Array, k: int, source: str) -> Array:
    ints = labels.astype(np.int64)
    bad = (ints != labels) | (ints < 0) | (ints >= k)
    if bad.any():
        first = labels[np.argmax(bad)]
        raise DataError(
            f"{source}: a model with {k} outputs needs integer class labels 0..{k - 1} "
            f"(or {k} target columns); found {int(bad.sum())} other value(s), e.g. {first:g}"
        )
    return np.eye(k)[ints]
