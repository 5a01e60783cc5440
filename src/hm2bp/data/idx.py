"""IDX files (MNIST, EMNIST): a checked reader and the two dataset loaders.

The IDX format: a 4-byte magic ``0x00 0x00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
data in C order, big-endian. MNIST labels have magic 2049 (uint8, 1 dim), images 2051 (uint8, 3 dims).
Files may be raw or gzip-compressed (detected from the content, not the name).

Every size in a header is checked against the file before anything is allocated; any bad or missing file
raises :class:`hm2bp.errors.DataFormatError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from hm2bp.errors import DataFormatError
from hm2bp.io.bounded import is_gzip, open_maybe_gzip

__all__ = ["load_emnist", "load_mnist", "read_emnist_mapping", "read_idx"]

# IDX type byte → numpy big-endian dtype
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
# DEFLATE cannot expand data by more than about 1032:1; a header claiming more than this is a lie.
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 22


def _read_exact_gzip(f: gzip.GzipFile, n: int) -> bytes:
    """Read up to n bytes in bounded chunks (never one allocation of an unchecked size)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = f.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _parse_header(path: Path, head: bytes) -> tuple[np.dtype, int]:
    """Validate the 4-byte magic; return (dtype, ndim)."""
    if len(head) < 4:
        raise DataFormatError(path, f"truncated: {len(head)} bytes, too short for an IDX header")
    if head[0] != 0 or head[1] != 0:
        magic = int.from_bytes(head[:4], "big")
        raise DataFormatError(
            path, f"wrong magic number {magic} (0x{magic:08x}): not an IDX file (expected 0x0000TTNN)"
        )
    type_byte, ndim = head[2], head[3]
    if type_byte not in _IDX_DTYPES:
        raise DataFormatError(path, f"unknown IDX data type byte 0x{type_byte:02x}")
    if ndim == 0:
        raise DataFormatError(path, "IDX header declares 0 dimensions")
    return np.dtype(_IDX_DTYPES[type_byte]), ndim


def _drain_gzip(path: Path, f: gzip.GzipFile) -> int:
    """Decompress the rest of the stream without keeping it (bounded chunks); return its length.

    Reading to the end makes a corrupt stream fail its CRC/length check here, instead of being reported
    by its (wrong) decompressed length; it also lets a partial read verify the whole file.
    """
    extra = 0
    try:
        while chunk := f.read(_CHUNK):
            extra += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(path, f"corrupt gzip stream: {e}") from e
    return extra


