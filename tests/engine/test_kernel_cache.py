"""The cached kernel library is verified before it is loaded (issue #18 item 10).

Before, the compiled ``.so`` was renamed into place without fsync and loaded unchecked: a truncated cached
file (a crash or a full disk during the build) gave SIGBUS on every later run, with no message. Now its
digest is stored beside it and checked first; a truncated, corrupted or unverifiable file is rebuilt. Each
run is a fresh process with its own cache folder, as a user's next run would be.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hm2bp.kernels import build, cpu

pytestmark = pytest.mark.skipif(cpu.library() is None, reason="no C compiler: compiled kernels unavailable")
SRC = Path(__file__).resolve().parents[2] / "src"
_SCRIPT = """
import torch
from hm2bp.kernels import cpu
print("loaded", cpu.library() is not None)
post = (torch.rand(50, 8, generator=torch.Generator().manual_seed(0)) < 0.2).to(torch.uint8)
print("sum", float(cpu.psp_coefficients(post, 64.0, 8.0, 2, 256, torch.float64).sum()))
"""


def _run(cache: Path, script: str = _SCRIPT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HM2BP_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("HM2BP_BACKEND", None)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600,
                          check=False)


def _verified(lib: Path) -> bool:
    digest = lib.with_name(lib.name + ".sha256").read_text().strip()
    return digest == hashlib.sha256(lib.read_bytes()).hexdigest()


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


_TINY = """
import ctypes, sys
from pathlib import Path
from hm2bp.kernels import build
lib = build.load("tiny", [Path(sys.argv[1])])
lib.answer.restype = ctypes.c_int
print("answer", lib.answer())
"""


def test_a_damaged_cached_library_is_rebuilt_before_it_is_loaded(tmp_path: Path) -> None:
    """The mechanism on a one-function library (fast): each damage is found by a fresh process."""
    src = tmp_path / "tiny.c"
    src.write_text("int answer(void) { return 42; }\n" + "static const char pad[65536] = {1};\n"
                   "const char *tiny_pad(void) { return pad; }\n")
    cache = tmp_path / "cache"
    script = _TINY.replace("sys.argv[1]", repr(str(src)))
    first = _run(cache, script)
    assert first.returncode == 0 and first.stdout == "answer 42\n", first.stderr[-2000:]
    (lib,) = cache.glob("tiny_*.so")
    assert _verified(lib) and build.is_verified(lib)
    assert sorted(p.name for p in cache.iterdir()) == sorted([lib.name, lib.name + ".sha256"])  # no temporaries

    again = _run(cache, script)  # a verified library is reused as it is
    assert again.stdout == first.stdout and "rebuilding" not in again.stderr
    assert lib.stat().st_ino == next(cache.glob("tiny_*.so")).stat().st_ino

    size = lib.stat().st_size
    damages = {
        "truncated": lambda: os.truncate(lib, size // 3),
        "corrupted": lambda: _overwrite(lib, size // 2, b"\xcc" * 4096),
        "without digest": lambda: lib.with_name(lib.name + ".sha256").unlink(),
        "emptied": lambda: os.truncate(lib, 0),
    }
    for what, damage in damages.items():
        damage()
        assert not build.is_verified(lib), what
        run = _run(cache, script)
        assert run.returncode == 0 and run.stdout == first.stdout, (what, run.returncode, run.stderr[-2000:])
        assert "does not match its digest" in run.stderr, what
        assert _verified(lib) and lib.stat().st_size == size, what


@pytest.mark.slow  # one full build of the kernel library (~15 s of CPU)
def test_a_truncated_kernel_library_no_longer_kills_the_next_run(tmp_path: Path) -> None:
    """The issue's case with the real library: before, every later run died of SIGBUS (-7)."""
    built = Path(cpu.library()._name)  # type: ignore[union-attr]
    for path in (built, built.with_name(built.name + ".sha256")):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    lib = tmp_path / built.name
    reference = _run(tmp_path)
    assert reference.returncode == 0 and "loaded True" in reference.stdout and "rebuilding" not in reference.stderr
    os.truncate(lib, lib.stat().st_size // 2)
    run = _run(tmp_path)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout == reference.stdout and "does not match its digest" in run.stderr
    assert _verified(lib)
