"""Reading and writing files safely: regular files only, bounded reads, atomic writes.

* :func:`open_regular` / :func:`read_regular` refuse what is not a regular file (a FIFO would
  block forever, ``/dev/zero`` never ends) before reading a byte, and bound what is read.
* :func:`atomic_write` writes a temporary file next to the target and renames it over the
  target. Temporary files are named ``.<target>.<host>.<pid>.<process>.<random>.tmp`` (``process``
  tells this process from a dead one that had its pid): the clean-up is
  armed before the file exists, and a later save removes the ones left by a process of this
  host that no longer runs (``kill -9``, a power cut), never those of a live save.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import socket
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from microfw.errors import NotRegularFileError, TooLargeError

TEMP_SUFFIX = ".tmp"
_PROCESS = secrets.token_hex(4)
"""Tells this process's temporary files from those of a dead process that had its pid."""


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symlinks followed).

    Opened without blocking, so a FIFO is refused instead of waiting for a writer.

    Raises:
        NotRegularFileError: a directory, FIFO, device or socket.
        OSError: missing or unreadable.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise NotRegularFileError(21, "is a directory, not a file", os.fspath(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _kind(mode)
            raise NotRegularFileError(22, f"is a {kind}, not a regular file", os.fspath(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Raises:
        NotRegularFileError: not a regular file.
        TooLargeError: more than ``limit`` bytes.
        OSError: missing or unreadable.
    """
    too_large = TooLargeError(27, f"larger than the limit of {limit:,} bytes", os.fspath(path))
    with open_regular(path) as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise too_large
        data = bytearray()
        while len(data) <= limit:  # in chunks: read(limit) would allocate the limit at once
            chunk = f.read(min(2**20, limit + 1 - len(data)))
            if not chunk:
                return bytes(data)
            data += chunk
    raise too_large


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def npz_bytes(arrays: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    """The bytes of an ``.npz`` of ``arrays`` (as :func:`numpy.savez` writes, stored), built
    like :func:`zip_bytes`: an interrupt stays a ``KeyboardInterrupt``. No pickle."""
    members = {}
    for name, array in arrays.items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
        members[f"{name}.npy"] = buffer.getvalue()
    return zip_bytes(members, compression=zipfile.ZIP_STORED)


def zip_bytes(
    members: Mapping[str, bytes | str], *, compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """A deflated zip archive of ``members``, built in memory.

    Built before any file exists, so an interrupt here leaves nothing to clean up; on a
    failure, closing the archive cannot replace the original error (a half-written member
    makes ``close`` raise a ``ValueError`` that would hide a Ctrl-C).
    """
    buffer = io.BytesIO()
    archive = _MemoryZip(buffer, "w", compression=compression)
    try:
        for name, data in members.items():
            archive.writestr(name, data)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            archive.close()
        raise
    archive.close()
    return buffer.getvalue()


class _MemoryZip(zipfile.ZipFile):
    """A zip written to memory: nothing to release when collected, so no ``close`` then
    (after an interrupt it would raise again, printed as an ignored exception)."""

    def __del__(self) -> None:
        pass


def atomic_write(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file, fsync, then a rename.

    ``sync=False`` skips the fsyncs, for a file rewritten often and derivable again (a reader
    or a killed process still never sees half a file; a power cut may lose the last version).
    A new file gets the mode ``0o666`` less the umask (as ``open`` gives); a replaced file
    keeps its mode. On any failure, Ctrl-C included, the target is untouched and the
    temporary file removed. Stale temporary files of the same target, left by processes of
    this host that are no longer running, are removed first.
    """
    path = Path(path)
    remove_stale_temps(path)
    try:
        mode: int | None = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = None
    tmp: Path | None = None
    try:
        while True:
            # Named before it exists, so the clean-up below covers every instant after its
            # creation; the name (this process and a random part) is nobody else's.
            tmp = temp_name(path)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                break
            except FileExistsError:
                tmp = None  # not ours (a 32-bit collision): never remove it
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    if sync:
        _fsync_directory(path.parent)


def temp_name(path: Path) -> Path:
    """A fresh temporary name for ``path``: ``.<name>.<host>.<pid>.<process>.<random>.tmp``."""
    return path.with_name(
        f".{path.name}.{_host()}.{os.getpid()}.{_PROCESS}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    )


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by dead processes of this host; return them."""
    pattern = re.compile(
        re.escape(f".{path.name}.{_host()}.")
        + r"(\d+)\.([0-9a-f]{8})\.[0-9a-f]{8}"
        + re.escape(TEMP_SUFFIX)
    )
    removed: list[Path] = []
    try:
        names = os.listdir(path.parent or ".")
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or _alive(int(match.group(1)), match.group(2)):
            continue
        stale = path.with_name(name)
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(stale).st_mode):
                os.unlink(stale)
                removed.append(stale)
    return removed


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _alive(pid: int, process: str) -> bool:
    """Whether the process that named a temporary file may still be writing it."""
    if pid == os.getpid():
        # This process (another thread may be saving), or a dead one that had its pid.
        return process == _PROCESS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # it exists (another user's), or cannot be asked: keep the file
    return True


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; not every platform or filesystem allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
