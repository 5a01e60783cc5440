"""Checked downloads: a file appears under its final name only after its SHA-256 was verified.

:func:`download` streams a URL to ``<dest>.part`` (``<dest>.gz.part`` for a gzip source), resumes an
existing part with an HTTP ``Range`` request when the server honours it and starts over when it does not,
retries dropped connections and timeouts, then checks the SHA-256 (and size) of the final bytes and only
then renames the file to ``dest`` (atomically, after an fsync). A mismatch deletes the part file and
raises :class:`~hm2bp.errors.DataFormatError` naming the file, the URL and both hashes; a mismatch after
a *resumed* download first restarts once from scratch (the old part may have come from another version of
the file). An interrupted run (even SIGKILL) leaves at most a ``.part`` file, which is never mistaken for
the real file: the next call resumes it and verifies the result.

:func:`fetch_dataset` downloads a registered dataset into a folder. The registry claims only checksums that
were verified here against a local copy (``../shared/data``): MNIST's four IDX files, registered by the
SHA-256 and size of their *uncompressed* bytes. The usual mirrors serve ``.gz`` files whose own hashes are
not registered (they depend on the compressor); a ``.gz`` source is accepted when its decompressed content
matches. The mirror URLs are the ones in common use (torchvision's S3 mirror and the original site); they
could not be checked from the machine where this was written, which has no network access, but whatever
they serve is verified on arrival.

Example::

    from hm2bp.data.download import fetch_dataset
    fetch_dataset("mnist", "data/mnist")          # then: hm2bp train mnist_fc --data-dir data/mnist
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataFormatError, HM2BPError
from ..io.files import fsync_dir

__all__ = ["DATASETS", "DownloadError", "RemoteDataset", "RemoteFile", "download", "fetch_dataset", "sha256_file"]

_CHUNK = 1 << 16
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class DownloadError(HM2BPError, OSError):
    """A download failed for a network reason (refused, dropped, timed out, HTTP error) after all retries."""

    def __init__(self, url: str, dest: str | os.PathLike[str], problem: str) -> None:
        self.url = url
        self.path = os.fspath(dest)
        self.problem = problem
        super().__init__(f"{self.path}: downloading {url}: {problem}")


class _Transient(Exception):
    """A failure worth retrying (connection dropped or refused, timeout, HTTP 5xx/408/429, short body)."""


class _Deadline(Exception):
    """The overall deadline passed: not retried."""


class _Permanent(Exception):
    """A failure not worth retrying (HTTP 4xx, unexpected status)."""


# --------------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike[str], *, gunzip: bool = False, algo: str = "sha256") -> str:
    """SHA-256 (hex) of a file's bytes, or of its decompressed bytes with ``gunzip=True`` (``algo="md5"``:
    the MD5, for sources that publish only that)."""
    h = hashlib.new(algo)
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _matches(path: Path, sha256: str | None, size: int | None, *, gunzip: bool = False,
             algo: str = "sha256") -> bool:
    """Whether ``path`` holds the expected content (False for a missing or unreadable file); a digest of
    None checks only the size."""
    try:
        if not path.is_file() or (size is not None and not gunzip and path.stat().st_size != size):
            return False
        return sha256 is None or sha256_file(path, gunzip=gunzip, algo=algo) == sha256
    except (OSError, EOFError, zlib.error):
        return False


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------------------------------
# One HTTP request
# --------------------------------------------------------------------------------------------------
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


class _Pace:
    """The overall deadline of a download and the minimum rate of each attempt's body.

    The socket timeout bounds one read; this bounds the whole: a server that sends one byte just before
    every timeout would otherwise keep a download alive for ever.
    """

    def __init__(self, deadline: float | None, min_rate: float, window: float) -> None:
        self.end = None if deadline is None else time.monotonic() + deadline
        self.deadline, self.min_rate, self.window = deadline, min_rate, window
        self.mark, self.mark_bytes = time.monotonic(), 0

    def start_body(self) -> None:
        self.mark, self.mark_bytes = time.monotonic(), 0

    def check(self, got: int) -> None:
        now = time.monotonic()
        if self.end is not None and now > self.end:
            raise _Deadline(f"the download took longer than its deadline of {self.deadline:g} s")
        if now - self.mark >= self.window:
            rate = (got - self.mark_bytes) / (now - self.mark)
            if rate < self.min_rate:
                raise _Transient(f"too slow: {rate:,.0f} bytes/s over {now - self.mark:.1f} s, below the minimum "
                                 f"of {self.min_rate:,.0f} bytes/s")
            self.mark, self.mark_bytes = now, got


def _fetch(url: str, part: Path, *, timeout: float, limit: int | None, dest: Path,
           pace: _Pace | None = None) -> bool:
    """Fetch ``url`` into ``part``, continuing it with a Range request when it exists.

    Returns True when the bytes now in ``part`` continue an earlier part (a honoured Range request).
    Raises _Transient (retry), _Permanent, or DataFormatError (more bytes than ``limit``).
    """
    have = part.stat().st_size if part.exists() else 0
    if limit is not None and have > limit:
        _unlink(part)
        have = 0
    headers = {"User-Agent": "hm2bp-download", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # nothing after byte `have`: the part is complete (or stale); verify it
            return True
        if e.code in (408, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise _Permanent(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", e)
        raise _Transient(f"cannot connect: {reason}") from None
    with resp:
        status = resp.status
        resumed = False
        if status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                _unlink(part)  # a range we did not ask for: start over
                raise _Transient(f"the server answered the range request with "
                                 f"{resp.headers.get('Content-Range')!r}; starting over")
            total = None if m.group(3) == "*" else int(m.group(3))
            resumed, mode = True, "ab"
        elif status == 200:  # a plain answer (Range not supported, or not asked): start from byte 0
            have, mode = 0, "wb"
            total = None
        else:
            raise _Permanent(f"unexpected HTTP status {status}")
        length_header = resp.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if total is None and length is not None:
            total = have + length
        if limit is not None and total is not None and total > limit:
            _unlink(part)
            raise DataFormatError(dest, f"downloading {url}: the server announces {total:,} bytes, more than the "
                                        f"expected {limit:,}; refused, nothing kept")
        got = 0
        pace = pace or _Pace(None, 0.0, math.inf)
        pace.start_body()
        try:
            with open(part, mode) as f:
                try:
                    while True:
                        pace.check(got)
                        chunk = resp.read1(_CHUNK)  # what has arrived: lets the pace be checked while trickling
                        if not chunk:
                            break
                        if limit is not None and have + got + len(chunk) > limit:
                            f.close()
                            _unlink(part)
                            raise DataFormatError(dest, f"downloading {url}: the server sent more than the expected "
                                                        f"{limit:,} bytes; refused, nothing kept")
                        f.write(chunk)
                        got += len(chunk)
                finally:
                    if not f.closed:
                        f.flush()
                        os.fsync(f.fileno())
        except (http.client.HTTPException, OSError) as e:  # dropped connection, reset, timeout mid-body
            raise _Transient(f"connection lost after {have + got:,} bytes ({type(e).__name__}: {e})") from None
        if length is not None and got < length:
            raise _Transient(f"connection closed after {have + got:,} of {have + length:,} bytes")
        return resumed


# --------------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------------
def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None,
    *,
    md5: str | None = None,
    check: Callable[[Path], str | None] | None = None,
    expected_size: int | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    gunzip: bool = False,
    backoff: float = 1.0,
    echo: Callable[[str], None] | None = None,
    deadline: float | None = 3600.0,
    min_rate: float = 1024.0,
    rate_window: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; returns ``dest``.

    Args:
        url: an ``http://`` or ``https://`` URL.
        dest: the final path; it only ever holds verified bytes. An existing file that verifies is kept
            (no request is made); one that does not is replaced once a verified copy has arrived.
        sha256: expected SHA-256 (hex) of the final bytes (the decompressed bytes with ``gunzip``), or None
            when ``md5`` or ``check`` is given instead.
        md5: expected MD5 (hex) of the final bytes, for sources that publish only an MD5 (torchvision's and
            tonic's dataset tables).
        check: a content check of the final bytes, returning None when they are right or what is wrong
            (e.g. the files inside an archive whose own bytes are not stable); runs after the digest.
        expected_size: expected size of the final bytes; a server that announces or sends more is refused
            (a ``.gz`` source may be at most 1 % + 64 KiB larger).
        timeout: seconds without progress (connect or read) before an attempt counts as failed.
        retries: further attempts after a failed one (dropped connection, timeout, HTTP 5xx); each resumes
            the ``.part`` file where the server supports ranges.
        gunzip: the URL serves a gzip stream of the file (kept in ``<dest>.gz.part`` until verified).
        backoff: seconds to wait before retry k (times k, at most 30 s).
        echo: where to report retries (None: silent).
        deadline: seconds for the whole download, all attempts and waits included (None: no limit).
        min_rate: bytes/s an attempt must average over each ``rate_window`` seconds of its body; a slower
            one counts as failed (and is retried, resuming).

    Raises:
        DataFormatError: the bytes do not match ``sha256``/``expected_size`` or are not valid gzip (the part
            file is deleted), or the server sends more than ``expected_size``.
        DownloadError: the server could not be reached, kept failing, or the deadline passed; the bytes
            received so far stay in the ``.part`` file and the next call resumes from there.
    """
    dest = Path(dest)
    algo, sha = _expected_digest(sha256, md5, check)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"only http:// and https:// URLs are downloaded; got {url!r}")
    if retries < 0 or timeout <= 0:
        raise ValueError("retries must be >= 0 and timeout > 0")
    if dest.is_dir():
        raise DataFormatError(dest, "is a folder; give the path of the file to create")
    if _matches(dest, sha, expected_size, algo=algo) and (check is None or check(dest) is None):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    raw_part = dest.with_name(dest.name + (".gz.part" if gunzip else ".part"))
    unpacked = dest.with_name(dest.name + ".part")  # gunzip: the decompressed bytes before the rename
    limit = expected_size
    if gunzip and expected_size is not None:
        limit = expected_size + expected_size // 100 + 65536
    say = echo or (lambda s: None)

    pace = _Pace(deadline, min_rate, rate_window)
    return _download_loop(url, dest, raw_part, unpacked, sha=sha, algo=algo, check=check,
                          expected_size=expected_size, limit=limit, gunzip=gunzip, timeout=timeout, retries=retries,
                          backoff=backoff, say=say, pace=pace)