def read_idx(path: str | os.PathLike[str], limit: int | None = None) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a numpy array in native byte order.

    The header's sizes are checked against the file (exact size for raw files; a DEFLATE bound and the
    exact decompressed length for gzip files) before the data is allocated.

    Args:
        limit: read only the first ``limit`` items along the first dimension (the rest of a gzip stream
            is still decompressed, in bounded chunks and without being kept, to verify the file).

    Raises:
        DataFormatError: missing file, wrong magic, unknown type byte, truncated or over-long data,
            or a corrupt gzip stream.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    file_size = path.stat().st_size
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as f:
                head = _read_exact_gzip(f, 4)
                dtype, ndim = _parse_header(path, head)
                dims_raw = _read_exact_gzip(f, 4 * ndim)
                if len(dims_raw) < 4 * ndim:
                    raise DataFormatError(path, "truncated: the IDX header's dimension sizes are cut off")
                dims = [int.from_bytes(dims_raw[4 * k : 4 * k + 4], "big") for k in range(ndim)]
                n_bytes = int(np.prod(dims, dtype=object)) * dtype.itemsize
                if n_bytes > file_size * _MAX_DEFLATE_RATIO:
                    raise DataFormatError(
                        path,
                        f"header claims shape {tuple(dims)} ({n_bytes:,} bytes), impossible for a "
                        f"{file_size:,}-byte gzip file (truncated or corrupt)",
                    )
                n_bytes, dims, total = _limited(dims, dtype, limit)
                data = _read_exact_gzip(f, n_bytes)
                if len(data) == n_bytes:
                    extra = _drain_gzip(path, f)
                    if extra != total - n_bytes:
                        what = "truncated" if extra < total - n_bytes else "has trailing bytes"
                        raise DataFormatError(
                            path, f"{what}: header claims {total:,} data bytes, the gzip stream holds "
                            f"{n_bytes + extra:,}")
        else:
            with open(path, "rb") as f:
                head = f.read(4)
                dtype, ndim = _parse_header(path, head)
                dims_raw = f.read(4 * ndim)
                if len(dims_raw) < 4 * ndim:
                    raise DataFormatError(path, "truncated: the IDX header's dimension sizes are cut off")
                dims = [int.from_bytes(dims_raw[4 * k : 4 * k + 4], "big") for k in range(ndim)]
                n_bytes = int(np.prod(dims, dtype=object)) * dtype.itemsize
                avail = file_size - 4 - 4 * ndim
                if n_bytes != avail:
                    what = "truncated" if avail < n_bytes else "has trailing bytes"
                    raise DataFormatError(
                        path,
                        f"{what}: header claims shape {tuple(dims)} = {n_bytes:,} data bytes, "
                        f"the file holds {avail:,}",
                    )
                n_bytes, dims, _ = _limited(dims, dtype, limit)
                data = f.read(n_bytes)
    except DataFormatError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataFormatError(path, f"cannot read: {e}") from e
    if len(data) != n_bytes:
        what = "truncated" if len(data) < n_bytes else "has trailing bytes"
        raise DataFormatError(
            path,
            f"{what}: header claims shape {tuple(dims)} = {n_bytes:,} data bytes, "
            f"the file holds {'more' if len(data) > n_bytes else f'{len(data):,}'}",
        )
    arr = np.frombuffer(bytearray(data), dtype=dtype).reshape(dims)  # one writable copy, not two
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _limited(dims: list[int], dtype: np.dtype, limit: int | None) -> tuple[int, list[int], int]:
    """(bytes to read, dims of the result, bytes of the whole data) for the first ``limit`` items."""
    total = int(np.prod(dims, dtype=object)) * dtype.itemsize
    if limit is None or limit < 0 or limit >= dims[0]:
        return total, dims, total
    item = int(np.prod(dims[1:], dtype=object)) * dtype.itemsize
    return item * limit, [limit, *dims[1:]], total


def _find(root: Path, name: str, dataset: str, expected: list[str]) -> Path:
    for cand in (root / name, root / (name + ".gz")):
        if cand.is_file():
            return cand
    raise DataFormatError(
        root / name,
        f"missing {dataset} file (looked for '{name}' and '{name}.gz'); place the files "
        f"{', '.join(expected)} (raw or .gz) in {root}",
    )


def _check_pair(
    img_path: Path, lab_path: Path, images: np.ndarray, labels: np.ndarray, n_classes: int
) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataFormatError(
            img_path, f"expected uint8 images [N, 28, 28] (magic 2051), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataFormatError(
            lab_path, f"expected uint8 labels [N] (magic 2049), got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataFormatError(
            lab_path, f"{labels.shape[0]} labels but {images.shape[0]} images in {img_path.name}"
        )
    if labels.size and int(labels.max()) >= n_classes:
        raise DataFormatError(lab_path, f"label {int(labels.max())} out of range 0…{n_classes - 1}")


