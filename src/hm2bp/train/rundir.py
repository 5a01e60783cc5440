"""The run folder: one training at a time, and no earlier run replaced without being asked.

* :class:`RunLock` holds an exclusive lock on ``<folder>/.hm2bp-train.lock`` for the whole run (``flock``
  on POSIX: the kernel drops it when the process dies, so a lock file left by a killed run is taken over
  at once; elsewhere an ``O_EXCL`` file holding the owner's pid, removed when that process is gone). A
  second training in the same folder stops with a :class:`RunFolderError` naming the owner.
* :func:`check_run_folder` decides what a start may do with the files already there: continue
  (``--resume`` and a ``last.pt``), start fresh (nothing worth keeping: no checkpoint, an empty
  ``metrics.jsonl``), replace them (``overwrite``), or refuse. A folder holding a checkpoint or logged
  epochs is never replaced silently, also not by ``--resume`` when its ``last.pt`` is missing.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..errors import HM2BPError

__all__ = ["LOCK_NAME", "RunFolderError", "RunLock", "check_run_folder", "held_run_files"]

LOCK_NAME = ".hm2bp-train.lock"


class RunFolderError(HM2BPError):
    """The run folder is in use by another training, or holds a run that this start would replace."""


def _owner_text(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "another process"
    return text or "another process"


class RunLock:
    """Exclusive lock of a run folder for the lifetime of a training (a context manager)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def _refuse(self) -> RunFolderError:
        return RunFolderError(f"{self.folder}: another training is running in this run folder "
                              f"({_owner_text(self.path)}; lock file {self.path}); wait for it to finish, or "
                              f"train into another folder with --out")

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self._acquire_exclusive_file()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._refuse() from None
            try:  # the holder before us may have removed the file after we opened it: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd
        return self

    def _acquire_exclusive_file(self) -> RunLock:  # pragma: no cover - Windows
        from ..io.files import _pid_alive

        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                words = _owner_text(self.path).split()
                if len(words) > 1 and words[0] == "pid" and words[1].isdigit() and not _pid_alive(int(words[1])):
                    self.path.unlink(missing_ok=True)  # left by a process that is gone
                    continue
                raise self._refuse() from None
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
            self._fd = fd
            return self
        raise self._refuse()

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding the lock (see acquire's inode check)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_run_files(out_dir: Path, ck_dir: Path) -> list[Path]:
    """The files of an earlier run that a fresh start would replace: checkpoints, a non-empty metrics log."""
    held = [p for p in (ck_dir / "last.pt", ck_dir / "best.pt") if p.exists()]
    log = out_dir / "metrics.jsonl"
    try:
        if log.stat().st_size > 0:
            held.append(log)
    except OSError:
        pass
    return held


def check_run_folder(out_dir: Path, ck_dir: Path, *, resume: bool, overwrite: bool) -> bool:
    """Whether the run resumes from ``<ck_dir>/last.pt``; removes an earlier run's files when ``overwrite``.

    Raises:
        RunFolderError: the folder holds an earlier run and neither ``--resume`` (with a ``last.pt``) nor
            ``--overwrite`` says what to do with it.
    """
    last = ck_dir / "last.pt"
    if resume and last.exists():
        return True
    held = held_run_files(out_dir, ck_dir)
    if held and not overwrite:
        names = ", ".join(p.name for p in held)
        if resume:
            raise RunFolderError(f"--resume: there is no {last} to continue from, but {out_dir} holds an earlier "
                                 f"run ({names}) that a fresh start would replace; pass --overwrite to replace it, "
                                 f"or --out NEW_FOLDER to start elsewhere")
        raise RunFolderError(f"{out_dir} already holds a run ({names}); pass --resume to continue it, --overwrite to "
                             f"replace it, or --out NEW_FOLDER to start elsewhere")
    for p in held:  # overwrite: a stale best.pt or log must not outlive the run it belonged to
        p.unlink(missing_ok=True)
    return False
