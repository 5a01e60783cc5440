"""The authors' spike files (docs/algorithm.md §6.2): sparse ``neuron<TAB>time`` lists and dense 0/1 maps."""

from __future__ import annotations

import os

import numpy as np

from hm2bp.errors import DataFormatError

from .authors_text import (
    _SLACK_BYTES,
    _SPIKE_LINE_RE,
    _WS_BYTES,
    _check_size_arg,
    _decode,
    _line_of,
    _short,
)
from .bounded import read_bounded as _read_bytes

PathLike = str | os.PathLike[str]


def read_sparse_spikes(path: PathLike, n_neurons: int, T: int) -> np.ndarray:
    """Read a sparse spike file (docs/algorithm.md §6.2) into a bool array ``[T, n_neurons]``.

    Format: a ``-1<TAB>-1`` line, then ``neuron<TAB>time`` lines (0-based), then a closing ``-1<TAB>-1``
    line. Blank lines are ignored. Spikes at times ``>= T`` are dropped, as the authors' readers do (the
    N-MNIST input dump has one spike at ``T``). A neuron ``>= n_neurons``, a negative value, a missing
    header or footer, or any other token is a :class:`DataFormatError`.
    """
    n_neurons = _check_size_arg("n_neurons", n_neurons)
    T = _check_size_arg("T", T)
    # Each distinct spike needs one line of at most ~40 bytes; allow repeats and odd spacing.
    max_bytes = 64 * (n_neurons * T + 2) + _SLACK_BYTES
    real, data = _read_bytes(path, max_bytes)
    text = _decode(real, data)

    neurons: list[int] = []
    times: list[int] = []
    state = 0  # 0: before header, 1: in body, 2: after footer
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if state == 2:
            raise DataFormatError(real, f"line {lineno}: content after the closing '-1<TAB>-1' line")
        m = _SPIKE_LINE_RE.fullmatch(line)
        if m is None:
            raise DataFormatError(
                real, f"line {lineno}: expected two integers 'neuron<TAB>time', got {_short(line)}"
            )
        a, b = int(m.group(1)), int(m.group(2))
        if state == 0:
            if (a, b) != (-1, -1):
                raise DataFormatError(
                    real, f"line {lineno}: missing '-1<TAB>-1' header (first line is {_short(line)})"
                )
            state = 1
            continue
        if (a, b) == (-1, -1):
            state = 2
            continue
        if a < 0 or b < 0:
            raise DataFormatError(real, f"line {lineno}: negative neuron or time in {_short(line)}")
        if a >= n_neurons:
            raise DataFormatError(
                real, f"line {lineno}: neuron {a} out of range (the layer has {n_neurons} neurons)"
            )
        if b < T:  # spec: readers drop times >= T
            neurons.append(a)
            times.append(b)
    if state == 0:
        raise DataFormatError(real, "empty file: missing '-1<TAB>-1' header")
    if state == 1:
        raise DataFormatError(real, "missing closing '-1<TAB>-1' line (file truncated?)")

    out = np.zeros((T, n_neurons), dtype=bool)
    if neurons:
        out[np.asarray(times, dtype=np.int64), np.asarray(neurons, dtype=np.int64)] = True
    return out


def read_dense_spike_map(path: PathLike, channels: int, T: int, height: int, width: int) -> np.ndarray:
    """Read a dense conv/pool spike map (docs/algorithm.md §6.2) into a bool array ``[T, channels, height, width]``.

    The file holds ``channels*T*height*width`` tokens "0"/"1" separated by whitespace, in the order
    channel, then time, then neuron ``x*width + y``. Any other token or a wrong token count is a
    :class:`DataFormatError`. Parsing is vectorised (the conv1 map has 1.3 M tokens).
    """
    channels = _check_size_arg("channels", channels)
    T = _check_size_arg("T", T)
    height = _check_size_arg("height", height)
    width = _check_size_arg("width", width)
    n_expected = channels * T * height * width
    real, data = _read_bytes(path, 8 * n_expected + _SLACK_BYTES)

    buf = np.frombuffer(data, dtype=np.uint8)
    is_digit = (buf == ord("0")) | (buf == ord("1"))
    bad = np.flatnonzero(~(is_digit | _WS_BYTES[buf]))
    if bad.size:
        off = int(bad[0])
        raise DataFormatError(
            real, f"byte {bytes([data[off]])!r} at offset {off} (line {_line_of(data, off)}) is not "
            "'0', '1' or whitespace"
        )
    glued = np.flatnonzero(is_digit[:-1] & is_digit[1:])
    if glued.size:
        off = int(glued[0])
        end = off
        while end < len(data) and is_digit[end]:
            end += 1
        raise DataFormatError(
            real, f"token {_short(data[off:end])} at offset {off} (line {_line_of(data, off)}) is not "
            "a single '0' or '1'"
        )
    n_found = int(np.count_nonzero(is_digit))
    if n_found != n_expected:
        raise DataFormatError(
            real, f"expected {n_expected} tokens (channels {channels} x T {T} x {height}x{width} "
            f"neurons), found {n_found}" + (" (file truncated?)" if n_found < n_expected else "")
        )
    spikes = buf[is_digit] == ord("1")
    return np.ascontiguousarray(spikes.reshape(channels, T, height, width).transpose(1, 0, 2, 3))
