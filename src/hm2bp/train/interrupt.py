"""Ctrl-C and SIGTERM during training: finish the current update, save a checkpoint, stop, say what was saved.

:class:`InterruptGuard` replaces the SIGINT/SIGTERM handlers for the duration of a training (main thread
only). The first signal only sets :attr:`InterruptGuard.signum`; the loop sees it after the update in
progress (or between two evaluation batches), writes a mid-epoch ``last.pt`` and raises
:class:`TrainingInterrupted` with a message naming the file and the position saved. A second Ctrl-C
raises :class:`KeyboardInterrupt` at once (no save), which :func:`hm2bp.train.train` turns into a
:class:`TrainingInterrupted` that names the checkpoint already on disk, if any.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

from ..errors import HM2BPError

__all__ = ["InterruptGuard", "TrainingInterrupted"]


class TrainingInterrupted(HM2BPError):
    """Training stopped on a signal; the message says what is on disk. ``signum``: the signal (or SIGINT)."""

    def __init__(self, message: str, signum: int = int(signal.SIGINT)) -> None:
        super().__init__(message)
        self.signum = int(signum)


class InterruptGuard:
    """Context manager: the first SIGINT/SIGTERM becomes a request (:attr:`signum`), a second SIGINT a
    :class:`KeyboardInterrupt`."""

    def __init__(self, *, announce: bool = True) -> None:
        self.signum: int | None = None
        self.announce = announce
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            name = signal.Signals(signum).name
            print(f"\nhm2bp: {name} received: saving a checkpoint after the current update "
                  f"(Ctrl-C again stops at once without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # pragma: no cover - e.g. an embedded interpreter
                    pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
