"""Checked downloads against a local HTTP server on 127.0.0.1 (no other network is used).

The server (``http.server`` in a thread) serves in-memory files and can: honour or ignore ``Range``,
drop the connection after a given number of body bytes, serve corrupted bytes, stall (for timeouts), send
no Content-Length, or answer with an HTTP error. Every test is bounded: timeouts of at most a few seconds,
backoff 0.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared_paths
from hm2bp.data.download import DATASETS, DownloadError, download, fetch_dataset, sha256_file
from hm2bp.errors import ConfigError, DataFormatError

pytestmark = pytest.mark.reliability

SHARED_MNIST = shared_paths.DATA / "mnist"
FAST = dict(timeout=5.0, backoff=0.0)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _content(n: int, seed: int = 0) -> bytes:
    out, x = bytearray(), seed
    while len(out) < n:
        x = hashlib.sha256(x.to_bytes(8, "little") + bytes(out[-32:])).digest()
        out += x
        x = int.from_bytes(x[:8], "little")
    return bytes(out[:n])


# --------------------------------------------------------------------------------------------------
# The local server
# --------------------------------------------------------------------------------------------------
@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True
    drops: list[int | None] = field(default_factory=list)  # per request: close after this many body bytes
    statuses: list[int] = field(default_factory=list)  # per request: answer with this HTTP error first
    corrupt: bool = False  # flip one byte in the middle of every file
    stall: float = 0.0  # seconds to wait before answering
    no_length: bool = False  # no Content-Length header (the body ends when the connection closes)
    throttle: float = 0.0  # seconds to sleep after each 16 KiB of body
    trickle: float = 0.0  # send the body one byte at a time, sleeping this long after each
    log: list[tuple[str, str | None, int]] = field(default_factory=list)  # (path, Range header, status)


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        b = self.server.behaviour  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        name = self.path.lstrip("/")
        if b.stall:
            time.sleep(b.stall)
        if b.statuses:
            status = b.statuses.pop(0)
            b.log.append((name, rng, status))
            self.send_error(status)
            return
        if name not in b.files:
            b.log.append((name, rng, 404))
            self.send_error(404)
            return
        data = b.files[name]
        if b.corrupt and data:
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        start, status = 0, 200
        if rng and b.ranges and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                b.log.append((name, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        b.log.append((name, rng, status))
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if not b.no_length:
            self.send_header("Content-Length", str(len(body)))
        if b.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        drop = b.drops.pop(0) if b.drops else None
        if drop is not None:
            body = body[:drop]
        try:
            if b.trickle:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(b.trickle)
                return
            for i in range(0, len(body), 16384):
                self.wfile.write(body[i : i + 16384])
                if b.throttle:
                    time.sleep(b.throttle)
            self.wfile.flush()
            if drop is not None:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True


class Server:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.behaviour = Behaviour()
        self.httpd.behaviour = self.behaviour  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def url(self, name: str) -> str:
        return self.base + name

    def reset(self, **kw: Any) -> Behaviour:
        files = self.behaviour.files
        self.behaviour = Behaviour(files=files, **kw)
        self.httpd.behaviour = self.behaviour  # type: ignore[attr-defined]
        return self.behaviour

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Any:
    s = Server()
    yield s
    s.close()


def _closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/x"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


DATA = _content(200_000)


# --------------------------------------------------------------------------------------------------
# download()
# --------------------------------------------------------------------------------------------------
def test_plain_download(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    dest = download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), expected_size=len(DATA), **FAST)
    assert dest.read_bytes() == DATA and _leftovers(tmp_path) == []
    assert server.behaviour.log == [("f.bin", None, 200)]
    # a verified file is not fetched again; a wrong one is replaced only by a verified copy
    download(server.url("f.bin"), dest, _sha(DATA), **FAST)
    assert len(server.behaviour.log) == 1
    dest.write_bytes(b"wrong")
    download(server.url("f.bin"), dest, _sha(DATA), **FAST)
    assert dest.read_bytes() == DATA and len(server.behaviour.log) == 2


def test_resume_with_range(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    (tmp_path / "f.bin.part").write_bytes(DATA[:70_000])
    download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == DATA and _leftovers(tmp_path) == []
    assert server.behaviour.log == [("f.bin", "bytes=70000-", 206)]


def test_part_restarts_when_range_is_ignored(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    server.reset(ranges=False)
    (tmp_path / "f.bin.part").write_bytes(DATA[:70_000])
    download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == DATA and _leftovers(tmp_path) == []
    assert server.behaviour.log == [("f.bin", "bytes=70000-", 200)]


def test_complete_part_is_verified_after_416(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    (tmp_path / "f.bin.part").write_bytes(DATA)  # e.g. killed after the last byte, before the rename
    download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert server.behaviour.log == [("f.bin", f"bytes={len(DATA)}-", 416)]


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_dropped_connection_is_retried(server: Server, tmp_path: Path, ranges: bool) -> None:
    server.behaviour.files["f.bin"] = DATA
    b = server.reset(ranges=ranges, drops=[50_000, 30_000])
    download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), retries=2, **FAST)
    assert (tmp_path / "f.bin").read_bytes() == DATA and _leftovers(tmp_path) == []
    if ranges:
        assert b.log == [("f.bin", None, 200), ("f.bin", "bytes=50000-", 206), ("f.bin", "bytes=80000-", 206)]
    else:
        assert [s for _, _, s in b.log] == [200, 200, 200]


def test_gives_up_keeps_part_and_resumes_later(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    server.reset(drops=[30_000, 30_000, 30_000])
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as ei:
        download(server.url("f.bin"), dest, _sha(DATA), retries=2, **FAST)
    msg = str(ei.value)
    assert str(dest) in msg and server.url("f.bin") in msg and "3 attempt" in msg
    assert not dest.exists() and (tmp_path / "f.bin.part").stat().st_size == 90_000
    b = server.reset()
    download(server.url("f.bin"), dest, _sha(DATA), **FAST)
    assert dest.read_bytes() == DATA and b.log == [("f.bin", "bytes=90000-", 206)]


def test_corrupted_bytes_are_refused_and_deleted(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    server.reset(corrupt=True)
    dest = tmp_path / "f.bin"
    with pytest.raises(DataFormatError) as ei:
        download(server.url("f.bin"), dest, _sha(DATA), **FAST)
    msg = str(ei.value)
    bad = bytearray(DATA)
    bad[len(DATA) // 2] ^= 0xFF
    assert msg.startswith(str(dest)) and server.url("f.bin") in msg
    assert _sha(DATA) in msg and _sha(bytes(bad)) in msg
    assert list(tmp_path.iterdir()) == []


def test_stale_part_restarts_once_from_scratch(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    (tmp_path / "f.bin.part").write_bytes(_content(70_000, seed=9))  # a part of some other file
    download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), **FAST)
    assert (tmp_path / "f.bin").read_bytes() == DATA and _leftovers(tmp_path) == []
    assert server.behaviour.log == [("f.bin", "bytes=70000-", 206), ("f.bin", None, 200)]
    # ... but a server that keeps serving wrong bytes is not retried forever
    server.reset(corrupt=True)
    (tmp_path / "f.bin").unlink()
    (tmp_path / "f.bin.part").write_bytes(DATA[:10])
    with pytest.raises(DataFormatError, match="does not match"):
        download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), **FAST)
    assert list(tmp_path.iterdir()) == [] and len(server.behaviour.log) == 2


@pytest.mark.parametrize("no_length", [False, True], ids=["announced", "streamed"])
def test_oversized_is_refused(server: Server, tmp_path: Path, no_length: bool) -> None:
    server.behaviour.files["f.bin"] = DATA
    server.reset(no_length=no_length)
    with pytest.raises(DataFormatError, match="announces" if not no_length else "sent more") as ei:
        download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), expected_size=100_000, **FAST)
    assert str(tmp_path / "f.bin") in str(ei.value) and list(tmp_path.iterdir()) == []


def test_no_content_length_still_verified(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    server.reset(no_length=True, drops=[50_000])  # the early close cannot be told from the end of the body
    with pytest.raises(DataFormatError, match="does not match"):
        download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), **FAST)
    assert list(tmp_path.iterdir()) == []


def test_timeouts_are_bounded(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    server.reset(stall=3.0)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="2 attempt"):
        download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), retries=1, timeout=0.3, backoff=0.0)
    assert time.monotonic() - t0 < 2.5
    assert not (tmp_path / "f.bin").exists()


def test_http_errors(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.bin"] = DATA
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("nope"), tmp_path / "f.bin", _sha(DATA), retries=3, **FAST)
    assert len(server.behaviour.log) == 1  # a 404 is not retried
    b = server.reset(statuses=[503, 500])
    download(server.url("f.bin"), tmp_path / "f.bin", _sha(DATA), retries=2, **FAST)
    assert [s for _, _, s in b.log] == [503, 500, 200]
    with pytest.raises(DownloadError, match="cannot connect"):
        download(_closed_port_url(), tmp_path / "g.bin", _sha(DATA), retries=1, **FAST)
    assert not (tmp_path / "g.bin").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download("http://127.0.0.1:1/x", tmp_path / "x", "abc")
    with pytest.raises(ValueError, match="http"):
        download("ftp://127.0.0.1/x", tmp_path / "x", "0" * 64)


# --------------------------------------------------------------------------------------------------
# gzip sources
# --------------------------------------------------------------------------------------------------
GZ = gzip.compress(DATA, mtime=0)


def test_gzip_source_verified_by_content(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["f.gz"] = GZ
    b = server.reset(drops=[GZ and len(GZ) // 3])
    dest = download(server.url("f.gz"), tmp_path / "f.bin", _sha(DATA), expected_size=len(DATA), gunzip=True,
                    **FAST)
    assert dest.read_bytes() == DATA and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert [s for _, _, s in b.log] == [200, 206]


@pytest.mark.parametrize("bad", ["truncated", "not-gzip", "trailing"])
def test_bad_gzip_is_refused(server: Server, tmp_path: Path, bad: str) -> None:
    served = {"truncated": GZ[: len(GZ) // 2], "not-gzip": DATA, "trailing": GZ + b"junk"}[bad]
    server.behaviour.files["f.gz"] = served
    with pytest.raises(DataFormatError) as ei:
        download(server.url("f.gz"), tmp_path / "f.bin", _sha(DATA), gunzip=True, **FAST)
    assert str(tmp_path / "f.bin") in str(ei.value) and server.url("f.gz") in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_gzip_bomb_stops_at_the_expected_size(server: Server, tmp_path: Path) -> None:
    server.behaviour.files["bomb.gz"] = gzip.compress(bytes(50_000_000), mtime=0)  # 49 KB -> 50 MB
    with pytest.raises(DataFormatError, match="more than the expected 1,000"):
        download(server.url("bomb.gz"), tmp_path / "f.bin", _sha(DATA), expected_size=1000, gunzip=True, **FAST)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Fuzz: random faults
# --------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    size=st.integers(0, 150_000),
    ranges=st.booleans(),
    drop_fracs=st.lists(st.floats(0, 1, exclude_max=True), max_size=4),
    corrupt=st.booleans(),
    part=st.sampled_from(["none", "prefix", "stale", "longer"]),
    gz=st.booleans(),
)
def test_random_faults(server: Server, tmp_path_factory: pytest.TempPathFactory, size: int, ranges: bool,
                       drop_fracs: list[float], corrupt: bool, part: str, gz: bool) -> None:
    """Whatever happens, ``dest`` is absent or holds exactly the right bytes, and on success no part is left."""
    folder = tmp_path_factory.mktemp("fuzz")
    content = _content(size, seed=size)
    served = gzip.compress(content, mtime=0) if gz else content
    server.behaviour.files["f"] = served
    server.reset(ranges=ranges, corrupt=corrupt, drops=[int(f * len(served)) for f in drop_fracs])
    raw_part = folder / ("f.gz.part" if gz else "f.part")
    if part == "prefix":
        raw_part.write_bytes(served[: len(served) // 2])
    elif part == "stale":
        raw_part.write_bytes(_content(len(served) // 2 + 1, seed=size + 1))
    elif part == "longer":
        raw_part.write_bytes(served + b"x" * 10)
    dest = folder / "f"
    retries = 3
    bad = corrupt and len(served) > 0
    try:
        download(server.url("f"), dest, _sha(content), expected_size=size, gunzip=gz, retries=retries, **FAST)
    except DataFormatError as e:
        OUTCOMES["wrong bytes refused"] += 1
        assert bad, e
        assert str(dest) in str(e) and not dest.exists() and _leftovers(folder) == []
    except DownloadError as e:
        OUTCOMES["gave up, part kept"] += 1
        assert len(drop_fracs) > retries, e
        assert str(dest) in str(e) and not dest.exists()
    else:
        OUTCOMES["verified"] += 1
        assert dest.read_bytes() == content and _leftovers(folder) == []
        assert not bad or gz  # (a flipped byte in a gzip header field that does not matter)


OUTCOMES: Counter[str] = Counter()


def test_random_faults_reached_every_outcome() -> None:
    if not OUTCOMES:
        pytest.skip("runs after test_random_faults")
    print("download fuzz outcomes:", dict(OUTCOMES))
    assert set(OUTCOMES) == {"wrong bytes refused", "gave up, part kept", "verified"}, OUTCOMES


# --------------------------------------------------------------------------------------------------
# A download killed with SIGKILL
# --------------------------------------------------------------------------------------------------
@pytest.mark.skipif(os.name == "nt", reason="needs POSIX SIGKILL")
def test_sigkill_mid_download_leaves_only_a_part(server: Server, tmp_path: Path) -> None:
    big = _content(3_000_000, seed=5)
    server.behaviour.files["big.bin"] = big
    server.reset(throttle=0.01)  # 16 KiB per 10 ms: about 2 s for the whole file
    dest = tmp_path / "big.bin"
    code = ("import sys; from hm2bp.data.download import download; "
            "download(sys.argv[1], sys.argv[2], sys.argv[3], timeout=10, backoff=0)")
    proc = subprocess.Popen([sys.executable, "-c", code, server.url("big.bin"), str(dest), _sha(big)])
    part = tmp_path / "big.bin.part"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if part.exists() and part.stat().st_size >= 300_000:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    have = part.stat().st_size
    assert 0 < have < len(big) and not dest.exists()
    assert part.read_bytes() == big[:have]  # what was received is intact, just incomplete
    b = server.reset()
    download(server.url("big.bin"), dest, _sha(big), **FAST)
    assert dest.read_bytes() == big and _leftovers(tmp_path) == []
    assert b.log == [("big.bin", f"bytes={have}-", 206)]


# --------------------------------------------------------------------------------------------------
# fetch_dataset
# --------------------------------------------------------------------------------------------------
def test_registry_claims_only_verified_checksums() -> None:
    """Every registered checksum is that of the local copy (../shared/data/mnist, the .gz decompressed)."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"no local MNIST copy at {SHARED_MNIST}")
    manifest = dict(line.split()[::-1] for line in (SHARED_MNIST / "MANIFEST.sha256").read_text().splitlines())
    for f in DATASETS["mnist"].files:
        assert manifest[f.name] == f.sha256
        assert sha256_file(SHARED_MNIST / f.source, gunzip=True) == f.sha256
        with gzip.open(SHARED_MNIST / f.source) as g:
            assert sum(len(c) for c in iter(lambda: g.read(1 << 20), b"")) == f.size


