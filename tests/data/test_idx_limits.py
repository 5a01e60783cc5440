"""#18 items 11, 17: an IDX file is read only as far as needed (a gzip bomb costs no memory beyond the
images used), and a corrupt gzip stream is reported as corrupt, not by its wrong length."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hm2bp.data.idx import load_mnist, read_idx
from hm2bp.errors import DataFormatError

pytestmark = pytest.mark.reliability


def _idx_images(n: int, fill: int = 0) -> bytes:
    head = bytes([0, 0, 8, 3]) + n.to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    return head + bytes([fill]) * (n * 784)


def _idx_labels(n: int) -> bytes:
    return bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(i % 10 for i in range(n))


def _mnist_dir(root: Path, n: int) -> Path:
    for split in ("train", "t10k"):
        (root / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_images(n), 9, mtime=0))
        (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(n), 9, mtime=0))
    return root


def test_gzip_bomb_reads_only_the_images_used(tmp_path: Path) -> None:
    root = _mnist_dir(tmp_path, 200_000)  # 157 MB of zero images in a ~150 KB gzip
    assert (root / "train-images-idx3-ubyte.gz").stat().st_size < 400_000
    tracemalloc.start()
    try:
        images, labels = load_mnist(root, "train", limit=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert images.shape == (100, 28, 28) and labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # the full read held 2 × 157 MB


def test_limited_read_still_checks_the_whole_file(tmp_path: Path) -> None:
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_images(50)[:-10], mtime=0))  # the last image cut short
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx(p, limit=3)
    p.write_bytes(gzip.compress(_idx_images(50) + b"xx", mtime=0))
    with pytest.raises(DataFormatError, match="trailing bytes"):
        read_idx(p, limit=3)
    raw = tmp_path / "y-idx3-ubyte"
    raw.write_bytes(_idx_images(50, 7))
    a = read_idx(raw, limit=3)
    assert a.shape == (3, 28, 28) and int(a.max()) == 7 and a.flags.writeable
    assert np.array_equal(read_idx(raw)[:3], a)


def test_label_image_count_mismatch_with_limit(tmp_path: Path) -> None:
    root = _mnist_dir(tmp_path, 40)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(41), mtime=0))
    with pytest.raises(DataFormatError, match="41 labels but 40 images"):
        load_mnist(root, "train", limit=5)


def test_corrupt_gzip_stream_is_called_corrupt(tmp_path: Path) -> None:
    """Bit flips in the DEFLATE data of a gzip IDX file: each one that is caught is called corrupt (a CRC or
    DEFLATE error), never "has trailing bytes" (which the old reader said for 2,644 of 21,630 such flips,
    because it stopped decompressing one byte past the header's size, before the CRC)."""
    rng = np.random.default_rng(0)
    body = _idx_images(30)[:16] + rng.integers(0, 4, 30 * 784, dtype=np.uint8).tobytes()
    packed = gzip.compress(body, 6, mtime=0)
    refused = 0
    for k in range(40, 400, 3):
        for bit in (0x01, 0x10, 0x80):
            bad = bytearray(packed)
            bad[k] ^= bit
            p = tmp_path / "c-idx3-ubyte.gz"
            p.write_bytes(bytes(bad))
            try:
                read_idx(p)
            except DataFormatError as e:
                refused += 1
                msg = str(e)
                assert "trailing bytes" not in msg and ("corrupt gzip" in msg or "cannot read" in msg), msg
    assert refused > 300
