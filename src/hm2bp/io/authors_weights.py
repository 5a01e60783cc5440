"""The authors' weight files and CNN checkpoint (docs/algorithm.md §6.2)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hm2bp.errors import ConfigError, DataFormatError

from .authors_text import (
    _INT_RE,
    _NAME_RE,
    _SLACK_BYTES,
    _check_size_arg,
    _decode,
    _parse_float_file,
    _short,
    _to_float32,
    _tokens_to_float,
)
from .bounded import read_bounded as _read_bytes

PathLike = str | os.PathLike[str]


#: Layout of ``Result/checkPoint_cnn_best.txt`` (784-15C5-P2-40C5-P2-300-10, output with lateral
#: inhibition), docs/algorithm.md §6.2. 210,840 floats in all.
CNN_CHECKPOINT_ARCH: tuple[dict[str, Any], ...] = (
    {"kind": "conv", "out": 15, "in": 1, "k": 5},
    {"kind": "pool"},
    {"kind": "conv", "out": 40, "in": 15, "k": 5},
    {"kind": "pool"},
    {"kind": "fc", "out": 300, "in": 640},
    {"kind": "fc", "out": 10, "in": 300, "lateral": True},
)



def read_weight_list(path: PathLike, n_post: int, n_pre: int, *, complete: bool = False) -> np.ndarray:
    """Read a named weight list (``*_info.txt``, docs/algorithm.md §6.2) into float32 ``W[n_post, n_pre]``.

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
    """Read an authors' checkpoint (e.g. ``Result/checkPoint_cnn_best.txt``, docs/algorithm.md §6.2).

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