def test_fetch_mnist_from_local_mirrors(server: Server, tmp_path: Path) -> None:
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"no local MNIST copy at {SHARED_MNIST}")
    for f in DATASETS["mnist"].files:
        server.behaviour.files["good/" + f.source] = (SHARED_MNIST / f.source).read_bytes()
        server.behaviour.files["bad/" + f.source] = gzip.compress(b"not mnist", mtime=0)
    root = tmp_path / "mnist"
    (root).mkdir()
    (root / "t10k-labels-idx1-ubyte.part").write_bytes(b"\x00\x00\x08\x01")  # a stale part from a killed run
    fetch_dataset("mnist", root, mirrors=[server.base + "bad/", _closed_port_url(), server.base + "good/"],
                  retries=0, **FAST)
    assert sorted(p.name for p in root.iterdir()) == sorted(f.name for f in DATASETS["mnist"].files)
    from hm2bp.data.idx import load_mnist

    x, y = load_mnist(root, "test")
    assert x.shape == (10000, 28, 28) and y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    n = len(server.behaviour.log)
    fetch_dataset("mnist", root, mirrors=[server.base + "good/"], **FAST)
    assert len(server.behaviour.log) == n  # everything present and verified: no request
    # the read-only shared copy holds only .gz files: recognised as present, nothing is written there
    fetch_dataset("mnist", SHARED_MNIST, mirrors=[server.base + "good/"], **FAST)
    assert len(server.behaviour.log) == n


