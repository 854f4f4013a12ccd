"""Ctrl-C during training: the current update finishes, then ``KeyboardInterrupt``.

An optimizer step walks the whole parameter array (in chunks); an interrupt landing in the
middle would leave weights the run never had, half old and half new. While :func:`deferred`
is active in the main thread, SIGINT only records that it came; the fit loop calls
:meth:`Deferred.check` between updates, which raises ``KeyboardInterrupt`` there. A second
Ctrl-C before that point interrupts at once (the escape hatch for a step that never ends).
Outside the main thread signals cannot be handled, and nothing changes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Deferred:
    """Whether an interrupt came while updates were running."""

    def __init__(self) -> None:
        self.pending = False

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if Ctrl-C came since the last check."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[Deferred]:
    """Hold SIGINT inside the block until :meth:`Deferred.check` (see the module doc)."""
    state = Deferred()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # someone else handles it: leave it alone
        yield state
        return

    def handler(signum: int, frame: FrameType | None) -> Any:
        if state.pending:  # the second Ctrl-C: now
            raise KeyboardInterrupt
        state.pending = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)
