"""Exceptions raised by hm2bp. Every file-format error names the file and the problem."""

from __future__ import annotations

import os


class HM2BPError(Exception):
    """Base class of all hm2bp errors."""


class DataFormatError(HM2BPError, ValueError):
    """A file is missing, truncated, corrupt or of the wrong shape.

    The message always starts with the file's path, so a user can see which file to fix.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(HM2BPError, ValueError):
    """A configuration value is unknown, of the wrong type or impossible."""


class NumericalError(HM2BPError, FloatingPointError):
    """NaN/inf or an unstable quantity (e.g. a lateral loop gain >= 1) was detected."""


class LateralGainWarning(RuntimeWarning):
    """The output lateral-inhibition loop gain reached 1 or more (docs/algorithm.md §3.4, §7.15): Λ is then
    negative or infinite, as in the authors' code, which has no guard."""