def _download_loop(url: str, dest: Path, raw_part: Path, unpacked: Path, *, sha: str | None, algo: str,
                   check: Callable[[Path], str | None] | None,
                   expected_size: int | None, limit: int | None, gunzip: bool, timeout: float, retries: int,
                   backoff: float, say: Callable[[str], None], pace: _Pace) -> Path:
    """The attempts of :func:`download`: fetch (resuming), retry transient faults, verify, rename."""
    failures = 0
    restarted = False  # restarted from scratch after a resumed download failed verification
    continued = False  # the bytes in raw_part include bytes of an earlier attempt or call
    while True:
        try:
            if pace.end is not None and time.monotonic() > pace.end:
                raise _Deadline(f"the download took longer than its deadline of {pace.deadline:g} s")
            if _fetch(url, raw_part, timeout=timeout, limit=limit, dest=dest, pace=pace):
                continued = True
        except _Deadline as e:
            kept = raw_part.stat().st_size if raw_part.exists() else 0
            raise DownloadError(url, dest, f"{e}; {kept:,} bytes kept in {raw_part} for the next try") from None
        except _Transient as e:
            failures += 1
            if failures > retries:
                kept = raw_part.stat().st_size if raw_part.exists() else 0
                raise DownloadError(url, dest, f"{e}; gave up after {failures} attempt(s); "
                                               f"{kept:,} bytes kept in {raw_part} for the next try") from None
            wait = min(30.0, backoff * failures)
            if pace.end is not None:
                wait = max(0.0, min(wait, pace.end - time.monotonic()))
            say(f"{url}: {e}; retrying in {wait:.0f} s ({failures}/{retries})")
            if wait > 0:
                time.sleep(wait)
            continue
        except _Permanent as e:
            raise DownloadError(url, dest, str(e)) from None

        problem = _verify(raw_part, unpacked if gunzip else None, sha, expected_size, algo)
        if problem is None and check is not None:
            problem = check(unpacked if gunzip else raw_part)
        if problem is None:
            final = unpacked if gunzip else raw_part
            os.replace(final, dest)
            fsync_dir(dest.parent)
            if gunzip:
                _unlink(raw_part)
            return dest
        _unlink(raw_part)
        _unlink(unpacked)
        if continued and not restarted:  # the old part may belong to another version of the file
            say(f"{url}: {problem} after resuming an earlier part; starting over")
            restarted, continued = True, False
            continue
        raise DataFormatError(dest, f"downloaded from {url}: {problem}; the partial file was deleted")


