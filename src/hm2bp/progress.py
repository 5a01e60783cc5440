"""Progress of a long phase: a tqdm bar on a terminal, periodic log lines elsewhere, nothing when quiet.

One helper for every phase that can take more than a couple of seconds (a training epoch, an evaluation,
``hm2bp eval``, ``hm2bp plot``, feature extraction)::

    with progress(len(test_set), "evaluation") as bar:
        for batch in ...:
            ...
            bar.update(len(batch))

On a terminal (``stream.isatty()``) and with tqdm installed, a bar with the phase's name, rate and ETA.
Otherwise (a log file, a batch job, no tqdm) one line ``<name>: 1200/60000 samples (2.0%), 35.1 samples/s,
ETA 28m10s`` after the first ``first_s`` seconds (default 2 s, ``HM2BP_PROGRESS_FIRST`` in the
environment) and then every ``interval_s`` seconds (default 30 s, ``HM2BP_PROGRESS_INTERVAL``), plus a
closing line for a phase that printed any; a phase shorter than ``first_s`` prints nothing.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress", "default_interval", "format_duration", "progress"]


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h`` (rounded down to the shown unit)."""
    if not seconds == seconds or seconds == float("inf"):  # NaN or inf
        return "?"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{max(seconds, 0.0):.0f}s" if s else f"{max(seconds, 0.0):.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _env_seconds(name: str, default: float) -> float:
    try:
        return max(float(os.environ.get(name, default)), 0.0)
    except ValueError:
        return default


def default_interval() -> float:
    """Seconds between log lines off a terminal: ``HM2BP_PROGRESS_INTERVAL``, default 30."""
    return _env_seconds("HM2BP_PROGRESS_INTERVAL", 30.0)


class Progress:
    """Counts ``done`` of ``total`` units; see the module docstring for what it shows."""

    def __init__(self, total: int, desc: str, *, unit: str = "sample", enabled: bool = True,
                 stream: TextIO | None = None, first_s: float | None = None, interval_s: float | None = None,
                 initial: int = 0) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self._start = time.perf_counter()
        self._start_done = self.done
        self._next_line = self._start + (_env_seconds("HM2BP_PROGRESS_FIRST", 2.0) if first_s is None else first_s)
        self._interval = default_interval() if interval_s is None else interval_s
        self._lines = 0
        self._postfix: dict[str, Any] = {}
        self._bar: Any = None
        if enabled and _isatty(self.stream):
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=self.total, initial=self.done, desc=desc, leave=False, dynamic_ncols=True,
                                 unit=unit, file=self.stream)

    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more units done; ``postfix`` (e.g. ``loss="0.31"``) is shown next to the count."""
        self.done += n
        if not self.enabled:
            return
        if postfix:
            self._postfix = postfix
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            return
        now = time.perf_counter()
        if now >= self._next_line:
            self._line(now)
            self._next_line = now + max(self._interval, 0.5)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self._start
        rate = (self.done - self._start_done) / elapsed if elapsed > 0 else 0.0
        pct = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self._postfix.items())
        if final:
            tail = f"done in {format_duration(elapsed)}"
        else:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            tail = f"ETA {format_duration(left)}"
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}s{pct}, {rate:.1f} {self.unit}s/s{extra}, {tail}",
              file=self.stream, flush=True)
        self._lines += 1

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._lines:
            self._line(time.perf_counter(), final=True)
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(total: int, desc: str, *, unit: str = "sample", enabled: bool = True, **kw: Any) -> Progress:
    """A :class:`Progress` (use it as a context manager)."""
    return Progress(total, desc, unit=unit, enabled=enabled, **kw)
