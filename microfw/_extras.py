"""Optional dependencies, imported on first use: one error, naming the pip command, if absent."""

from __future__ import annotations

import importlib
from types import ModuleType

from microfw.errors import MissingExtraError


def require(module: str, extra: str, what: str, *, hint: str = "") -> ModuleType:
    """Import ``module``, which the ``extra`` of microfw installs, for ``what`` (the feature).

    Raises:
        MissingExtraError: ``module`` cannot be imported; its message says what needs it and
            the pip command (``pip install 'microfw[plot]'``), with ``hint`` appended.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        absent = isinstance(exc, ModuleNotFoundError) and _within(module, exc.name)
        reason = "" if absent else f"cannot be imported: {exc}"
        raise MissingExtraError(module, extra, what, reason=reason, hint=hint) from exc


def _within(module: str, missing: str | None) -> bool:
    """Whether the missing module is ``module`` or one of its parent packages."""
    return missing is not None and (module == missing or module.startswith(missing + "."))
