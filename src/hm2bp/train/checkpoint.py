"""Checkpoints: written atomically, read safely.

Writing: the bytes go to a temporary file in the destination folder, which is flushed and fsync'ed and
then renamed over the destination with :func:`os.replace` (atomic on POSIX and Windows). An interrupted
save leaves the previous checkpoint intact. A save that raises removes its temporary file; a process
killed outright (SIGKILL, power loss) cannot, so temporary files are named
``.<name>.<host>.<pid>.<random>.tmp`` and the next save or load in that folder removes those whose
process on this host no longer exists (:func:`remove_stale_temp_files`). A temporary file never has the final
name, so it is never mistaken for a complete checkpoint.

Integrity: :func:`save_checkpoint` stores a SHA-256 digest of the checkpoint's content (every tensor's
dtype, shape and bytes, every number, string and key) under ``"sha256"``; :func:`load_checkpoint`
recomputes it and refuses a file whose content changed (torch's zip reader does not check CRCs, so
without it most flipped bits in tensor data load silently). Checkpoints without the entry (written
before it existed) load unchecked.

Reading: only ``torch.load(..., weights_only=True)``, which unpickles tensors, containers and plain
numbers but never imports or calls code, so a checkpoint crafted to run code on load is refused with a
:class:`CheckpointError`.

A checkpoint is a dict (see :func:`make_checkpoint`) with ``format``/``version``, the model's and the
optimizer's state dicts, the boost weights, the current data order, the RNG states (as uint8 tensors),
``epoch`` (completed epochs), ``step`` (updates so far), ``metrics`` (one dict per epoch), ``best`` and the
run config (the nested dict of ``config.json``).

Order of the files of one epoch: :func:`save_run_checkpoints` writes ``best.pt`` (when the epoch improved)
*before* ``last.pt``. A run killed between the two writes then resumes from the previous ``last.pt``,
repeats the epoch and writes the same ``best.pt`` again; in the opposite order a kill between the
writes would lose that epoch's ``best.pt`` for good (the resumed run starts after the epoch).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import re
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import HM2BPError
from ..io.files import fsync_dir, write_error

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "atomic_write_bytes",
    "content_digest",
    "load_checkpoint",
    "remove_stale_temp_files",
    "save_checkpoint",
    "save_run_checkpoints",
]

FORMAT = "hm2bp-checkpoint"
VERSION = 1


class CheckpointError(HM2BPError, ValueError):
    """A checkpoint is missing, corrupt, unsafe or of an unknown format."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows: never claim it is dead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>[0-9]+)\.[A-Za-z0-9_]+\.tmp$")


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files that killed writes left in the folder of ``path``; returns the removed paths.

    ``path`` is a file (its folder is cleaned) or a folder. Only files named
    ``.<name>.<host>.<pid>.<random>.tmp`` (see :func:`atomic_write_bytes`) whose host is this one and whose
    process has exited are removed, so a write in progress (in this or another process) is never touched.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    host = _host_tag()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_NAME.match(entry.name)
        if m is None or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    The temp file is ``.<name>.<host>.<pid>.<random>.tmp``; temp files that killed earlier writes left in
    the folder are removed first (:func:`remove_stale_temp_files`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host_tag()}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise write_error(path, e) from e  # a full disk names the file (#18 item 17)
        raise
    fsync_dir(path.parent)


# --------------------------------------------------------------------------------------------------
# Content digest
# --------------------------------------------------------------------------------------------------
_DIGEST_KEY = "sha256"


def _feed(h: Any, obj: Any) -> None:
    """Feed a canonical, type-tagged encoding of ``obj`` into the hash ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        head = f"T{t.dtype}{tuple(t.shape)}".encode()
        h.update(struct.pack(">I", len(head)) + head)
        if t.numel():
            raw = t.reshape(-1).view(torch.uint8) if t.dtype != torch.bool else t.reshape(-1).to(torch.uint8)
            h.update(raw.numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"D" + struct.pack(">Q", len(obj)))
        for k in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):  # a loader may turn one into the other
        h.update(b"L" + struct.pack(">Q", len(obj)))
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (bool, int, str, bytes)):
        enc = repr(obj).encode("utf-8", "surrogatepass")
        h.update(type(obj).__name__.encode() + struct.pack(">Q", len(enc)) + enc)
    elif isinstance(obj, float):
        h.update(b"F" + (struct.pack(">d", obj) if not math.isnan(obj) else b"nan"))
    else:
        enc = repr(obj).encode("utf-8", "surrogatepass")
        h.update(b"O" + type(obj).__name__.encode() + struct.pack(">Q", len(enc)) + enc)


def content_digest(obj: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's content, ignoring its own ``"sha256"`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != _DIGEST_KEY})
    return h.hexdigest()


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Serialise ``obj`` (plus its content digest) with ``torch.save`` and write it atomically to ``path``."""
    buf = io.BytesIO()
    torch.save({**obj, _DIGEST_KEY: content_digest(obj)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_run_checkpoints(obj: dict[str, Any], last_path: str | os.PathLike[str],
                         best_path: str | os.PathLike[str] | None = None) -> None:
    """End-of-epoch save: ``best_path`` first (when given, i.e. the epoch improved), then ``last_path``.

    This order makes a kill at any point resumable exactly: until ``last.pt`` is replaced, a resumed run
    repeats the epoch and rewrites the same ``best.pt``.
    """
    if best_path is not None:
        save_checkpoint(obj, best_path)
    save_checkpoint(obj, last_path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check its format.

    Raises:
        CheckpointError: missing file, a file that is not a torch checkpoint, a file holding anything but
            tensors and plain containers (e.g. a pickle that would run code), or an unknown format.
    """
    path = Path(path)
    remove_stale_temp_files(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln or "Unsupported operand" in ln]
        first = lines[0] if lines else type(e).__name__
        raise CheckpointError(path, f"refused to load: the file holds objects other than tensors and plain "
                                    f"data (it may try to run code); {first}") from None
    except Exception as e:
        raise CheckpointError(path, f"not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(path, f"not an hm2bp checkpoint (no format={FORMAT!r} entry)")
    if obj.get("version") != VERSION:
        raise CheckpointError(path, f"checkpoint version {obj.get('version')!r} is not supported (expected {VERSION})")
    if _DIGEST_KEY in obj:
        want = obj.pop(_DIGEST_KEY)
        try:
            got = content_digest(obj)
        except Exception as e:
            raise CheckpointError(path, f"content cannot be checked ({type(e).__name__}: {e})") from None
        if got != want:
            raise CheckpointError(path, f"content does not match its sha256 digest (stored {str(want)[:16]}…, "
                                        f"computed {got[:16]}…): the file is corrupt")
    missing = [k for k in ("model", "config", "epoch") if k not in obj]
    if missing:
        raise CheckpointError(path, f"checkpoint lacks {', '.join(missing)}")
    try:
        obj["config"] = json.loads(obj["config"]) if isinstance(obj["config"], str) else obj["config"]
    except json.JSONDecodeError as e:
        raise CheckpointError(path, f"config entry is not valid JSON: {e}") from None
    if isinstance(obj.get("metrics"), str):
        try:
            obj["metrics"] = json.loads(obj["metrics"])
        except json.JSONDecodeError as e:
            raise CheckpointError(path, f"metrics entry is not valid JSON: {e}") from None
    return obj
