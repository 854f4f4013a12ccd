"""Reading ``.npz`` archives without trusting them: every header before any array data.

``np.load`` allocates what an ``.npy`` header declares before reading a byte of data, so a
few kilobytes of deflated zeros can ask for gigabytes. :func:`read_npz` parses every
member's header first (:func:`numpy.lib.format.read_magic` and ``read_array_header_*``),
refuses members that are not plain numeric ``.npy`` arrays, headers whose declared size
disagrees with the member's size, members over a byte limit, and whatever the caller's
``check`` refuses (wrong names, shapes or dtypes); only then reads the arrays, with
``allow_pickle=False``.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy

from microfw.errors import NpzError


@dataclass(frozen=True)
class Header:
    """What an ``.npy`` header declares, read before any of its data."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool

    @property
    def size(self) -> int:
        """Number of elements (a Python int: no overflow for absurd shapes)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of data the header declares."""
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


def read_npz(
    source: IO[bytes],
    check: Callable[[str, Header], None],
    *,
    max_member_bytes: int,
    keys: Collection[str] | None = None,
) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of the ``.npz`` archive ``source``, by name (member name without ``.npy``).

    Args:
        source: a seekable binary file.
        check: called with each array's name and header before any data is read; raises
            :class:`NpzError` (or ``ValueError``) to refuse it.
        max_member_bytes: the largest uncompressed member accepted.
        keys: read only these arrays (the others are neither checked nor read); None: all.

    Raises:
        NpzError: not a zip archive, damaged bytes, a member that is not a numeric ``.npy``
            array, a header declaring more (or less) data than its member holds, a member
            over ``max_member_bytes``, or a refusal by ``check``.
    """
    try:
        with zipfile.ZipFile(source) as archive:
            members = _checked_members(archive, check, max_member_bytes, keys)
            return {key: _read(archive, info, key) for key, info in members.items()}
    except NpzError:
        raise
    except Exception as exc:  # zipfile, zlib, struct, EOF...: damaged or hostile bytes
        raise NpzError(f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None


def read_headers(source: IO[bytes], *, max_member_bytes: int) -> dict[str, Header]:
    """Every array's header, by name, reading no array data (the refusals of
    :func:`read_npz` but the caller's check and the data size, which it checks later)."""
    headers: dict[str, Header] = {}

    def keep(key: str, header: Header) -> None:
        headers[key] = header

    try:
        with zipfile.ZipFile(source) as archive:
            _checked_members(archive, keep, max_member_bytes, None, sizes=False)
    except NpzError:
        raise
    except Exception as exc:  # zipfile, zlib, struct, EOF...: damaged or hostile bytes
        raise NpzError(f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    return headers


def _checked_members(
    archive: zipfile.ZipFile,
    check: Callable[[str, Header], None],
    max_member_bytes: int,
    keys: Collection[str] | None,
    sizes: bool = True,
) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename
        if keys is not None and name.removesuffix(".npy") not in keys:
            continue
        if not name.endswith(".npy"):
            raise NpzError(f"member {name} is not an .npy array")
        key = name[: -len(".npy")]
        if key in members:
            raise NpzError(f"array {key!r} appears twice")
        if info.file_size > max_member_bytes:
            raise NpzError(
                f"array {key!r} would unpack to {info.file_size:,} bytes, more than the limit "
                f"({max_member_bytes:,})"
            )
        with archive.open(info) as stream:
            header = read_header(stream, key)
            offset = stream.tell()
        try:
            check(key, header)
        except NpzError:
            raise
        except ValueError as exc:
            raise NpzError(str(exc)) from None
        # The data read can never be more than the member's size; numpy, though, allocates
        # what the header declares first.
        if sizes and offset + header.nbytes != info.file_size:
            raise NpzError(
                f"array {key!r}: its header declares {header} ({header.nbytes:,} bytes of "
                f"data), the member holds {info.file_size - offset:,}"
            )
        members[key] = info
    return members


def read_header(stream: IO[bytes], key: str) -> Header:
    """Parse the ``.npy`` header at the start of ``stream``; refuse object dtypes (pickles)."""
    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(stream)
        else:
            raise ValueError(f".npy format version {version} is not read here")
    except NpzError:
        raise
    except Exception as exc:  # not .npy: raw bytes, a truncated or malformed header
        raise NpzError(f"array {key!r} is not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise NpzError(
            f"array {key!r} holds Python objects (dtype {dtype}), which only a pickle can "
            "restore; refused (read with allow_pickle=False)"
        )
    if any(d < 0 for d in shape):
        raise NpzError(f"array {key!r} declares a negative dimension {list(shape)}")
    return Header(tuple(shape), dtype, bool(fortran))


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> np.ndarray[Any, Any]:
    with archive.open(info) as stream:
        array = npy.read_array(stream, allow_pickle=False)
        if stream.read(1):  # reading to the end also checks the CRC
            raise NpzError(f"array {key!r} has bytes after its data")
    return array
