"""Readers for the file formats of the HM2-BP authors' CUDA code (spec §6.2).

Every reader returns numpy arrays and reports *every* problem with a file (missing, unreadable,
truncated, corrupt, of the wrong size) as one :class:`hm2bp.errors.DataFormatError` that names the file
and the problem. No raw ``ValueError``/``IndexError``/``UnicodeDecodeError`` escapes, and nothing is
allocated from a size read out of a file before that size has been checked against what the caller
expects. Wrong *arguments* (a negative size, an unknown layer kind) are the caller's fault and raise
:class:`hm2bp.errors.ConfigError`.

Compressed copies are read transparently: if ``path`` does not exist but ``path + ".gz"`` does, that is
read instead; any file that starts with the gzip magic bytes is decompressed.

Readers:

* :func:`read_sparse_spikes` -- ``-1<TAB>-1`` framed ``neuron<TAB>time`` lists -> bool ``[T, N]``.
* :func:`read_dense_spike_map` -- "0"/"1" token maps (conv/pool) -> bool ``[T, C, H, W]``.
* :func:`read_weight_list` -- ``idx pre_name post_name weight`` lists -> float32 ``[n_post, n_pre]``.
* :func:`read_conv_weights` -- one line of ``K*C*k*k`` floats -> float32 ``[K, C, k, k]``.
* :func:`read_checkpoint_cnn` -- the authors' whitespace checkpoint -> ``{"layer<i>.weight": ...}``.
* :func:`read_lyon_matrix` -- ASCII Lyon-ear output -> float64 ``[78, n_frames]``.
* :func:`read_authors_config` -- ``KEY = value;`` / ``[ ... ]`` configs -> dict of strings.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hm2bp.errors import ConfigError, DataFormatError

__all__ = [
    "CNN_CHECKPOINT_ARCH",
    "checkpoint_size",
    "read_authors_config",
    "read_checkpoint_cnn",
    "read_conv_weights",
    "read_dense_spike_map",
    "read_lyon_matrix",
    "read_sparse_spikes",
    "read_weight_list",
]

PathLike = str | os.PathLike[str]

#: Layout of ``Result/checkPoint_cnn_best.txt`` (784-15C5-P2-40C5-P2-300-10, output with lateral
#: inhibition), spec §6.2. 210,840 floats in all.
CNN_CHECKPOINT_ARCH: tuple[dict[str, Any], ...] = (
    {"kind": "conv", "out": 15, "in": 1, "k": 5},
    {"kind": "pool"},
    {"kind": "conv", "out": 40, "in": 15, "k": 5},
    {"kind": "pool"},
    {"kind": "fc", "out": 300, "in": 640},
    {"kind": "fc", "out": 10, "in": 300, "lateral": True},
)

# Upper bound on any file these readers will load into memory (also bounds gzip bombs).
_HARD_MAX_BYTES = 1 << 31
_SLACK_BYTES = 1 << 16

_GZIP_MAGIC = b"\x1f\x8b"
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


# --------------------------------------------------------------------------------------------------
# Helpers: arguments, reading, decoding, numbers
# --------------------------------------------------------------------------------------------------


def _check_size_arg(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """Validate a caller-supplied size (int >= 1, or >= 0 when allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '>= 1'}, got {v}")
    return v


def _resolve(path: PathLike) -> Path:
    """Return ``path`` if it is a file, else ``path.gz`` if that is; raise DataFormatError otherwise."""
    p = Path(path)
    if p.is_file():
        return p
    gz = Path(os.fspath(p) + ".gz")
    if gz.is_file():
        return gz
    if p.exists():
        raise DataFormatError(p, "exists but is not a regular file")
    raise DataFormatError(p, f"file not found (also looked for {gz.name})")


