"""Small file-system helpers shared by the writers that must survive a crash (checkpoints, downloads), and
the error that names the file a failed write was for (a full disk is otherwise a bare ``[Errno 28]``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import HM2BPError


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entry list, so that a rename into it survives a power loss. A no-op where
    folders cannot be opened (Windows) or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class WriteError(HM2BPError, OSError):
    """Writing a file failed (disk full, read-only, quota, …): names the file, the cause and a remedy."""

    def __init__(self, path: str | os.PathLike[str], cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.path = os.fspath(path)
        name = errno.errorcode.get(cause.errno or 0, "")
        hint = {"ENOSPC": "; free some space (or point --out elsewhere) and continue with --resume",
                "EDQUOT": "; the disk quota is exhausted", "EROFS": "; the file system is read-only",
                "EACCES": "; no permission to write there"}.get(name, "")
        self.message = f"{self.path}: cannot write: {cause.strerror or cause}{f' ({name})' if name else ''}{hint}"

    def __str__(self) -> str:
        return self.message


def write_error(path: str | os.PathLike[str], e: BaseException) -> BaseException:
    """The exception to raise for ``e`` met while writing ``path``: an OSError becomes a WriteError."""
    if isinstance(e, OSError) and not isinstance(e, WriteError):
        return WriteError(path, e)
    return e
