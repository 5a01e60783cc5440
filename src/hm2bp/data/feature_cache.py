"""On-disk cache of speech features (Lyon cochleagram + BSA spike raster), so that a run does not spend
~0.3 s per utterance recomputing what the previous run already computed.

An entry is keyed by the SHA-256 of the audio file's bytes and every front-end parameter (Lyon ear,
resampling rate, BSA, T, the feature code's version): a changed file or setting is a different key, never
a stale hit. Entries live in ``$HM2BP_CACHE`` (default ``$XDG_CACHE_HOME/hm2bp/features``, i.e.
``~/.cache/hm2bp/features``), never beside the data (which may be read-only or shared); ``HM2BP_CACHE=off``
switches the cache off.

Each entry is written atomically (temp file, fsync, rename) and carries its own checksum; an entry that
is truncated, corrupt or does not match its key is recomputed and rewritten, never trusted.

Format: ``HM2BPFC1`` magic, a 4-byte little-endian header length, a JSON header (key, shape, SHA-256 of
the payload), then the payload: the raster bit-packed with ``numpy.packbits``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FEATURE_VERSION", "cache_dir", "cached_raster", "feature_key", "speech_params"]

_MAGIC = b"HM2BPFC1"
#: Bump when the feature code changes its output for the same inputs (old entries then miss).
FEATURE_VERSION = 1


def cache_dir() -> Path | None:
    """The cache folder, or None when ``HM2BP_CACHE`` is ``off``/``0``/``none``."""
    env = os.environ.get("HM2BP_CACHE")
    if env is not None:
        if env.strip().lower() in ("off", "0", "none", "false", ""):
            return None
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hm2bp" / "features"


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    import inspect

    return {k: v.default for k, v in inspect.signature(fn).parameters.items() if v.default is not inspect.Parameter.empty}


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def speech_params(T: int, n_channels: int) -> dict[str, Any]:
    """Every parameter of the speech front end (``lyon_features`` and ``bsa_encode`` defaults, T, the
    channel count, the versions of the ``lyon`` and ``scipy`` packages that compute it)."""
    from ..encoding import bsa_encode
    from .speech import lyon_features

    return {"T": int(T), "channels": int(n_channels), "lyon_features": _defaults(lyon_features),
            "bsa_encode": _defaults(bsa_encode), "lyon": _version("lyon"), "scipy": _version("scipy")}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def feature_key(path: Path, params: Mapping[str, Any]) -> str:
    """The entry key of ``path``'s features under ``params`` (content hash + every parameter)."""
    blob = json.dumps({"file_sha256": _file_sha256(path), "params": dict(params), "version": FEATURE_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _entry_path(root: Path, key: str) -> Path:
    return root / key[:2] / f"{key}.bin"


def _read(entry: Path, key: str) -> np.ndarray | None:
    """The raster of a valid entry, or None (missing, truncated, corrupt, another key)."""
    try:
        data = entry.read_bytes()
    except OSError:
        return None
    try:
        if not data.startswith(_MAGIC):
            return None
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        header = json.loads(data[start : start + n].decode())
        payload = data[start + n :]
        shape = tuple(int(v) for v in header["shape"])
        if (header["key"] != key or len(shape) != 2 or hashlib.sha256(payload).hexdigest() != header["sha256"]
                or len(payload) != (shape[0] * shape[1] + 7) // 8):
            return None
        return np.unpackbits(np.frombuffer(payload, np.uint8), count=shape[0] * shape[1]).reshape(shape).astype(bool)
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
        return None


def _write(entry: Path, key: str, raster: np.ndarray) -> None:
    payload = np.packbits(raster.reshape(-1)).tobytes()
    header = json.dumps({"key": key, "shape": list(raster.shape), "sha256": hashlib.sha256(payload).hexdigest()})
    blob = _MAGIC + struct.pack("<I", len(header)) + header.encode() + payload
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, entry)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_raster(path: Path, params: Mapping[str, Any], compute: Callable[[Path], np.ndarray],
                  root: Path | None = None) -> np.ndarray:
    """``compute(path)`` (a bool raster ``[T, channels]``), from the cache when a valid entry exists.

    ``root`` defaults to :func:`cache_dir`; with the cache off, or a cache folder that cannot be written,
    the raster is computed (and, in the latter case, not stored).
    """
    folder = cache_dir() if root is None else root
    if folder is None:
        return np.asarray(compute(path), dtype=bool)
    key = feature_key(path, params)
    entry = _entry_path(folder, key)
    hit = _read(entry, key)
    if hit is not None:
        return hit
    raster = np.ascontiguousarray(np.asarray(compute(path), dtype=bool))
    if raster.ndim == 2:
        try:
            _write(entry, key, raster)
        except OSError:  # a read-only or full cache folder must not stop training
            pass
    return raster
