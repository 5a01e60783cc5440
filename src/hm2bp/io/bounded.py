"""Bounded reading of a file that may be gzip-compressed, shared by the parsers of io/ and data/.

Nothing is read beyond a caller's bound: a raw file larger than the bound is refused from its size, a
gzip stream is decompressed only up to one byte past it (a gzip bomb costs the bound, not its size).
"""

from __future__ import annotations

import gzip
import os
import typing
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from hm2bp.errors import DataFormatError

__all__ = ["GZIP_MAGIC", "HARD_MAX_BYTES", "is_gzip", "open_maybe_gzip", "read_bounded", "read_head", "resolve_path"]

PathLike = str | os.PathLike[str]
GZIP_MAGIC = b"\x1f\x8b"
#: Upper bound on any file the authors' readers load into memory (also bounds gzip bombs).
HARD_MAX_BYTES = 1 << 31


def read_head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of a file (for content sniffing)."""
    with open(path, "rb") as f:
        return f.read(n)


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes (content, not name, decides)."""
    return read_head(path, 2) == GZIP_MAGIC


@contextmanager
def open_maybe_gzip(path: Path) -> Iterator[IO[bytes]]:
    """Open a file for reading, decompressing it when it is gzip."""
    with (gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")) as f:
        yield typing.cast(IO[bytes], f)


def resolve_path(path: PathLike) -> Path:
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


def read_bounded(path: PathLike, max_bytes: int) -> tuple[Path, bytes]:
    """Read a (possibly gzip-compressed) file, refusing more than ``max_bytes`` of content."""
    max_bytes = min(int(max_bytes), HARD_MAX_BYTES)
    real = resolve_path(path)
    try:
        with open(real, "rb") as f:
            head = f.read(2)
            if head == GZIP_MAGIC:
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
