"""Building the compiled kernels: a list of C sources → one shared library, cached and verified.

The library is built with the system C compiler on first use and cached under ``$HM2BP_CACHE`` (default
``~/.cache/hm2bp``) as ``<name>_<key>.so``, the key hashing the sources, the headers they include, the
compiler and its flags; no Python headers, no build step at install time. Beside it lies
``<name>_<key>.so.sha256``, the digest of the finished file. A build is written to a temporary file,
fsync'd, and renamed into place (then its digest, then the directory is fsync'd), and a cached library is
loaded only when its digest matches: a truncated or corrupted file (a crash or a full disk during an older
build) would otherwise be mapped and die of SIGBUS on every later run. It is rebuilt instead.

On a CPU with AVX2 the library is built with ``-mavx2`` (bit-identical results: FMA contraction stays off),
falling back to the generic build if the compiler refuses it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math", "-std=c11",
         "-lm"]
"""Compiler flags: no FMA contraction and no fast-math, so that every float operation is the one written."""


def cache_dir() -> Path:
    return Path(os.environ.get("HM2BP_CACHE", Path.home() / ".cache" / "hm2bp"))


def isa_flags() -> list[str]:
    """``-mavx2`` when this x86-64 CPU has AVX2 (twice the vector width; without FMA contraction the
    results are bit for bit those of the generic build), else nothing. The cache key holds the flags."""
    if os.environ.get("HM2BP_GENERIC_KERNELS"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return ["-mavx2"] if "avx2" in line.split() else []
    except OSError:
        pass
    return []


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_verified(library: Path) -> bool:
    """The cached library exists and matches the digest stored beside it."""
    try:
        return _digest_path(library).read_text().strip() == _sha256(library)
    except OSError:
        return False


def _install(tmp: Path, target: Path) -> None:
    """Renames the built ``tmp`` into place durably: the file, then its digest, then the directory entry
    reach the disk, so that a crash leaves either no library, or one that fails verification and is rebuilt."""
    _fsync(tmp)
    digest = _sha256(tmp)
    fd, tmp_digest = tempfile.mkstemp(suffix=".sha256", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(digest + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        os.replace(tmp_digest, _digest_path(target))
    finally:
        if os.path.exists(tmp_digest):
            os.unlink(tmp_digest)
    _fsync(target.parent, directory=True)


def compile_library(name: str, sources: Sequence[Path], headers: Sequence[Path], compiler: str,
                    flags: Sequence[str]) -> Path:
    """The verified cached library built from ``sources`` (rebuilt when missing or not matching its digest)."""
    key_hash = hashlib.sha256()
    for path in [*sources, *headers]:
        key_hash.update(path.name.encode() + b"\0" + path.read_bytes())
    key_hash.update(" ".join([compiler, *flags]).encode())
    target = cache_dir() / f"{name}_{key_hash.hexdigest()[:16]}.so"
    if is_verified(target):
        return target
    if target.exists():
        warnings.warn(f"hm2bp: the cached kernel library {target} does not match its digest (truncated or "
                      "corrupted, or left by an older version); rebuilding it", RuntimeWarning, stacklevel=2)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    include = sorted({f"-I{p.parent}" for p in [*sources, *headers]})
    try:
        subprocess.run([compiler, *flags, *include, *map(str, sources), "-o", tmp], check=True, capture_output=True,
                       text=True)
        _install(Path(tmp), target)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"compiling {', '.join(p.name for p in sources)} failed: {exc.stderr.strip()[:500]}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(name: str, sources: Sequence[Path], headers: Sequence[Path] = ()) -> ctypes.CDLL:
    """Builds (or finds in the cache) and loads the library; RuntimeError/OSError when that is not possible."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc) found")
    isa = isa_flags()
    try:
        target = compile_library(name, sources, headers, compiler, [*FLAGS, *isa])
    except RuntimeError:
        if not isa:
            raise
        target = compile_library(name, sources, headers, compiler, FLAGS)  # no ISA option: the generic build
    return ctypes.CDLL(str(target))