def _read_bytes(path: PathLike, max_bytes: int) -> tuple[Path, bytes]:
    """Read a (possibly gzip-compressed) file, refusing more than ``max_bytes`` of content."""
    max_bytes = min(int(max_bytes), _HARD_MAX_BYTES)
    real = _resolve(path)
    try:
        with open(real, "rb") as f:
            head = f.read(2)
            if head == _GZIP_MAGIC:
                f.seek(0)
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    data = g.read(max_bytes + 1)
            else:
                size = os.fstat(f.fileno()).st_size
                if size > max_bytes:
                    raise DataFormatError(
                        real, f"file is {size} bytes, more than the {max_bytes} bytes the expected "
                        "contents can take; wrong file or wrong sizes?"
                    )
                f.seek(0)
                data = f.read(max_bytes + 1)
    except DataFormatError:
        raise
    except (OSError, EOFError, zlib.error, ValueError) as e:  # gzip.BadGzipFile is an OSError
        raise DataFormatError(real, f"cannot read file ({type(e).__name__}: {e})") from e
    if len(data) > max_bytes:
        raise DataFormatError(
            real, f"content is more than {max_bytes} bytes, more than the expected contents can take; "
            "wrong file or wrong sizes?"
        )
    return real, data


def _line_of(data: bytes | str, offset: int) -> int:
    return data.count(b"\n" if isinstance(data, bytes) else "\n", 0, offset) + 1


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
    if len(tokens) == 0:
        return np.zeros(0, dtype=np.float64)
    # numpy accepts tokens such as "1_0" or "nan"; reject any character outside a plain float first.
    def as_bytes(t: str | bytes) -> bytes:
        return t if isinstance(t, bytes) else t.encode("utf-8", "replace")

    joined = b" ".join(as_bytes(t) for t in tokens)
    if not _FLOAT_BYTES[np.frombuffer(joined, dtype=np.uint8)].all():
        for i, t in enumerate(tokens):
            if not _FLOAT_BYTES[np.frombuffer(as_bytes(t), dtype=np.uint8)].all():
                ts = as_bytes(t).decode("latin-1")
                raise DataFormatError(path, f"{_float_token_problem(ts)} at {describe(i)}")
    try:
        values = np.array(tokens).astype(np.float64)
    except (ValueError, TypeError, OverflowError):
        for i, t in enumerate(tokens):
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


# --------------------------------------------------------------------------------------------------
# Spike files
# --------------------------------------------------------------------------------------------------


def read_sparse_spikes(path: PathLike, n_neurons: int, T: int) -> np.ndarray:
    """Read a sparse spike file (spec §6.2) into a bool array ``[T, n_neurons]``.

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
    """Read a dense conv/pool spike map (spec §6.2) into a bool array ``[T, channels, height, width]``.

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


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


