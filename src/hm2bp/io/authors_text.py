"""Shared pieces of the authors' text formats (docs/algorithm.md §6.2): size arguments, decoding, number tokens."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hm2bp.errors import ConfigError, DataFormatError

_SLACK_BYTES = 1 << 16

_INT_RE = re.compile(r"-?\d{1,18}")
_SPIKE_LINE_RE = re.compile(r"[ \t]*(-?\d{1,18})[ \t]+(-?\d{1,18})[ \t]*")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*_(\d{1,18})")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NONFINITE_WORDS = frozenset({"nan", "inf", "infinity"})

# Bytes allowed inside a float file: digits, sign, point, exponent and ASCII whitespace.
_FLOAT_BYTES = np.zeros(256, dtype=bool)
for _c in b"0123456789+-.eE \t\n\r\v\f":
    _FLOAT_BYTES[_c] = True
_WS_BYTES = np.zeros(256, dtype=bool)
for _c in b" \t\n\r\v\f":
    _WS_BYTES[_c] = True
del _c


def _check_size_arg(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """Validate a caller-supplied size (int >= 1, or >= 0 when allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '>= 1'}, got {v}")
    return v


def _line_of(data: bytes | str, offset: int) -> int:
    if isinstance(data, bytes):
        return data.count(b"\n", 0, offset) + 1
    return data.count("\n", 0, offset) + 1


def _decode(path: Path, data: bytes, encoding: str = "ascii") -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        bad = data[e.start]
        raise DataFormatError(
            path, f"not a text file: byte 0x{bad:02x} at offset {e.start} (line {_line_of(data, e.start)}) "
            f"is not {encoding.upper()}"
        ) from None


def _short(token: str | bytes, limit: int = 40) -> str:
    s = token.decode("latin-1") if isinstance(token, bytes) else token
    return repr(s if len(s) <= limit else s[:limit] + "...")


def _float_token_problem(token: str) -> str:
    if token.lower().lstrip("+-") in _NONFINITE_WORDS:
        return f"non-finite value {_short(token)}"
    return f"non-numeric token {_short(token)}"


def _tokens_to_float(
    path: Path, tokens: Sequence[str] | Sequence[bytes], where: Any = None
) -> np.ndarray:
    """Convert number tokens to float64, rejecting anything non-numeric or non-finite.

    ``where(i)`` gives a human description of the position of token ``i`` (for error messages).
    """
    describe = where if where is not None else (lambda i: f"token {i + 1}")
    toks: list[str | bytes] = list(tokens)
    if len(toks) == 0:
        return np.zeros(0, dtype=np.float64)
    # numpy accepts tokens such as "1_0" or "nan"; reject any character outside a plain float first.
    def as_bytes(t: str | bytes) -> bytes:
        return t if isinstance(t, bytes) else t.encode("utf-8", "replace")

    joined = b" ".join(as_bytes(t) for t in toks)
    if not _FLOAT_BYTES[np.frombuffer(joined, dtype=np.uint8)].all():
        for i, t in enumerate(toks):
            if not _FLOAT_BYTES[np.frombuffer(as_bytes(t), dtype=np.uint8)].all():
                ts = as_bytes(t).decode("latin-1")
                raise DataFormatError(path, f"{_float_token_problem(ts)} at {describe(i)}")
    try:
        values = np.array(toks).astype(np.float64)
    except (ValueError, TypeError, OverflowError):
        for i, t in enumerate(toks):
            ts = t.decode("latin-1") if isinstance(t, bytes) else t
            try:
                float(ts)
            except ValueError:
                raise DataFormatError(path, f"{_float_token_problem(ts)} at {describe(i)}") from None
        raise DataFormatError(path, "non-numeric token") from None  # pragma: no cover
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        i = int(bad[0])
        raise DataFormatError(path, f"non-finite value {_short(tokens[i])} at {describe(i)}")
    return values


def _parse_float_file(path: Path, data: bytes) -> np.ndarray:
    """All whitespace-separated floats of a file, as float64 (vectorised)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    bad = np.flatnonzero(~_FLOAT_BYTES[buf])
    if bad.size:
        off = int(bad[0])
        start = off
        while start > 0 and not _WS_BYTES[buf[start - 1]]:
            start -= 1
        end = off
        while end < len(data) and not _WS_BYTES[buf[end]]:
            end += 1
        token = data[start:end].decode("latin-1")
        raise DataFormatError(
            path, f"{_float_token_problem(token)} at offset {start} (line {_line_of(data, start)})"
        )
    tokens = data.split()
    return _tokens_to_float(path, tokens)


def _to_float32(path: Path, values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise DataFormatError(
            path, f"value {values.flat[int(bad[0])]!r} does not fit in float32 (entry {int(bad[0])})"
        )
    return out