def _read_pair(img_path: Path, lab_path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Labels in full (small), images only up to ``limit``; the counts must still agree file to file."""
    labels = read_idx(lab_path)
    images = read_idx(img_path, limit)
    if limit is not None and 0 <= limit < labels.shape[0]:
        n_img = _header_count(img_path)
        if n_img != labels.shape[0]:
            raise DataFormatError(lab_path, f"{labels.shape[0]} labels but {n_img} images in {img_path.name}")
        labels = labels[:limit]
    return images, labels


def _header_count(path: Path) -> int:
    with open_maybe_gzip(path) as f:
        head = f.read(8)
    return int.from_bytes(head[4:8], "big")


def _split_prefix(split: str, train: str, test: str) -> str:
    s = split.lower()
    if s == "train":
        return train
    if s in ("test", "t10k"):
        return test
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def load_mnist(root: str | os.PathLike[str], split: str = "train",
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST from its official IDX files in ``root`` (only the first ``limit`` samples, if given).

    Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each raw or with ``.gz``.

    Returns:
        ``(images uint8 [N, 28, 28], labels int64 [N])``; 60,000 train / 10,000 test for the full set.
    """
    root = Path(root)
    prefix = _split_prefix(split, "train", "t10k")
    names = [f"{p}-{k}" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    img_path = _find(root, f"{prefix}-images-idx3-ubyte", "MNIST", names)
    lab_path = _find(root, f"{prefix}-labels-idx1-ubyte", "MNIST", names)
    images, labels = _read_pair(img_path, lab_path, limit)
    _check_pair(img_path, lab_path, images, labels, 10)
    return images, labels.astype(np.int64)


def read_emnist_mapping(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read an EMNIST mapping file (``label ascii_code`` per line) into {label: character}."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    mapping: dict[int, str] = {}
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"cannot read the mapping: {e}") from e
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            label, code = int(parts[0]), int(parts[1])
            mapping[label] = chr(code)
        except (ValueError, OverflowError):
            raise DataFormatError(path, f"line {lineno}: expected 'label ascii_code', got {line!r}") from None
    if not mapping:
        raise DataFormatError(path, "empty mapping file")
    return mapping


_EMNIST_CLASSES = {"balanced": 47, "byclass": 62, "bymerge": 47, "digits": 10, "letters": 27, "mnist": 10}


def load_emnist(
    root: str | os.PathLike[str], split: str = "train", subset: str = "balanced", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Load an EMNIST subset (default Balanced, 47 classes) from the official ``gzip/`` IDX files.

    Files in ``root``: ``emnist-<subset>-{train,test}-{images-idx3,labels-idx1}-ubyte[.gz]`` and
    ``emnist-<subset>-mapping.txt``. The official files store every image transposed; this loader
    transposes them back, so ``images[k]`` is upright (row = top to bottom) like MNIST.

    Returns:
        ``(images uint8 [N, 28, 28], labels int64 [N], mapping {label: character})``.
    """
    root = Path(root)
    subset = subset.lower()
    if subset not in _EMNIST_CLASSES:
        raise ValueError(f"unknown EMNIST subset {subset!r}; one of {sorted(_EMNIST_CLASSES)}")
    s = _split_prefix(split, "train", "test")
    base = f"emnist-{subset}"
    names = [f"{base}-{p}-{k}" for p in ("train", "test") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    names.append(f"{base}-mapping.txt")
    img_path = _find(root, f"{base}-{s}-images-idx3-ubyte", "EMNIST", names)
    lab_path = _find(root, f"{base}-{s}-labels-idx1-ubyte", "EMNIST", names)
    map_path = root / f"{base}-mapping.txt"
    if not map_path.is_file():
        raise DataFormatError(
            map_path, f"missing EMNIST mapping file; place {', '.join(names)} in {root}"
        )
    mapping = read_emnist_mapping(map_path)
    n_classes = _EMNIST_CLASSES[subset]
    # 'letters' labels are 1…26; the others 0…n−1.
    images, labels = _read_pair(img_path, lab_path, limit)
    _check_pair(img_path, lab_path, images, labels, n_classes + (1 if subset == "letters" else 0))
    missing = sorted(set(np.unique(labels).tolist()) - set(mapping))
    if missing:
        raise DataFormatError(map_path, f"labels {missing[:10]} of {lab_path.name} have no mapping entry")
    images = np.ascontiguousarray(images.transpose(0, 2, 1))
    return images, labels.astype(np.int64), mapping
