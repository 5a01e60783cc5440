"""Small file-system helpers shared by the writers that must survive a crash (checkpoints, metrics, configs,
plots, downloads), and the error that names the file a failed write was for (a full disk is otherwise a bare
``[Errno 28]``).

:func:`atomic_write_bytes` writes a temporary file in the destination folder, fsyncs it and renames it over
the destination with :func:`os.replace` (atomic on POSIX and Windows), so an interrupted write leaves the
previous file intact. A process killed outright cannot remove its temporary file, so temporary files are
named ``.<name>.<host>.<pid>.<random>.tmp`` and the next write in that folder removes those whose process
on this host no longer exists (:func:`remove_stale_temp_files`)."""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
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


def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        if hasattr(os, "fchmod"):  # mkstemp makes 0o600; the final file gets a normal file's permissions
            os.fchmod(fd, 0o666 & ~_umask())
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
