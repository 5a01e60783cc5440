"""``hm2bp download`` through ``main([...])`` against a loopback HTTP server (127.0.0.1 only, every request
bounded by a 5 s timeout, no retries): MNIST from the local copy, FSDD as a tag tarball verified by the
content digest of its recordings, a zip archive with an MD5 (the EMNIST/N-MNIST mechanism), a hostile
archive, and the offline message."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import shared_paths
from hm2bp.cli import main
from hm2bp.data import download as dl

SHARED = shared_paths.DATA
FAST = ["--retries", "0", "--timeout", "5", "--quiet"]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        files: dict[str, bytes] = self.server.files  # type: ignore[attr-defined]
        name = self.path.lstrip("/")
        self.server.log.append(name)  # type: ignore[attr-defined]
        if name not in files:
            self.send_error(404)
            return
        body = files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.log = {}, []  # type: ignore[attr-defined]
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _base(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/"


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def test_download_mnist(server: ThreadingHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (SHARED / "mnist").is_dir():
        pytest.skip("no local MNIST copy")
    for f in dl.DATASETS["mnist"].files:
        server.files[f.source] = (SHARED / "mnist" / f.source).read_bytes()  # type: ignore[attr-defined]
    root = tmp_path / "mnist"
    assert main(["download", "mnist", str(root), "--mirror", _base(server), *FAST]) == 0
    out = capsys.readouterr().out
    assert f"next: hm2bp train mnist_fc --data-dir {root}" in out
    assert sorted(p.name for p in root.iterdir()) == sorted(f.name for f in dl.DATASETS["mnist"].files)
    n = len(server.log)  # type: ignore[attr-defined]
    assert main(["download", "mnist", str(root), "--mirror", _base(server), *FAST]) == 0
    assert len(server.log) == n  # type: ignore[attr-defined]  # verified copies: nothing fetched again


def _fsdd_tarball(n: int | None = None, tamper: bool = False) -> bytes:
    """The v1.0.10 tag tarball's layout with the first ``n`` recordings (one altered with ``tamper``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as t:
        for p in sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))[:n]:
            data = p.read_bytes()
            if tamper and p.name == "0_george_1.wav":
                data = data[:-1] + bytes([data[-1] ^ 1])
            info = tarfile.TarInfo(f"free-spoken-digit-dataset-1.0.10/recordings/{p.name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        readme = b"not a recording"
        info = tarfile.TarInfo("free-spoken-digit-dataset-1.0.10/README.md")
        info.size = len(readme)
        t.addfile(info, io.BytesIO(readme))
    return buf.getvalue()


@pytest.fixture()
def fsdd_copy() -> Path:
    if not (SHARED / "fsdd" / "recordings").is_dir():
        pytest.skip("no local FSDD copy")
    return SHARED / "fsdd"


def test_registered_fsdd_digest_is_the_local_copy(fsdd_copy: Path) -> None:
    from hm2bp.data.archives import folder_content_digest

    (f,) = dl.DATASETS["fsdd"].files
    assert folder_content_digest(fsdd_copy, "recordings/*.wav") == (f.content_sha256, f.n_members)


def test_download_tarball_verified_by_content(server: ThreadingHTTPServer, tmp_path: Path, fsdd_copy: Path,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The FSDD mechanism on 20 recordings: a regenerated archive is checked by the files it holds."""
    from hm2bp.data.archives import content_digest

    files = sorted((fsdd_copy / "recordings").glob("*.wav"))[:20]  # the recordings _fsdd_tarball(20) holds

    want = content_digest([(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in files])
    (real,) = dl.DATASETS["fsdd"].files
    monkeypatch.setitem(dl.DATASETS, "fsdd", dl.RemoteDataset(
        (dl.RemoteFile(real.name, None, None, real.source, unpack="tar.gz", pattern=real.pattern, strip=1,
                       n_members=20, content_sha256=want),), ("http://127.0.0.1:1/",), "test"))
    srv: dict[str, bytes] = server.files  # type: ignore[attr-defined]
    srv["bad/v1.0.10.tar.gz"] = _fsdd_tarball(20, tamper=True)
    bad = tmp_path / "bad"
    assert main(["download", "fsdd", str(bad), "--mirror", _base(server) + "bad/", *FAST]) == 1
    assert "failed verification" in capsys.readouterr().err
    assert list(bad.iterdir()) == []  # nothing unpacked, the archive deleted
    srv["v1.0.10.tar.gz"] = _fsdd_tarball(20)
    root = tmp_path / "fsdd"
    assert main(["download", "fsdd", str(root), "--mirror", _base(server), *FAST]) == 0
    assert sorted(p.name for p in (root / "recordings").iterdir()) == [p.name for p in files]
    assert not (root / real.name).exists() and not (root / "README.md").exists()
    n = len(server.log)  # type: ignore[attr-defined]
    assert main(["download", "fsdd", str(root), "--mirror", _base(server), *FAST]) == 0
    assert len(server.log) == n  # type: ignore[attr-defined]  # unpacked already: nothing fetched


@pytest.mark.slow
def test_download_fsdd_end_to_end(server: ThreadingHTTPServer, tmp_path: Path, fsdd_copy: Path) -> None:
    """All 3,000 recordings against the registered digest; the loaders read the result."""
    server.files["v1.0.10.tar.gz"] = _fsdd_tarball()  # type: ignore[attr-defined]
    root = tmp_path / "fsdd"
    assert main(["download", "fsdd", str(root), "--mirror", _base(server), *FAST]) == 0
    from hm2bp.data.speech import load_fsdd

    assert len(load_fsdd(root, "train")) == 2700 and len(load_fsdd(root, "test")) == 300
    n = len(server.log)  # type: ignore[attr-defined]
    # a copy placed by hand is recognised by its content: the read-only shared folder is not written to
    assert main(["download", "fsdd", str(fsdd_copy), "--mirror", _base(server), *FAST]) == 0
    assert len(server.log) == n  # type: ignore[attr-defined]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _fake_nmnist(monkeypatch: pytest.MonkeyPatch, archive: bytes) -> None:
    f = dl.RemoteFile("Test.zip", None, None, "test-files/abc", md5=hashlib.md5(archive).hexdigest(), unpack="zip",
                      pattern="Test/*.bin", n_members=2)
    monkeypatch.setitem(dl.DATASETS, "nmnist", dl.RemoteDataset((f,), ("http://127.0.0.1:1/",), "test"))


def test_download_zip_with_md5(server: ThreadingHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """The N-MNIST/EMNIST mechanism: an archive checked by its MD5, the matching members unpacked."""
    archive = _zip({"Test/0/00001.bin": b"\x01" * 10, "Test/7/00002.bin": b"\x02" * 5, "__MACOSX/x": b"junk"})
    _fake_nmnist(monkeypatch, archive)
    server.files["test-files/abc"] = archive  # type: ignore[attr-defined]
    root = tmp_path / "nm"
    assert main(["download", "nmnist", str(root), "--mirror", _base(server), *FAST]) == 0
    assert (root / "Test" / "7" / "00002.bin").read_bytes() == b"\x02" * 5
    assert sorted(p.name for p in root.iterdir()) == [".hm2bp-unpacked-Test.zip.json", "Test"]
    server.files["test-files/abc"] = archive[:20] + bytes([archive[20] ^ 1]) + archive[21:]  # type: ignore[attr-defined]
    assert main(["download", "nmnist", str(tmp_path / "nm2"), "--mirror", _base(server), *FAST]) == 1
    err = capsys.readouterr().err
    assert "md5" in err and "failed verification" in err


def test_hostile_archive_member_is_refused(server: ThreadingHTTPServer, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    archive = _zip({"Test/0/ok.bin": b"1", "Test/../../evil.bin": b"2"})
    _fake_nmnist(monkeypatch, archive)
    server.files["test-files/abc"] = archive  # type: ignore[attr-defined]
    root = tmp_path / "d" / "nm"
    assert main(["download", "nmnist", str(root), "--mirror", _base(server), *FAST]) == 1
    assert "unsafe" in capsys.readouterr().err
    assert not (tmp_path / "evil.bin").exists() and not (tmp_path / "d" / "evil.bin").exists()
    assert not (root / "Test").exists()


def test_offline_message_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["download", "emnist", str(tmp_path / "e"), "--mirror", _closed_port(), *FAST]) == 1
    err = capsys.readouterr().err
    assert "offline" in err and "gzip.zip" in err and "rerun 'hm2bp download emnist" in err
    assert main(["download", "cifar10", str(tmp_path)]) == 2
    assert "available: emnist, fsdd, mnist, nmnist" in capsys.readouterr().err


def test_missing_data_errors_name_the_download_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for preset, name in (("mnist_fc", "mnist"), ("fsdd", "fsdd"), ("nmnist_fc", "nmnist"), ("emnist_fc", "emnist")):
        assert main(["train", preset, "--data-dir", str(tmp_path / "none"), "--quiet", "--out", str(tmp_path / "r")]) != 0
        assert f"hm2bp download {name}" in capsys.readouterr().err, preset
    assert main(["train", "mnist_fc", "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert "hm2bp download mnist" in capsys.readouterr().err