def read_weight_list(path: PathLike, n_post: int, n_pre: int, *, complete: bool = False) -> np.ndarray:
    """Read a named weight list (``*_info.txt``, spec §6.2) into float32 ``W[n_post, n_pre]``.

    Each line is ``idx<TAB>pre_name<TAB>post_name<TAB>weight``; a neuron's index is the integer after
    the last "_" of its name (``input_``, ``reservoir_``, ``hidden_0_``, ``hidden_``, ``stack2line_``,
    ``output_`` ... are all accepted). ``W[post, pre] += weight`` (repeated pairs accumulate, as in the
    reservoir lists); the ``idx`` column is checked to be an integer and otherwise ignored.

    Indices out of range, malformed lines, non-finite weights and an empty file are
    :class:`DataFormatError`. With ``complete=True`` every ``(post, pre)`` pair must appear at least
    once (true of the fully connected CNN/hidden/output lists), which also catches files truncated at a
    line boundary.
    """
    n_post = _check_size_arg("n_post", n_post)
    n_pre = _check_size_arg("n_pre", n_pre)
    n_pairs = n_post * n_pre
    # A fully connected list has n_pairs lines of < 80 bytes; allow repeats (reservoir lists).
    real, data = _read_bytes(path, 512 * (4 * n_pairs + 16) + _SLACK_BYTES)
    text = _decode(real, data)

    line_numbers: list[int] = []
    posts: list[int] = []
    pres: list[int] = []
    weight_tokens: list[str] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 4:
            raise DataFormatError(
                real, f"line {lineno}: expected 4 columns 'idx pre_name post_name weight', found "
                f"{len(parts)} in {_short(line)}"
            )
        idx, pre_name, post_name, w = parts
        if _INT_RE.fullmatch(idx) is None:
            raise DataFormatError(real, f"line {lineno}: index column {_short(idx)} is not an integer")
        ids = []
        for role, name, limit in (("pre", pre_name, n_pre), ("post", post_name, n_post)):
            m = _NAME_RE.fullmatch(name)
            if m is None:
                raise DataFormatError(
                    real, f"line {lineno}: {role} neuron name {_short(name)} does not end in '_<index>'"
                )
            k = int(m.group(1))
            if k >= limit:
                raise DataFormatError(
                    real, f"line {lineno}: {role} index {k} ({name}) out of range (expected < {limit})"
                )
            ids.append(k)
        pres.append(ids[0])
        posts.append(ids[1])
        weight_tokens.append(w)
        line_numbers.append(lineno)
    if not weight_tokens:
        raise DataFormatError(real, "no weight lines (empty file?)")

    values = _tokens_to_float(real, weight_tokens, lambda i: f"line {line_numbers[i]} (weight column)")
    post_arr = np.asarray(posts, dtype=np.int64)
    pre_arr = np.asarray(pres, dtype=np.int64)
    if complete:
        seen = np.zeros(n_pairs, dtype=bool)
        seen[post_arr * n_pre + pre_arr] = True
        if not seen.all():
            missing = int(np.flatnonzero(~seen)[0])
            raise DataFormatError(
                real, f"only {int(seen.sum())} of {n_pairs} (post, pre) pairs present; e.g. "
                f"post {missing // n_pre}, pre {missing % n_pre} is missing (file truncated?)"
            )
    W = np.zeros((n_post, n_pre), dtype=np.float64)
    np.add.at(W, (post_arr, pre_arr), values)
    return _to_float32(real, W)


def read_conv_weights(path: PathLike, K: int, C: int, k: int) -> np.ndarray:
    """Read a conv weight list (``conv*_info*.txt``) into float32 ``[K, C, k, k]``.

    The file is one line of ``K*C*k*k`` floats in order [kernel][channel][i][j].
    """
    K = _check_size_arg("K", K)
    C = _check_size_arg("C", C)
    k = _check_size_arg("k", k)
    n_expected = K * C * k * k
    real, data = _read_bytes(path, 64 * n_expected + _SLACK_BYTES)
    n_lines = sum(1 for line in data.split(b"\n") if line.strip())
    if n_lines > 1:
        raise DataFormatError(real, f"expected the weights on one line, found {n_lines} non-blank lines")
    values = _parse_float_file(real, data)
    if values.size != n_expected:
        raise DataFormatError(
            real, f"expected {n_expected} values (K {K} x C {C} x {k}x{k}), found {values.size}"
        )
    return _to_float32(real, values).reshape(K, C, k, k)