def _expected_digest(sha256: str | None, md5: str | None, check: object) -> tuple[str, str | None]:
    """(hash algorithm, expected hex digest or None) from download()'s arguments, checked."""
    if md5 is not None:
        digest = md5.strip().lower()
        if not _HEX32.match(digest):
            raise ValueError(f"md5 must be 32 hexadecimal digits; got {md5!r}")
        return "md5", digest
    if sha256 is None:
        if check is None:
            raise ValueError("give sha256, md5 or a content check: nothing unverified is downloaded")
        return "sha256", None
    digest = sha256.strip().lower()
    if not _HEX64.match(digest):
        raise ValueError(f"sha256 must be 64 hexadecimal digits; got {sha256!r}")
    return "sha256", digest


def _verify(raw: Path, unpacked: Path | None, sha: str | None, size: int | None, algo: str = "sha256") -> str | None:
    """None when the content is right, else what is wrong (with both hashes)."""
    h = hashlib.new(algo)
    n = 0
    try:
        if unpacked is None:
            with open(raw, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    n += len(chunk)
        else:
            with gzip.open(raw, "rb") as src, open(unpacked, "wb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    n += len(chunk)
                    if size is not None and n > size:
                        return f"the gzip stream unpacks to more than the expected {size:,} bytes"
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        return f"not a valid gzip stream ({type(e).__name__}: {e})"
    got = h.hexdigest()
    if (sha is not None and got != sha) or (size is not None and n != size):
        return (f"{algo} {got} ({n:,} bytes) does not match the expected {sha or 'content'}"
                + (f" ({size:,} bytes)" if size is not None else ""))
    return None


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset: final ``name``, checksum and size of the final bytes, the name on a mirror.

    ``sha256``/``size`` are of the final bytes (decompressed for a ``gzip`` source); ``md5`` stands in
    where the source publishes only an MD5. An archive (``unpack`` = "zip" or "tar.gz") is downloaded as
    ``name``, verified, and its members matching ``pattern`` (``strip`` leading path parts dropped) are
    unpacked into the folder (:mod:`hm2bp.data.archives`); then the archive is deleted. ``content_sha256``
    verifies an archive by the files it holds (:func:`~hm2bp.data.archives.content_digest`), for sources
    that regenerate their archives; ``n_members`` is the number of files it unpacks to.
    """

    name: str
    sha256: str | None
    size: int | None
    source: str
    gzip: bool = False
    md5: str | None = None
    unpack: str = ""
    pattern: str = "*"
    strip: int = 0
    content_sha256: str | None = None
    n_members: int = 0


@dataclass(frozen=True)
class RemoteDataset:
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    note: str


_NMNIST_FILES = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"

#: Registered datasets. MNIST: the SHA-256 and size of the uncompressed IDX files, computed from the local
#: copy in ../shared/data/mnist (``zcat <name>.gz | sha256sum``; it agrees with that folder's README and
#: MANIFEST.sha256). EMNIST and N-MNIST: the official archives with the MD5s published by torchvision
#: (``EMNIST.md5``) and tonic (``NMNIST.train_md5``/``test_md5``), not checked here (no network, no copy).
#: FSDD: the GitHub tarball of tag v1.0.10, verified by the content digest of its 3,000 recordings,
#: computed from ../shared/data/fsdd/recordings (identical to v1.0.10's tree).
DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        files=(
            RemoteFile("train-images-idx3-ubyte",
                       "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47_040_016,
                       "train-images-idx3-ubyte.gz", True),
            RemoteFile("train-labels-idx1-ubyte",
                       "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60_008,
                       "train-labels-idx1-ubyte.gz", True),
            RemoteFile("t10k-images-idx3-ubyte",
                       "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7_840_016,
                       "t10k-images-idx3-ubyte.gz", True),
            RemoteFile("t10k-labels-idx1-ubyte",
                       "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10_008,
                       "t10k-labels-idx1-ubyte.gz", True),
        ),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        note="MNIST (LeCun, Cortes, Burges), usually given as CC BY-SA 3.0",
    ),
    "emnist": RemoteDataset(
        files=(RemoteFile("gzip.zip", None, None, "gzip.zip", md5="58c8d27c78d21e728a6bc7b3cc06412e", unpack="zip",
                          pattern="gzip/emnist-*", strip=1, n_members=30),),
        mirrors=("https://biometrics.nist.gov/cs_links/EMNIST/",),
        note="EMNIST (Cohen et al. 2017), NIST's gzip.zip (~536 MB): all six subsets as IDX .gz + mappings",
    ),
    "nmnist": RemoteDataset(
        files=(RemoteFile("Train.zip", None, None, "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",
                          md5="20959b8e626244a1b502305a9e6e2031", unpack="zip", pattern="Train/*.bin",
                          n_members=60_000),
               RemoteFile("Test.zip", None, None, "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",
                          md5="69ca8762b2fe404d9b9bad1103e97832", unpack="zip", pattern="Test/*.bin",
                          n_members=10_000)),
        mirrors=(_NMNIST_FILES,),
        note="N-MNIST (Orchard et al. 2015) from Mendeley Data (~1 GB); cite the paper",
    ),
    "fsdd": RemoteDataset(
        files=(RemoteFile("fsdd-v1.0.10.tar.gz", None, None, "v1.0.10.tar.gz", unpack="tar.gz",
                          pattern="*/recordings/*.wav", strip=1, n_members=3000,
                          content_sha256="710951a2589b3ada7d439d4478090cd83b6eed3c738ae7ae04a030fa0f61ed88"),),
        mirrors=("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/",),
        note="Free Spoken Digit Dataset v1.0.10 (3,000 recordings, 21 MB), CC BY-SA 4.0",
    ),
}


def _unpacked_glob(f: RemoteFile) -> str:
    """The glob, relative to the dataset folder, of the files an archive unpacks to."""
    head, _, tail = "/".join(f.pattern.split("/")[f.strip:]).rpartition("/")
    return f"{head}/**/{tail}" if head else tail


def _present(root: Path, f: RemoteFile) -> bool:
    """The file is in ``root`` already, raw or as ``.gz`` (both are read by the loaders), and verifies; for
    an archive: it was unpacked here, or a copy by hand holds its files (all ``n_members`` of them, with the
    right content digest where one is registered)."""
    if f.unpack:
        from .archives import folder_content_digest, is_unpacked

        if is_unpacked(root, f.name):
            return True
        if not f.n_members:
            return False
        glob = _unpacked_glob(f)
        if f.content_sha256 is None:
            return sum(1 for p in root.glob(glob) if p.is_file()) == f.n_members
        return folder_content_digest(root, glob) == (f.content_sha256, f.n_members)
    return _matches(root / f.name, f.sha256, f.size) or _matches(root / (f.name + ".gz"), f.sha256, f.size,
                                                                 gunzip=True)


def _content_check(f: RemoteFile) -> Callable[[Path], str | None] | None:
    """For an archive with a registered content digest: the check download() runs on its bytes."""
    if f.content_sha256 is None:
        return None

    def check(path: Path) -> str | None:
        from .archives import archive_content_digest

        try:
            digest, n = archive_content_digest(path, f.unpack, f.pattern)
        except DataFormatError as e:
            return e.problem
        if (digest, n) != (f.content_sha256, f.n_members or n):
            return (f"its {n:,} files matching {f.pattern!r} have content digest {digest}, expected "
                    f"{f.content_sha256}" + (f" ({f.n_members:,} files)" if f.n_members else ""))
        return None

    return check


def _fetch_one(f: RemoteFile, root: Path, url: str, *, timeout: float, retries: int, backoff: float,
               echo: Callable[[str], None] | None) -> None:
    """Download (and for an archive: verify, unpack, delete) one registered file from ``url``."""
    dest = root / f.name
    download(url, dest, f.sha256, md5=f.md5, check=_content_check(f), expected_size=f.size, gunzip=f.gzip,
             timeout=timeout, retries=retries, backoff=backoff, echo=echo)
    if f.unpack:
        from .archives import unpack_archive

        unpack_archive(dest, root, kind=f.unpack, pattern=f.pattern, strip=f.strip,
                       checksum=f.md5 or f.sha256 or f.content_sha256 or "")
        dest.unlink()


def fetch_dataset(
    name: str,
    root: str | os.PathLike[str],
    *,
    mirrors: tuple[str, ...] | list[str] | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 1.0,
    echo: Callable[[str], None] | None = None,
    deadline: float | None = 3600.0,
    min_rate: float = 1024.0,
    rate_window: float = 30.0,
    on_file: Callable[[str, Path, RemoteFile], None] | None = None,
) -> Path:
    """Make sure ``root`` holds the verified files of dataset ``name``; download what is missing.

    Files already present (raw, or as ``<name>.gz``) and matching their checksum are not downloaded again;
    archives are unpacked into the layout the loaders read and then deleted (an archive placed in ``root``
    by hand is verified and unpacked without a download). Each missing file is tried on each mirror in
    turn (``mirrors`` replaces the registered ones, e.g. a local copy). ``on_file(url, dest, file)`` is
    called before each download (the CLI's progress bar). Returns ``root``.

    Raises:
        ConfigError: unknown dataset name.
        DataFormatError: every mirror served wrong bytes for a file.
        DownloadError: some mirror could not be reached and no other served the right bytes.
    """
    key = name.strip().lower()
    if key not in DATASETS:
        raise ConfigError(f"no download registered for dataset {name!r}; registered: {', '.join(sorted(DATASETS))} "
                          "(other datasets: place the files by hand, see the dataset loaders)")
    spec = DATASETS[key]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    bases = tuple(mirrors) if mirrors else spec.mirrors
    if not bases:
        raise ConfigError("no mirror to download from")
    say = echo or (lambda s: None)
    for f in spec.files:
        if _present(root, f):
            continue
        errors: list[HM2BPError] = []
        for base in bases:
            url = base.rstrip("/") + "/" + f.source
            say(f"downloading {url} -> {root / f.name}")
            if on_file is not None:
                on_file(url, root / f.name, f)
            try:
                _fetch_one(f, root, url, timeout=timeout, retries=retries, backoff=backoff, echo=echo)
            except (DownloadError, DataFormatError) as e:
                errors.append(e)
                say(f"failed: {e}")
                continue
            break
        else:
            detail = " | ".join(str(e) for e in errors)
            hint = (f"; or place the files {', '.join(x.name for x in spec.files)} (raw or .gz) in {root} by hand")
            if all(isinstance(e, DataFormatError) for e in errors):
                raise DataFormatError(root / f.name, f"no mirror served the right bytes: {detail}{hint}")
            raise DownloadError(", ".join(bases), root / f.name, f"no mirror worked: {detail}{hint}")
    return root
