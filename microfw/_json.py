"""JSON text read strictly: duplicate keys and integers too long to read are errors with
their path, never a silently kept last value or a bare ``ValueError``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from microfw.errors import JSONTextError, join_path

__all__ = ["JSONTextError", "loads"]


def loads(text: str, *, constants: bool = True) -> Any:
    """Parse ``text`` as :func:`json.loads` does (NaN and Infinity included unless
    ``constants`` is false), but refuse an object with a key twice, and integers longer than
    Python reads (4300 digits).

    Raises:
        json.JSONDecodeError: not JSON.
        RecursionError: nested too deeply.
        JSONTextError: a duplicate key, an integer too long (with its path) or, without
            ``constants``, NaN or Infinity.
    """
    repeated: list[tuple[dict[str, Any], list[str]]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) < len(items):
            seen: set[str] = set()
            dups = [k for k, _ in items if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
            repeated.append((obj, dups))
        return obj

    def big_int(digits: str) -> int | _TooLong:
        try:
            return int(digits)
        except ValueError:  # past sys.get_int_max_str_digits(): found after, with its path
            too_long.append(_TooLong(len(digits.lstrip("-"))))
            return too_long[-1]

    def no_constant(name: str) -> Any:
        raise JSONTextError("", f"{name} is not a number JSON allows")

    too_long: list[_TooLong] = []
    hooks: dict[str, Any] = {} if constants else {"parse_constant": no_constant}
    data = json.loads(text, object_pairs_hook=pairs, parse_int=big_int, **hooks)
    if too_long:
        first = too_long[0]
        where = _locate(data, lambda node: node is first)
        raise JSONTextError(where, f"an integer of {too_long[0].digits} digits, too long to read")
    if repeated:
        obj, keys = repeated[0]
        where = join_path(_locate(data, lambda node: node is obj), keys[0])
        raise JSONTextError(where, f"key {keys[0]!r} appears more than once in one object")
    return data


class _TooLong:
    """Stands for an integer too long to read until its path is known."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _locate(root: Any, found: Callable[[Any], bool]) -> str:
    """The path of the first node inside ``root`` that is ``found``, without recursion."""
    stack: list[tuple[str, Any]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if found(node):
            return path
        if isinstance(node, dict):
            stack += [(join_path(path, k), v) for k, v in reversed(node.items())]
        elif isinstance(node, list):
            stack += [(join_path(path, i), v) for i, v in reversed(list(enumerate(node)))]
    return ""
