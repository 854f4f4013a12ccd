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
import io
import re
import zipfile
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from microfw._files import open_regular
from microfw._npz import Header, read_npz
from microfw.core.interfaces import Array, Loss
from microfw.errors import DataError, NpzError

MAX_DATA_BYTES = 2**32
"""The largest array a data file may hold once read as float64 (4 GiB, 536,870,912 values),
checked from the ``.npy`` headers before any array data is read, and while a CSV is read."""
MAX_CSV_LINE = 2**24
"""The longest CSV line read (16 Mi characters)."""
_NUMBER = re.compile(
    r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)\s*",
    re.ASCII | re.IGNORECASE,
)
"""A CSV number: decimal ASCII digits, a point and an exponent (NaN and infinity are read,
then refused with their place); not ``1_000``, nor digits of other scripts, which Python's
``float`` accepts."""


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` ``(n_samples, n_features)``, targets ``y`` (or None) and their origin."""

    X: Array
    y: Array | None
    source: str
    feature_names: tuple[str, ...]


def load_data(
    path: str | Path,
    target: str | None = None,
    *,
    need_target: bool = True,
    n_features: int | None = None,
) -> Dataset:
    """Read a CSV or ``.npz`` data file.

    Args:
        path: the file; ``.npz`` is read as arrays, anything else as CSV.
        target: the CSV column holding the labels; for ``.npz``, the array (default ``y``).
        need_target: if true, a file without targets is an error.
        n_features: if given, an ``.npz`` whose ``X`` header declares another width is
            refused before its data is read.

    Raises:
        DataError: missing, empty or not a regular file, non-numeric cell, NaN or infinity,
            unknown target, duplicate column names, more than :data:`MAX_DATA_BYTES`.
    """
    path = Path(path)
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such data file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the data file ({exc.strerror or exc})") from None
    with f:
        if path.suffix == ".npz":
            data = _load_npz(f, path, target, need_target, n_features)
        else:
            data = _load_csv(f, path, target, need_target)
    _check_finite(data.X, path, "X")
    if data.y is not None:
        _check_finite(data.y, path, "y")
    return data


def _load_npz(
    f: IO[bytes], path: Path, target: str | None, need_target: bool, n_features: int | None
) -> Dataset:
    y_key = target or "y"

    def check(key: str, header: Header) -> None:
        # Every header before any data: a few kilobytes of zeros may declare gigabytes.
        if header.dtype.kind not in "biuf":
            raise NpzError(
                f"{key} must hold bool, integer or float numbers, got dtype {header.dtype}"
            )
        if header.size * 8 > MAX_DATA_BYTES:
            raise NpzError(
                f"{key} declares shape {list(header.shape)}: {header.size:,} values, more than "
                f"the limit of {MAX_DATA_BYTES // 8:,} (microfw.data.MAX_DATA_BYTES)"
            )
        if key == "X" and n_features is not None and header.shape[1:] != (n_features,):
            raise NpzError(
                f"X declares shape {list(header.shape)}; the model expects "
                f"(n_samples, {n_features})"
            )

    try:
        arrays = read_npz(f, check, max_member_bytes=MAX_DATA_BYTES + 2**16, keys={"X", y_key})
    except NpzError as exc:
        raise DataError(f"{path}: {exc}") from None
    if "X" not in arrays:
        raise DataError(f"{path}: no array 'X' (arrays: {', '.join(_names(f)) or 'none'})")
    X, y = arrays["X"], arrays.get(y_key)
    if y is None and (need_target or target is not None):
        raise DataError(
            f"{path}: no array {y_key!r} with the targets (arrays: {', '.join(_names(f))})"
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


def _names(f: IO[bytes]) -> list[str]:
    """The array names of an .npz archive already read once (for messages)."""
    f.seek(0)
    with zipfile.ZipFile(f) as archive:
        return [name.removesuffix(".npy") for name in archive.namelist()]


def _numeric(a: np.ndarray, path: Path, key: str) -> Array:
    # The kinds the model accepts: complex would lose its imaginary part in the cast, and
    # timedelta64 (a numpy "number") would become a count of its unit.
    if a.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: {key} must hold bool, integer or float numbers, got dtype {a.dtype}"
        )
    return a.astype(np.float64)


def _load_csv(f: IO[bytes], path: Path, target: str | None, need_target: bool) -> Dataset:
    # utf-8-sig: a byte-order mark (as spreadsheets write) is not part of the first name.
    text = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
    reader = csv.reader(_bounded_lines(text, path))  # blank rows skipped
    try:
        with text:
            return _parse_csv(reader, path, target, need_target)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None


def _parse_csv(reader: Any, path: Path, target: str | None, need_target: bool) -> Dataset:
    """The dataset of the CSV rows of ``reader``: a header, then numbers."""
    header = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [name.strip() for name in row]
            break
    if header is None:
        raise DataError(f"{path}: empty file (expected a header row and data rows)")
    _check_header(header, path)
    if target is None:
        if need_target:
            raise DataError(
                f"{path}: name the target column with --target (columns: {', '.join(header)})"
            )
    elif target not in header:
        raise DataError(
            f"{path}: no column {target!r} for the target (columns: {', '.join(header)})"
        )
    flat = array("d")
    limit = MAX_DATA_BYTES // 8
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        for j, cell in enumerate(row):
            if not _NUMBER.fullmatch(cell):
                raise DataError(
                    f"{path}: line {line}, column {header[j]!r}: not a number ({cell!r})"
                )
            flat.append(float(cell))
        if len(flat) > limit:
            raise DataError(
                f"{path}: more than {limit:,} values by line {line}, the limit "
                "(microfw.data.MAX_DATA_BYTES)"
            )
    if not flat:
        raise DataError(f"{path}: no data rows after the header")
    values = np.frombuffer(flat, dtype=np.float64).reshape(-1, len(header))
    if target is None:
        return Dataset(values, None, str(path), tuple(header))
    t = header.index(target)
    features = [j for j in range(len(header)) if j != t]
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {target!r}")
    return Dataset(values[:, features], values[:, t], str(path), tuple(header[j] for j in features))


def _check_header(header: list[str], path: Path) -> None:
    """Column names must be unique: a second ``y`` would silently become a feature."""
    seen: set[str] = set()
    repeated = [name for name in header if name in seen or seen.add(name)]  # type: ignore[func-returns-value]
    if repeated:
        raise DataError(
            f"{path}: column name(s) {', '.join(map(repr, dict.fromkeys(repeated)))} appear "
            f"more than once in the header ({', '.join(header)})"
        )


def _bounded_lines(text: IO[str], path: Path) -> Iterator[str]:
    """The lines of ``text``, each at most :data:`MAX_CSV_LINE` characters."""
    while True:
        line = text.readline(MAX_CSV_LINE + 1)
        if not line:
            return
        if len(line) > MAX_CSV_LINE and not line.endswith("\n"):
            raise DataError(f"{path}: a line longer than {MAX_CSV_LINE:,} characters")
        yield line


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


def match_columns(data: Dataset, features: Sequence[str], target: str | None = None) -> Dataset:
    """``data`` with its feature columns in the order of ``features``, matched by name.

    ``features`` are the names of the columns a model was trained on (and ``target`` that of
    its target column). Columns in another order are reordered; missing or unexpected names
    are a :class:`DataError` listing them, with a hint to pass ``--target`` when an
    unexpected column is named like the training target.
    """
    names = list(data.feature_names)
    if names == list(features):
        return data
    missing = [name for name in features if name not in names]
    unexpected = [name for name in names if name not in features]
    if not missing and not unexpected and len(set(names)) == len(names):
        order = [names.index(name) for name in features]
        return Dataset(data.X[:, order], data.y, data.source, tuple(features))
    problems = []
    if missing:
        problems.append(f"missing {', '.join(map(repr, missing))}")
    if unexpected:
        problems.append(f"unexpected {', '.join(map(repr, unexpected))}")
    if len(set(names)) != len(names):
        problems.append("repeated column names")
    message = (
        f"{data.source}: the columns do not match the model's: {'; '.join(problems)} "
        f"(the model was trained on {', '.join(features)})"
    )
    if target is not None and target in unexpected:
        message += f"; {target!r} was the training target: pass --target {target}"
    raise DataError(message)


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
