"""The authors' raw inputs and configs (docs/algorithm.md §6.2): the Lyon-ear matrix and ``KEY = value;`` files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from hm2bp.errors import DataFormatError

from .authors_text import (
    _KEY_RE,
    _check_size_arg,
    _decode,
    _line_of,
    _short,
    _tokens_to_float,
)
from .bounded import read_bounded as _read_bytes

PathLike = str | os.PathLike[str]


def read_lyon_matrix(path: PathLike, n_channels: int = 78) -> np.ndarray:
    """Read an ASCII Lyon-ear matrix (``test/ti_alpha/*/*.dat``) into float64 ``[n_channels, n_frames]``.

    One row per cochlear channel (78), each holding the same number of whitespace-separated floats.
    Ragged rows, a wrong row count, empty rows, non-numeric or non-finite values are a
    :class:`DataFormatError`.
    """
    n_channels = _check_size_arg("n_channels", n_channels)
    real, data = _read_bytes(path, 256 << 20)
    text = _decode(real, data)
    rows: list[list[str]] = []
    row_lines: list[int] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        parts = raw.split()
        if parts:
            rows.append(parts)
            row_lines.append(lineno)
    if len(rows) != n_channels:
        raise DataFormatError(real, f"expected {n_channels} rows (channels), found {len(rows)}")
    n_frames = len(rows[0])
    for r, parts in enumerate(rows):
        if len(parts) != n_frames:
            raise DataFormatError(
                real, f"ragged matrix: line {row_lines[r]} has {len(parts)} values, the first row has "
                f"{n_frames}"
            )
    flat = [t for parts in rows for t in parts]
    values = _tokens_to_float(
        real, flat, lambda i: f"line {row_lines[i // n_frames]}, column {i % n_frames + 1}"
    )
    return values.reshape(n_channels, n_frames)


def _strip_comments(real: Path, text: str) -> str:
    """``text`` with every ``#...#`` comment blanked out, newlines kept so that line numbers stay right."""
    pieces: list[str] = []
    pos = 0
    while True:
        start = text.find("#", pos)
        if start < 0:
            pieces.append(text[pos:])
            return "".join(pieces)
        end = text.find("#", start + 1)
        if end < 0:
            raise DataFormatError(real, f"line {_line_of(text, start)}: unterminated '#' comment")
        pieces.append(text[pos:start])
        pieces.append(re.sub(r"[^\n]", " ", text[start : end + 1]))
        pos = end + 1


def read_authors_config(path: PathLike) -> dict[str, Any]:
    """Parse an authors' config file (``Config/*.txt``).

    Syntax: ``KEY = value;`` statements; ``#...#`` comments (paired ``#``, as the authors' parser strips
    them; they may sit anywhere, including inside a line); ``[ ... ]`` blocks, one per layer.

    Returns ``{"globals": {KEY: value}, "layers": [{KEY: value}, ...], "duplicates": [...]}``. Values are
    strings with surrounding whitespace stripped. A key repeated in one section keeps its last value and
    is recorded in ``"duplicates"`` as ``{"layer": None | index, "name": layer NAME or None, "key": KEY,
    "values": [every value, in order]}`` (the CNN test config repeats ``refOutputTrainPath``).

    An unterminated comment, a statement without ``;`` or ``=``, an unbalanced bracket or a file with no
    settings at all is a :class:`DataFormatError`.
    """
    real, data = _read_bytes(path, 16 << 20)
    text = _decode(real, data, "utf-8")

    clean = _strip_comments(real, text)

    globals_: dict[str, str] = {}
    layers: list[dict[str, str]] = []
    seen: dict[tuple[int | None, str], list[str]] = {}
    current: dict[str, str] | None = None
    block_start = 0
    n_statements = 0
    for m in re.finditer(r"\[|\]|[^\[\];]*;|[^\[\];]+", clean):
        piece = m.group(0)
        line = _line_of(clean, m.start() + (len(piece) - len(piece.lstrip())))
        if piece == "[":
            if current is not None:
                raise DataFormatError(
                    real, f"line {line}: '[' inside the layer block opened on line {block_start}"
                )
            current = {}
            layers.append(current)
            block_start = line
            continue
        if piece == "]":
            if current is None:
                raise DataFormatError(real, f"line {line}: ']' without a matching '['")
            current = None
            continue
        if not piece.endswith(";"):
            if piece.strip():
                raise DataFormatError(
                    real, f"line {line}: {_short(piece.strip())} is not a 'KEY = value;' statement "
                    "(missing ';'?)"
                )
            continue
        body = piece[:-1]
        if "=" not in body:
            raise DataFormatError(
                real, f"line {line}: {_short(body.strip())} is not a 'KEY = value;' statement (no '=')"
            )
        key, value = body.split("=", 1)
        key, value = key.strip(), value.strip()
        if _KEY_RE.fullmatch(key) is None:
            raise DataFormatError(real, f"line {line}: invalid key {_short(key)}")
        section = globals_ if current is None else current
        scope = None if current is None else len(layers) - 1
        seen.setdefault((scope, key), []).append(value)
        section[key] = value
        n_statements += 1
    if current is not None:
        raise DataFormatError(real, f"line {block_start}: '[' is never closed (file truncated?)")
    if n_statements == 0 and not layers:
        raise DataFormatError(real, "no settings found (empty file?)")

    duplicates = [
        {
            "layer": scope,
            "name": None if scope is None else layers[scope].get("NAME"),
            "key": key,
            "values": values,
        }
        for (scope, key), values in seen.items()
        if len(values) > 1
    ]
    return {"globals": globals_, "layers": layers, "duplicates": duplicates}
