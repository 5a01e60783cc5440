"""Fuzzing the dataset file readers: IDX (raw and gzip), N-MNIST events, WAV, NIST SPHERE, Lyon text
cochleagrams and EMNIST mapping files.

Property of every reader on every input: a valid result, or a :class:`DataFormatError` whose message
starts with the file's path; never another exception, never an allocation driven by an unchecked header
size. Inputs: truncations of valid files at random points, random bytes, valid files with header fields
replaced by random values (sizes up to 2**32 - 1) and slices replaced by random bytes. The number of
examples of each test is in its ``@settings`` line.
"""

from __future__ import annotations

import gzip
import re
import struct
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hm2bp.data.idx import read_emnist_mapping, read_idx
from hm2bp.data.nmnist import read_nmnist_events
from hm2bp.data.speech import read_audio, read_lyon_text, read_sphere, read_wav
from hm2bp.errors import DataFormatError

pytestmark = pytest.mark.reliability
FUZZ = dict(deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _valid_or_error(read: Callable[[Path], Any], p: Path, check: Callable[[Any], bool]) -> str:
    try:
        result = read(p)
    except DataFormatError as e:
        assert str(e).startswith(str(p)), str(e)
        return "error"
    assert check(result), result
    return "valid"


# --------------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------------
def _idx(arr: np.ndarray, type_byte: int) -> bytes:
    return bytes([0, 0, type_byte, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


IDX_IMAGES = _idx((np.arange(5 * 28 * 28) % 256).astype(np.uint8).reshape(5, 28, 28), 0x08)
IDX_FLOATS = _idx(np.linspace(-1, 1, 24).astype(">f4").reshape(2, 3, 4), 0x0D)
IDX_TYPES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def _idx_consistent(p: Path) -> Callable[[np.ndarray], bool]:
    """A valid result must be exactly what the header of the (decompressed) file says."""
    def check(a: np.ndarray) -> bool:
        raw = p.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        ndim = raw[3]
        dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        return a.shape == dims and a.dtype.itemsize == IDX_TYPES[raw[2]] and \
            len(raw) == 4 + 4 * ndim + a.size * a.dtype.itemsize
    return check


@settings(max_examples=150, **FUZZ)
@given(which=st.sampled_from(["images", "floats"]), frac=st.floats(0, 1, exclude_max=True), gz=st.booleans())
def test_idx_truncated(tmp_path: Path, which: str, frac: float, gz: bool) -> None:
    data = IDX_IMAGES if which == "images" else IDX_FLOATS
    cut = data[: int(frac * len(data))]
    p = _write(tmp_path, "x-idx", gzip.compress(cut, mtime=0) if gz else cut)
    with pytest.raises(DataFormatError) as ei:
        read_idx(p)
    assert str(ei.value).startswith(str(p))


@settings(max_examples=150, **FUZZ)
@given(data=st.binary(max_size=400), gz=st.booleans())
def test_idx_random_bytes(tmp_path: Path, data: bytes, gz: bool) -> None:
    p = _write(tmp_path, "x-idx", gzip.compress(data, mtime=0) if gz else data)
    _valid_or_error(read_idx, p, _idx_consistent(p))


@settings(max_examples=200, **FUZZ)
@given(type_byte=st.integers(0, 255), ndim=st.integers(0, 255),
       dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=6), gz=st.booleans(),
       body=st.sampled_from([b"", bytes(64), bytes(784)]))
def test_idx_random_headers(tmp_path: Path, type_byte: int, ndim: int, dims: list[int], gz: bool,
                            body: bytes) -> None:
    """Header sizes up to 2**32 - 1 per dimension (products far beyond memory) are refused unallocated."""
    raw = bytes([0, 0, type_byte, ndim]) + b"".join(struct.pack(">I", d) for d in dims) + body
    p = _write(tmp_path, "x-idx", gzip.compress(raw, mtime=0) if gz else raw)
    _valid_or_error(read_idx, p, _idx_consistent(p))


@settings(max_examples=150, **FUZZ)
@given(data=st.data(), junk=st.binary(min_size=1, max_size=8), gz=st.booleans())
def test_idx_mutated(tmp_path: Path, data: st.DataObject, junk: bytes, gz: bool) -> None:
    i = data.draw(st.integers(0, 40), label="offset")  # header and the first pixels
    raw = IDX_IMAGES[:i] + junk + IDX_IMAGES[i + len(junk) :]
    p = _write(tmp_path, "x-idx", gzip.compress(raw, mtime=0) if gz else raw)
    _valid_or_error(read_idx, p, _idx_consistent(p))


# --------------------------------------------------------------------------------------------------
# N-MNIST
# --------------------------------------------------------------------------------------------------
@settings(max_examples=150, **FUZZ)
@given(data=st.binary(max_size=600))
def test_nmnist_random_bytes(tmp_path: Path, data: bytes) -> None:
    """The format has no header: a non-empty multiple of 5 bytes whose events lie on the 34 × 34 sensor
    (y = 240 is the overflow marker) is a valid event list, anything else is refused."""
    p = _write(tmp_path, "e.bin", data)
    outcome = _valid_or_error(read_nmnist_events, p, lambda ev: ev.size <= len(data) // 5
                              and (ev["t"] >= 0).all() and (ev["p"] <= 1).all())
    raw = np.frombuffer(data[: len(data) - len(data) % 5], dtype=np.uint8).reshape(-1, 5)
    x, y = raw[:, 0], raw[:, 1]
    ev = y != 240
    on_sensor = bool(((x[ev] < 34) & (y[ev] < 34)).all())
    text = re.match(rb"[#\s]*[0-9]+\t[0-9]", data[:64]) is not None
    ok = len(data) > 0 and len(data) % 5 == 0 and on_sensor and not text
    assert outcome == ("valid" if ok else "error")


# --------------------------------------------------------------------------------------------------
# WAV and SPHERE
# --------------------------------------------------------------------------------------------------
def _wav_bytes(tmp_path: Path, width: int, channels: int) -> bytes:
    p = tmp_path / "src.wav"
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    samples = (np.arange(400 * channels) * 37 % 200).astype(dtype)
    with wave.open(str(p), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(8000)
        w.writeframes(samples.tobytes())
    return p.read_bytes()


def _audio_ok(result: tuple[np.ndarray, int]) -> bool:
    x, sr = result
    return x.ndim == 1 and sr > 0 and bool(np.isfinite(x).all()) and (x.size == 0 or float(np.abs(x).max()) <= 1.0)


def _sphere_bytes(n: int = 300) -> bytes:
    samples = (np.arange(n) * 101 % 3000 - 1500).astype("<i2")
    fields = [f"sample_count -i {n}", "sample_n_bytes -i 2", "channel_count -i 1", "sample_byte_format -s2 01",
              "sample_rate -i 12500", "sample_coding -s3 pcm"]
    head = ("\n".join(["NIST_1A", "   1024", *fields, "end_head"]) + "\n").encode()
    return head + b" " * (1024 - len(head)) + samples.tobytes()


SPHERE = _sphere_bytes()


@settings(max_examples=150, **FUZZ)
@given(width=st.sampled_from([1, 2, 4]), channels=st.sampled_from([1, 2]), frac=st.floats(0, 1, exclude_max=True))
def test_wav_truncated(tmp_path: Path, width: int, channels: int, frac: float) -> None:
    data = _wav_bytes(tmp_path, width, channels)
    p = _write(tmp_path, "cut.wav", data[: int(frac * len(data))])
    with pytest.raises(DataFormatError) as ei:
        read_wav(p)
    assert str(ei.value).startswith(str(p))


@settings(max_examples=200, **FUZZ)
@given(data=st.data(), junk=st.binary(min_size=1, max_size=8), width=st.sampled_from([1, 2, 4]))
def test_wav_mutated_header(tmp_path: Path, data: st.DataObject, junk: bytes, width: int) -> None:
    wav = _wav_bytes(tmp_path, width, 1)
    i = data.draw(st.integers(0, 48), label="offset")
    p = _write(tmp_path, "m.wav", wav[:i] + junk + wav[i + len(junk) :])
    _valid_or_error(read_wav, p, _audio_ok)
    _valid_or_error(read_audio, p, _audio_ok)


@settings(max_examples=150, **FUZZ)
@given(frac=st.floats(0, 1, exclude_max=True))
def test_sphere_truncated(tmp_path: Path, frac: float) -> None:
    p = _write(tmp_path, "cut.sph", SPHERE[: int(frac * len(SPHERE))])
    with pytest.raises(DataFormatError) as ei:
        read_sphere(p)
    assert str(ei.value).startswith(str(p))


@settings(max_examples=200, **FUZZ)
@given(data=st.data(),
       junk=st.one_of(st.binary(min_size=1, max_size=12),
                      st.sampled_from([b"-i 999999999", b"-i -5", b"-i 0", b"-s9 ulaw", b"-i 3", b"\n", b"-r 1e999",
                                       b"99999999999999999999", b"end_head", b"NIST_1B"])))
def test_sphere_mutated_header(tmp_path: Path, data: st.DataObject, junk: bytes) -> None:
    i = data.draw(st.integers(0, SPHERE.index(b"end_head") + 8), label="offset")
    p = _write(tmp_path, "m.sph", SPHERE[:i] + junk + SPHERE[i + len(junk) :])
    _valid_or_error(read_sphere, p, _audio_ok)
    _valid_or_error(read_audio, p, _audio_ok)


@settings(max_examples=150, **FUZZ)
@given(data=st.binary(max_size=600), prefix=st.sampled_from([b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVE",
                                                              b"NIST_1A\n", b"NIST_1A\n   1024\n"]))
def test_audio_random_bytes(tmp_path: Path, data: bytes, prefix: bytes) -> None:
    p = _write(tmp_path, "r.wav", prefix + data)
    _valid_or_error(read_audio, p, _audio_ok)


# --------------------------------------------------------------------------------------------------
# Text files: Lyon cochleagrams, EMNIST mapping
# --------------------------------------------------------------------------------------------------
text_junk = st.text(alphabet="0123456789-+.eE \t\nnaifNAIF,x\u00e9", max_size=60)


@settings(max_examples=150, **FUZZ)
@given(text=text_junk)
def test_lyon_text_random(tmp_path: Path, text: str) -> None:
    p = _write(tmp_path, "c.dat", text.encode("utf-8"))
    _valid_or_error(read_lyon_text, p, lambda a: a.ndim == 2 and a.dtype == np.float32 and np.isfinite(a).all())


@settings(max_examples=150, **FUZZ)
@given(text=st.one_of(text_junk, st.binary(max_size=80).map(lambda b: b.decode("latin-1"))))
def test_emnist_mapping_random(tmp_path: Path, text: str) -> None:
    p = _write(tmp_path, "map.txt", text.encode("latin-1", "replace"))
    _valid_or_error(read_emnist_mapping, p, lambda m: isinstance(m, dict)
                    and all(isinstance(k, int) and isinstance(v, str) for k, v in m.items()))
