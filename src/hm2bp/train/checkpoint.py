"""Checkpoints: written atomically, read safely.

Writing: the bytes go to a temporary file in the destination folder, which is flushed and fsync'ed and
then renamed over the destination with :func:`os.replace` (atomic on POSIX and Windows). An interrupted
save leaves the previous checkpoint intact and no partial file behind.

Reading: only ``torch.load(..., weights_only=True)``, which unpickles tensors, containers and plain
numbers but never imports or calls code, so a checkpoint crafted to run code on load is refused with a
:class:`CheckpointError`.

A checkpoint is a dict (see :func:`make_checkpoint`) with ``format``/``version``, the model's and the
optimizer's state dicts, the boost weights, the current data order, the RNG states (as uint8 tensors),
``epoch`` (completed epochs), ``step`` (updates so far), ``metrics`` (one dict per epoch), ``best`` and the
run config (the nested dict of ``config.json``).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import HM2BPError

__all__ = ["CheckpointError", "atomic_write_bytes", "save_checkpoint", "load_checkpoint", "FORMAT", "VERSION"]

FORMAT = "hm2bp-checkpoint"
VERSION = 1


class CheckpointError(HM2BPError, ValueError):
    """A checkpoint is missing, corrupt, unsafe or of an unknown format."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Serialise ``obj`` with ``torch.save`` and write it atomically to ``path``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check its format.

    Raises:
        CheckpointError: missing file, a file that is not a torch checkpoint, a file holding anything but
            tensors and plain containers (e.g. a pickle that would run code), or an unknown format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln or "Unsupported operand" in ln]
        first = lines[0] if lines else type(e).__name__
        raise CheckpointError(path, f"refused to load: the file holds objects other than tensors and plain "
                                    f"data (it may try to run code); {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(path, f"not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(path, f"not an hm2bp checkpoint (no format={FORMAT!r} entry)")
    if obj.get("version") != VERSION:
        raise CheckpointError(path, f"checkpoint version {obj.get('version')!r} is not supported (expected {VERSION})")
    missing = [k for k in ("model", "config", "epoch") if k not in obj]
    if missing:
        raise CheckpointError(path, f"checkpoint lacks {', '.join(missing)}")
    try:
        obj["config"] = json.loads(obj["config"]) if isinstance(obj["config"], str) else obj["config"]
    except json.JSONDecodeError as e:
        raise CheckpointError(path, f"config entry is not valid JSON: {e}") from None
    if isinstance(obj.get("metrics"), str):
        obj["metrics"] = json.loads(obj["metrics"])
    return obj