def _checkpoint_layout(arch: Sequence[Mapping[str, Any]]) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every block of a checkpoint, in file order."""
    if isinstance(arch, (str, bytes)) or not isinstance(arch, Sequence):
        raise ConfigError(f"arch must be a sequence of layer dicts, got {type(arch).__name__}")
    layout: list[tuple[str, tuple[int, ...]]] = []
    for i, layer in enumerate(arch):
        if not isinstance(layer, Mapping):
            raise ConfigError(f"arch[{i}] must be a dict, got {layer!r}")
        kind = layer.get("kind")
        if kind == "pool":
            continue
        if kind == "conv":
            out = _check_size_arg(f"arch[{i}]['out']", layer.get("out"))
            cin = _check_size_arg(f"arch[{i}]['in']", layer.get("in"))
            k = _check_size_arg(f"arch[{i}]['k']", layer.get("k"))
            layout.append((f"layer{i}.weight", (out, cin, k, k)))
            if layer.get("lateral"):
                raise ConfigError(f"arch[{i}]: lateral weights are only supported on 'fc' layers")
        elif kind == "fc":
            out = _check_size_arg(f"arch[{i}]['out']", layer.get("out"))
            cin = _check_size_arg(f"arch[{i}]['in']", layer.get("in"))
            layout.append((f"layer{i}.weight", (out, cin)))
            if layer.get("lateral"):
                layout.append((f"layer{i}.lateral", (out, out)))
        else:
            raise ConfigError(f"arch[{i}]: unknown layer kind {kind!r} (expected 'conv', 'pool' or 'fc')")
        if layer.get("bias", True):
            layout.append((f"layer{i}.bias", (out,)))
    return layout


def checkpoint_size(arch: Sequence[Mapping[str, Any]]) -> int:
    """Number of floats in a checkpoint of architecture ``arch`` (210,840 for CNN_CHECKPOINT_ARCH)."""
    return sum(int(np.prod(shape)) for _, shape in _checkpoint_layout(arch))


def read_checkpoint_cnn(
    path: PathLike, arch: Sequence[Mapping[str, Any]] = CNN_CHECKPOINT_ARCH
) -> dict[str, np.ndarray]:
    """Read an authors' checkpoint (e.g. ``Result/checkPoint_cnn_best.txt``, spec §6.2).

    ``arch`` lists the layers in file order as dicts: ``{"kind": "conv", "out": K, "in": C, "k": k}``,
    ``{"kind": "pool"}`` (writes nothing) or ``{"kind": "fc", "out": n, "in": m, "lateral": bool}``;
    an optional ``"bias": False`` drops the bias block. Each conv layer stores W ``[out][in][k][k]``
    then ``out`` biases; each fc layer W ``[out][in]`` (post, pre), then, if lateral, ``[out][out]``
    (post, pre), then ``out`` biases. Returns float32 arrays under ``"layer<i>.weight"``,
    ``"layer<i>.lateral"`` and ``"layer<i>.bias"`` (``i`` counts pool layers too).

    A total count different from the architecture's, or any non-numeric/non-finite value, is a
    :class:`DataFormatError`.
    """
    layout = _checkpoint_layout(arch)
    n_expected = sum(int(np.prod(shape)) for _, shape in layout)
    real, data = _read_bytes(path, 48 * n_expected + _SLACK_BYTES)
    values = _parse_float_file(real, data)
    if values.size != n_expected:
        raise DataFormatError(
            real, f"expected {n_expected} values for the given architecture, found {values.size}"
            + (" (file truncated?)" if values.size < n_expected else "")
        )
    values32 = _to_float32(real, values)
    out: dict[str, np.ndarray] = {}
    pos = 0
    for key, shape in layout:
        n = int(np.prod(shape))
        out[key] = values32[pos : pos + n].reshape(shape).copy()
        pos += n
    return out


# --------------------------------------------------------------------------------------------------
# Raw inputs and configs
# --------------------------------------------------------------------------------------------------


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

    # Strip comments, keeping newlines so that line numbers stay right.
    pieces: list[str] = []
    pos = 0
    while True:
        start = text.find("#", pos)
        if start < 0:
            pieces.append(text[pos:])
            break
        end = text.find("#", start + 1)
        if end < 0:
            raise DataFormatError(real, f"line {_line_of(text, start)}: unterminated '#' comment")
        pieces.append(text[pos:start])
        pieces.append(re.sub(r"[^\n]", " ", text[start : end + 1]))
        pos = end + 1
    clean = "".join(pieces)

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