def test_fetch_errors(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="registered: emnist, fsdd, mnist, nmnist"):
        fetch_dataset("cifar10", tmp_path)
    for f in DATASETS["mnist"].files:
        server.behaviour.files[f.source] = gzip.compress(b"not mnist", mtime=0)
    with pytest.raises(DataFormatError, match="no mirror served the right bytes") as ei:
        fetch_dataset("mnist", tmp_path / "a", mirrors=[server.base], retries=0, **FAST)
    assert "train-images-idx3-ubyte" in str(ei.value) and "by hand" in str(ei.value)
    with pytest.raises(DownloadError, match="no mirror worked"):
        fetch_dataset("mnist", tmp_path / "b", mirrors=[_closed_port_url()], retries=0, **FAST)
    assert list((tmp_path / "a").iterdir()) == [] and list((tmp_path / "b").iterdir()) == []


@pytest.mark.reliability
def test_trickling_server_hits_the_minimum_rate_and_the_deadline(server: Server, tmp_path: Path) -> None:
    """#18 item 13: one byte every 0.5 s never trips the per-read timeout; the rate and deadline do."""
    data = _content(5_000)
    server.behaviour.files["slow.bin"] = data
    server.reset(trickle=0.5)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"too slow: \d bytes/s over 1.\d s, below the minimum of 100 bytes/s"):
        download(server.url("slow.bin"), tmp_path / "slow.bin", _sha(data), timeout=2.0, retries=1, backoff=0,
                 min_rate=100, rate_window=1.0)
    assert time.monotonic() - t0 < 6
    assert len(server.behaviour.log) == 2  # retried once, resuming
    server.reset(trickle=0.5)
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"longer than its deadline of 1.5 s; \d+ bytes kept"):
        download(server.url("slow.bin"), tmp_path / "slow2.bin", _sha(data), timeout=2.0, retries=5, backoff=0,
                 min_rate=0, deadline=1.5)
    assert time.monotonic() - t0 < 4
    server.reset()
    download(server.url("slow.bin"), tmp_path / "slow2.bin", _sha(data), timeout=2.0)  # resumes, verifies
