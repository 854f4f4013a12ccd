"""Reading and rewriting the members of a saved model file (a zip), for tests that damage it."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def members(path: Path) -> dict[str, bytes]:
    """Every member of the zip at ``path``, by name."""
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def replace(path: Path, **new: bytes | None) -> None:
    """Replace (or with None remove) members of a saved model file."""
    contents = {**members(path), **new}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            if data is not None:
                archive.writestr(name, data)


def edit_json(path: Path, member: str, change: Callable[[Any], object]) -> None:
    """Rewrite the JSON member ``member`` after ``change`` has edited its data in place."""
    data = json.loads(members(path)[member])
    change(data)
    replace(path, **{member: json.dumps(data).encode()})


def npz(**arrays: Any) -> bytes:
    """``arrays`` as the bytes of an ``.npz`` file."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
