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

A checkpoint is a dict (see :mod:`hm2bp.train.state`) with ``format``/``version``, the model's and the
optimizer's state dicts, the boost weights, the current data order, the RNG states (as uint8 tensors),
``epoch`` (completed epochs), ``step`` (updates so far), ``metrics`` (one dict per epoch), ``best``,
``best_step`` (the ``step`` of the checkpoint in ``best.pt``) and the run config (the nested dict of
``config.json``). A mid-epoch checkpoint (version 2) adds ``progress``: the position inside the epoch
in progress and that epoch's running sums, so that a resumed run continues at the next step.

Order of the files of one epoch: :func:`save_run_checkpoints` writes ``last.pt`` *before* ``best.pt``
(when the epoch improved); ``best.pt`` then holds the same content. A run killed between the two writes
finds ``best_step == step`` in ``last.pt`` and a ``best.pt`` of another step on resume, and copies
``last.pt`` to ``best.pt`` first (:func:`repair_best`), so no kill loses a best checkpoint and no start
without ``last.pt`` ever finds a ``best.pt`` (see :mod:`hm2bp.train.rundir`).

Files are written with the permissions of an ordinary new file (``0o666`` less the umask), not the
``0o600`` of a temporary file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import torch

from ..errors import HM2BPError
from ..io.files import atomic_write_bytes, remove_stale_temp_files  # re-exported: the writer lives in io/

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "atomic_write_bytes",
    "content_digest",
    "load_checkpoint",
    "remove_stale_temp_files",
    "repair_best",
    "save_checkpoint",
    "save_run_checkpoints",
]

FORMAT = "hm2bp-checkpoint"
VERSION = 2
_READABLE_VERSIONS = (1, 2)  # 1: end-of-epoch checkpoints only (no "progress" entry)


class CheckpointError(HM2BPError, ValueError):
    """A checkpoint is missing, corrupt, unsafe or of an unknown format."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


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
    """End-of-epoch save: ``last_path`` first, then ``best_path`` (when given, i.e. the epoch improved).

    A kill between the two leaves ``last.pt`` with ``best_step == step``; :func:`repair_best` completes
    ``best.pt`` from it when the run resumes.
    """
    save_checkpoint(obj, last_path)
    if best_path is not None:
        save_checkpoint(obj, best_path)


def repair_best(last: dict[str, Any], last_path: str | os.PathLike[str], best_path: str | os.PathLike[str]) -> bool:
    """Copy ``last_path`` to ``best_path`` when ``last`` (its loaded content) is the best checkpoint of the run
    but ``best_path`` is missing or holds another step (a kill between the two writes); True when copied.

    Only an end-of-epoch ``last.pt`` (no ``progress``) can be the best one; a best checkpoint is thus never
    replaced by a different (worse) model.
    """
    if last.get("progress") is not None or last.get("best_step") is None or last["best_step"] != last.get("step"):
        return False
    best_path = Path(best_path)
    if best_path.exists():
        try:
            if load_checkpoint(best_path).get("step") == last["step"]:
                return False
        except CheckpointError:
            pass  # a damaged best.pt: the copy replaces it with the checkpoint it should hold
    atomic_write_bytes(best_path, Path(last_path).read_bytes())
    return True


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
    if obj.get("version") not in _READABLE_VERSIONS:
        raise CheckpointError(path, f"checkpoint version {obj.get('version')!r} is not supported (this hm2bp reads "
                                    f"versions {', '.join(map(str, _READABLE_VERSIONS))})")
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
