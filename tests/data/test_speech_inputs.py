"""#18 items 3, 4, 12: speech labels follow the training split's class names; WAVs that give nothing warn,
a data set without any spike is refused; WAVE_FORMAT_EXTENSIBLE is read; implausible sample rates refused."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from hm2bp.config import load_config
from hm2bp.data.speech import load_speech_folder, read_audio, read_sphere, read_wav
from hm2bp.errors import ConfigError, DataFormatError
from hm2bp.train.datasets import load_datasets

pytestmark = pytest.mark.reliability


def _wav(path: Path, frames: np.ndarray, rate: int = 12500, width: int = 2) -> Path:
    """``frames`` float [n, channels] in [−1, 1)."""
    frames = np.atleast_2d(frames.T).T if frames.ndim == 1 else frames
    scale = {1: 127, 2: 32767, 3: 8388607, 4: 2147483647}[width]
    ints = np.round(frames * scale).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints.reshape(-1))
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def _extensible(path: Path, frames: np.ndarray, rate: int, bits: int) -> Path:
    width = bits // 8
    ch = frames.shape[1]
    ints = np.round(frames * (2 ** (bits - 1) - 1)).astype(np.int64).reshape(-1)
    data = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints)
    guid = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, ch, rate, rate * ch * width, ch * width, bits, 22, bits, 0) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _tone(n: int, ch: int = 1, f: float = 440.0, rate: int = 12500) -> np.ndarray:
    x = 0.5 * np.sin(2 * np.pi * f * np.arange(n) / rate)
    return np.repeat(x[:, None], ch, axis=1)


# -------------------------------------------------------------------------------------- labels (item 3)
def test_test_split_missing_a_class_is_refused(tmp_path: Path) -> None:
    for split, classes in (("train", ("a", "b", "c")), ("test", ("b", "c"))):
        for c in classes:
            _wav(tmp_path / split / c / "u0.wav", _tone(100))
    _, names = load_speech_folder(tmp_path / "train")
    assert names == ["a", "b", "c"]
    with pytest.raises(DataFormatError, match=r"test: class folders differ .* missing \['a'\]"):
        load_speech_folder(tmp_path / "test", classes=names)
    _wav(tmp_path / "test" / "a" / "u0.wav", _tone(100))
    _wav(tmp_path / "test" / "zz" / "u0.wav", _tone(100))
    with pytest.raises(DataFormatError, match=r"unknown \['zz'\]"):
        load_speech_folder(tmp_path / "test", classes=names)


def test_labels_follow_the_training_names(tmp_path: Path) -> None:
    # numeric names sort numerically; the test split's own order would be the same, so permute the list
    for split in ("train", "test"):
        for c in ("0", "1", "2"):
            _wav(tmp_path / split / c / "u0.wav", _tone(100))
    items, names = load_speech_folder(tmp_path / "test", classes=["2", "0", "1"])
    assert names == ["2", "0", "1"]
    assert {p.parent.name: lab for p, lab in items} == {"2": 0, "0": 1, "1": 2}


def test_ti46_run_refuses_a_split_without_a_class(tmp_path: Path) -> None:
    for split, classes in (("train", ("0", "1")), ("test", ("1",))):
        for c in classes:
            _wav(tmp_path / split / c / "u0.wav", _tone(3000))
    cfg = load_config("ti46", [f"data.data_dir={tmp_path}", "model.arch=78-12-2", "model.thresholds=3,3"])
    with pytest.raises(DataFormatError, match=r"missing \['0'\]"):
        load_datasets(cfg)


# ----------------------------------------------------------------------- silent inputs (item 4)
def test_silent_wavs_warn_and_a_silent_set_is_refused(tmp_path: Path) -> None:
    silent = {"empty": np.zeros((0, 1)), "short": _tone(100), "antiphase": np.c_[_tone(3000), -_tone(3000)]}
    for split in ("train", "test"):
        for c in ("0", "1"):
            _wav(tmp_path / split / c / "empty.wav", silent["empty"])
            _wav(tmp_path / split / c / "short.wav", silent["short"])
    cfg = load_config("ti46", [f"data.data_dir={tmp_path}", "model.arch=78-12-2", "model.thresholds=3,3"])
    with pytest.raises(ConfigError, match="no input spike"):
        load_datasets(cfg)
    # one sample of each kind warns, naming the file
    for name in ("empty", "short"):
        p = tmp_path / "train" / "0" / f"{name}.wav"
        with pytest.warns(RuntimeWarning, match=rf"{name}.wav: no input spike"):
            _speech_raster(cfg, p)
    p = _wav(tmp_path / "anti.wav", silent["antiphase"])
    with pytest.warns(RuntimeWarning, match="anti.wav: the 2 channels cancel"):
        x, _ = read_wav(p)
    assert np.abs(x).max() > 0.4  # the first channel, not the cancelled mean


def _speech_raster(cfg, p: Path) -> np.ndarray:
    from hm2bp.encoding import bsa_encode
    from hm2bp.train.datasets import _cochleagram
    from hm2bp.train.input_checks import warn_if_silent

    coch = _cochleagram(p)
    return warn_if_silent(p, bsa_encode(coch, cfg.model.T), "test")


def test_zero_channel_and_empty_data_chunk(tmp_path: Path) -> None:
    p = _wav(tmp_path / "z.wav", _tone(100))
    data = bytearray(p.read_bytes())
    data[22:24] = (0).to_bytes(2, "little")  # 0 channels
    p.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="z.wav"):
        read_wav(p)
    q = _wav(tmp_path / "e.wav", np.zeros((0, 1)))
    x, rate = read_wav(q)  # a 0-byte data chunk reads as no samples; the training path then warns
    assert x.size == 0 and rate == 12500


# ------------------------------------------------------------------------ extensible (item 4)
@pytest.mark.parametrize("bits", [16, 24])
@pytest.mark.parametrize("ch", [1, 2])
def test_wave_format_extensible(tmp_path: Path, bits: int, ch: int) -> None:
    frames = _tone(500, ch)
    x, rate = read_audio(_extensible(tmp_path / "x.wav", frames, 16000, bits))
    assert rate == 16000 and x.shape == (500,)
    assert np.abs(x - frames[:, 0]).max() < 2.0 ** (1 - bits) * 2
    try:
        import soundfile as sf
    except ImportError:
        return
    ref, _ = sf.read(str(tmp_path / "x.wav"), dtype="float64", always_2d=True)
    assert np.abs(x - ref.mean(axis=1)).max() < 1e-6


def test_extensible_float_is_refused(tmp_path: Path) -> None:
    p = _extensible(tmp_path / "f.wav", _tone(50), 16000, 16)
    data = bytearray(p.read_bytes())
    data[20 + 24 + 0] = 3  # subformat IEEE float
    p.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="f.wav: .*non-PCM subformat"):
        read_wav(p)


# -------------------------------------------------------------------------------- rates (item 12)
@pytest.mark.parametrize("rate", [1, 999, 192_001, 2**32 - 1])
def test_implausible_rates_are_refused(tmp_path: Path, rate: int) -> None:
    p = _wav(tmp_path / "r.wav", _tone(100))
    data = bytearray(p.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")
    p.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=rf"r.wav: sample rate {rate:,} Hz is outside 1,000–192,000 Hz"):
        read_audio(p)


def test_sphere_rate_is_checked(tmp_path: Path) -> None:
    head = "NIST_1A\n   1024\nsample_count -i 4\nsample_n_bytes -i 2\nsample_rate -i 1\nend_head\n"
    p = tmp_path / "s.sph"
    p.write_bytes(head.encode().ljust(1024, b" ") + b"\x00" * 8)
    with pytest.raises(DataFormatError, match="s.sph: sample rate 1 Hz"):
        read_sphere(p)
    p.write_bytes(head.replace("-i 1\n", "-i 16000\n").encode().ljust(1024, b" ") + b"\x00" * 8)
    assert read_sphere(p)[1] == 16000
