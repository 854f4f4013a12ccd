"""Every exception class microfw raises on purpose, each exported from ``microfw``.

All derive from :class:`MicrofwError`; those about bad input are also ``ValueError`` (and
:class:`MissingExtraError` an ``ImportError``), so callers may catch either.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from microfw.train.loop import History


class MicrofwError(Exception):
    """Base class of every error microfw raises on purpose."""


class PluginError(MicrofwError):
    """A plugin is broken, duplicated, of the wrong kind or cannot be loaded."""


class PluginNotFoundError(PluginError, LookupError):
    """A name does not match any registered plugin of the requested kind."""


class DuplicatePluginError(PluginError):
    """Two different classes claim the same name within one kind."""


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is, what is wrong, and the value received."""

    path: str
    message: str
    value: Any = None
    has_value: bool = False

    def __repr__(self) -> str:  # the value may be an integer too long for repr()
        return f"Problem({self.path!r}, {self.message!r}, {short_repr(self.value)})"

    def __str__(self) -> str:
        where = _cut(self.path, 200) or "<root>"
        got = f" (got {short_repr(self.value)})" if self.has_value else ""
        return printable(f"{where}: {self.message}{got}")


_SHALLOW = reprlib.Repr()
_SHALLOW.maxlevel = 3


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; nesting too deep to print shows as ``...``."""
    try:
        try:
            text = repr(value)
        except RecursionError:  # a deeply nested spec value must not hide the problem it has
            text = _SHALLOW.repr(value)
    except ValueError:  # an integer past sys.get_int_max_str_digits() (4300 digits)
        if isinstance(value, int):
            digits = int(abs(value).bit_length() * math.log10(2)) + 1
            text = f"<an integer of about {digits:,} digits>"
        else:
            text = f"<{type(value).__name__} holding an integer too long to print>"
    return _cut(text, limit)


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode (lone surrogates from JSON ``\\ud800``) escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SpecError(MicrofwError, ValueError):
    """A spec or a plugin's parameters are invalid; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid spec{f' {source}' if source else ''}: {len(self.problems)} problem(s)"
        super().__init__(printable("\n".join([head, *(f"  - {p}" for p in self.problems)])))

    def prefixed(self, prefix: str) -> SpecError:
        """The same problems with ``prefix`` prepended to every path."""
        return SpecError([join_path_problem(prefix, p) for p in self.problems], source=self.source)


class SpecWarning(MicrofwError, UserWarning):
    """Advice about a spec that is valid but probably not what was meant (the spec linter,
    :mod:`microfw.spec.lint`): ``path`` says where (``layers[2]``), ``message`` what. A
    ``UserWarning`` (and, once made an error, a :class:`MicrofwError`).

    A warning, never an error: silence it with ``warnings.filterwarnings("ignore",
    category=microfw.SpecWarning)``; make it one with ``"error"`` (``microfw validate
    --strict`` does).
    """

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(printable(f"{path or '<root>'}: {message}"))


def join_path(prefix: str, path: str | int) -> str:
    """Join spec paths the way users write them: ``layers[2].units``."""
    if isinstance(path, int):
        return f"{prefix}[{path}]"
    if not prefix:
        return path
    if not path:
        return prefix
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def join_path_problem(prefix: str, problem: Problem) -> Problem:
    return Problem(
        join_path(prefix, problem.path), problem.message, problem.value, problem.has_value
    )


class ModelFileError(MicrofwError, ValueError):
    """A model file cannot be loaded: wrong format, missing plugins, or mismatched weights."""


class DataError(MicrofwError, ValueError):
    """A data file is missing, unreadable, or does not fit the model."""


class PlotError(MicrofwError):
    """A plot cannot be drawn (the input does not fit) or its file cannot be written."""


class TrainingError(MicrofwError):
    """Training cannot go on (a loss or the weights became NaN or infinite); the message says
    where, ``epoch`` and ``batch`` are where it happened and ``history`` what was recorded
    before."""

    def __init__(
        self, message: str, *, epoch: int, history: History, batch: int | None = None
    ) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.history = history


class OnnxExportError(MicrofwError):
    """A model cannot be exported to ONNX: a plugin without an ONNX mapping (see
    :mod:`microfw.onnx`)."""


class NotRegularFileError(MicrofwError, OSError):
    """The path exists but is not a regular file (a directory, FIFO, device or socket)."""


class TooLargeError(MicrofwError, OSError):
    """A file holds more bytes than the reader accepts."""


class JSONTextError(MicrofwError, ValueError):
    """JSON text that cannot be taken as data; ``path`` says where (``""`` for the whole)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<root>'}: {message}")
        self.path = path
        self.message = message


class NpzError(MicrofwError, ValueError):
    """An ``.npz`` archive, or one array in it, is unreadable or refused; the message says why."""


class SpaceError(MicrofwError, ValueError):
    """A search space is invalid; ``problems`` lists every one of them with its path."""

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" {source}" if source else ""
        head = f"invalid search space{where}: {len(self.problems)} problem(s)"
        super().__init__(printable("\n".join([head, *(f"  - {p}" for p in self.problems)])))


class SweepError(MicrofwError, ValueError):
    """A sweep cannot start or go on (output directory in use, resume mismatch...)."""


class WorkerError(MicrofwError):
    """Worker processes keep dying before they finish a trial."""


class MissingExtraError(MicrofwError, ImportError):
    """An optional dependency is missing (or fails to import); the message names the pip command.

    ``name`` is the module that failed to import, ``extra`` the microfw extra that installs
    it and ``pip_command`` the command to run (``pip install 'microfw[plot]'``).
    """

    def __init__(
        self, module: str, extra: str, what: str, *, reason: str = "", hint: str = ""
    ) -> None:
        self.extra = extra
        self.pip_command = f"pip install 'microfw[{extra}]'"
        package = module.partition(".")[0]
        why = reason or "is not installed"
        message = f"{what} needs {package}, which {why}: {self.pip_command}"
        super().__init__(message + (f" ({hint})" if hint else ""), name=module)
