"""The data columns a model was trained on, kept in its model file's ``meta.json``.

``microfw fit`` saves the names of the feature columns (in the order the model reads them)
and of the target column; ``microfw predict`` and ``evaluate`` then match a CSV's columns by
name (:func:`microfw.data.match_columns`). Models saved from Python have none, and their
data is read in file order.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any

from microfw.errors import ModelFileError
from microfw.io import META

_META_LIMIT = 2**20


@dataclass(frozen=True)
class Columns:
    """Names of the feature columns, in the model's input order, and of the target column."""

    features: tuple[str, ...]
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """As stored in ``meta.json``: ``{"features": [...], "target": name or null}``."""
        return {"features": list(self.features), "target": self.target}


def saved_columns(path: str | os.PathLike[str]) -> Columns | None:
    """The training columns stored in the model file at ``path``, or None if it has none.

    Raises :class:`~microfw.ModelFileError` if the file cannot be read or its record of the
    columns is malformed.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.getinfo(META).file_size > _META_LIMIT:
                raise ModelFileError(f"{path}: {META} is larger than {_META_LIMIT:,} bytes")
            meta = json.loads(archive.read(META).decode("utf-8"))
    except ModelFileError:
        raise
    except Exception as exc:  # zipfile, zlib, KeyError (no member), JSON, UTF-8
        raise ModelFileError(f"{path}: cannot read {META} ({type(exc).__name__}: {exc})") from None
    record = meta.get("columns") if isinstance(meta, dict) else None
    if record is None:
        return None
    features = record.get("features") if isinstance(record, dict) else None
    target = record.get("target") if isinstance(record, dict) else None
    if (
        not isinstance(features, list)
        or not all(isinstance(name, str) for name in features)
        or not isinstance(target, str | None)
    ):
        raise ModelFileError(
            f'{path}: {META} \'columns\' must be {{"features": [names], "target": name or '
            f"null}}, got {json.dumps(record)[:200]}"
        )
    return Columns(tuple(features), target)
