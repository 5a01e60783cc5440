"""Unpacking downloaded dataset archives (zip, tar.gz) safely and atomically.

Only the members that match a registered pattern are unpacked, only regular files, and only to paths
inside the target folder (no absolute names, no ``..``, no links: a hostile archive cannot write
elsewhere). Everything is first unpacked into a hidden staging folder beside the final one, then moved into
place, then a marker file records the archive's checksum: an interrupted unpack leaves only the staging
folder (removed on the next try), never a half-filled dataset folder that looks complete.

A content digest (:func:`content_digest`) identifies an archive by the files it holds, not by its own
bytes: the SHA-256 of the sorted lines ``"<sha256 of member>  <member file name>\\n"``. It verifies
sources whose archives are regenerated on request (GitHub's tag tarballs) and local copies placed by hand.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..errors import DataFormatError
from ..io.files import fsync_dir

__all__ = [
    "archive_content_digest",
    "content_digest",
    "folder_content_digest",
    "is_unpacked",
    "marker_path",
    "unpack_archive",
]

#: Refuse archives that unpack to more than this (the largest registered one, N-MNIST train, is ~1 GB).
MAX_UNPACKED_BYTES = 8 * 2**30


def _target(member: str, strip: int) -> PurePosixPath | None:
    """The member's path below the target folder after dropping ``strip`` leading parts; None when the
    name is absolute or climbs out with ``..``."""
    p = PurePosixPath(member.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return None
    parts = p.parts[strip:]
    return PurePosixPath(*parts) if parts else None


def _members(archive: Path, kind: str, pattern: str) -> Iterator[tuple[str, int, Any]]:
    """(name, size, handle) of every regular-file member matching ``pattern``."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir() and fnmatch.fnmatch(info.filename, pattern):
                    yield info.filename, info.file_size, (z, info)
    elif kind == "tar.gz":
        with tarfile.open(archive, "r:gz") as t:
            for m in t:
                if m.isfile() and fnmatch.fnmatch(m.name, pattern):
                    yield m.name, m.size, (t, m)
    else:
        raise ValueError(f"unknown archive kind {kind!r}; expected 'zip' or 'tar.gz'")


def _open(handle: Any) -> IO[bytes]:
    container, info = handle
    if isinstance(container, zipfile.ZipFile):
        return container.open(info)
    f = container.extractfile(info)
    assert f is not None  # regular files only
    return f


def _read_members(archive: Path, kind: str, pattern: str) -> Iterator[tuple[str, int, IO[bytes]]]:
    try:
        for name, size, handle in _members(archive, kind, pattern):
            with _open(handle) as f:
                yield name, size, f
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DataFormatError(archive, f"not a readable {kind} archive ({type(e).__name__}: {e})") from None


def content_digest(entries: list[tuple[str, str]]) -> str:
    """SHA-256 of the sorted ``"<sha256>  <name>\\n"`` lines of ``(name, sha256)`` pairs."""
    lines = sorted(f"{sha}  {name}\n" for name, sha in entries)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def archive_content_digest(archive: Path, kind: str, pattern: str) -> tuple[str, int]:
    """(content digest, number of members) of the members of ``archive`` matching ``pattern``."""
    entries = []
    for name, _, f in _read_members(archive, kind, pattern):
        h = hashlib.sha256()
        for chunk in iter(functools.partial(f.read, 1 << 20), b""):
            h.update(chunk)
        entries.append((PurePosixPath(name).name, h.hexdigest()))
    return content_digest(entries), len(entries)


def folder_content_digest(folder: Path, glob: str) -> tuple[str, int]:
    """(content digest, number of files) of the files in ``folder`` matching ``glob`` (a copy by hand)."""
    entries = [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in folder.glob(glob) if p.is_file()]
    return content_digest(entries), len(entries)


def marker_path(root: Path, archive_name: str) -> Path:
    return root / f".hm2bp-unpacked-{archive_name}.json"


def is_unpacked(root: Path, archive_name: str) -> bool:
    """Whether ``archive_name`` was unpacked into ``root`` completely (its marker and outputs exist)."""
    try:
        record = json.loads(marker_path(root, archive_name).read_text())
        return all((root / top).exists() for top in record["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def unpack_archive(archive: Path, root: Path, *, kind: str, pattern: str, strip: int = 0,
                   checksum: str = "") -> list[Path]:
    """Unpack the members of ``archive`` matching ``pattern`` into ``root`` (``strip`` leading path parts
    dropped); returns the top-level paths created. Existing outputs of the same names are replaced.

    Raises:
        DataFormatError: unreadable archive, a member with an unsafe name, no matching member, or more
            than :data:`MAX_UNPACKED_BYTES`.
    """
    staging = root / f".{archive.name}.unpacking"
    _remove(staging)
    staging.mkdir(parents=True)
    total, count = 0, 0
    tops: set[str] = set()
    try:
        for name, size, f in _read_members(archive, kind, pattern):
            rel = _target(name, strip)
            if rel is None:
                raise DataFormatError(archive, f"member {name!r} has an unsafe or empty path; nothing unpacked")
            total += size
            if total > MAX_UNPACKED_BYTES:
                raise DataFormatError(archive, f"unpacks to more than {MAX_UNPACKED_BYTES:,} bytes; refused")
            out = staging / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "wb") as g:
                shutil.copyfileobj(f, g, 1 << 20)
            tops.add(rel.parts[0])
            count += 1
        if not count:
            raise DataFormatError(archive, f"holds no member matching {pattern!r}; nothing unpacked")
        for top in sorted(tops):  # move into place: each top-level output appears whole
            final = root / top
            _remove(final)
            os.replace(staging / top, final)
        fsync_dir(root)
    finally:
        _remove(staging)
    record = {"archive": archive.name, "checksum": checksum, "members": count, "outputs": sorted(tops)}
    marker = marker_path(root, archive.name)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, marker)  # written last: its presence means every output above is complete
    return [root / t for t in sorted(tops)]
