"""Speech front end: WAV/SPHERE readers, Lyon features, FSDD and TI46-style listings."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

import shared_paths
from hm2bp.data.speech import (
    load_fsdd,
    load_speech_folder,
    lyon_features,
    read_audio,
    read_lyon_text,
    read_sphere,
    read_wav,
)
from hm2bp.errors import DataFormatError

DATA = shared_paths.DATA
FSDD = DATA / "fsdd"
GOLDEN = shared_paths.GOLDEN_ROOT
GOLDEN_LYON = GOLDEN / "mm-bp-snn" / "test" / "ti_alpha" / "0" / "f1_u10_c0.dat"

needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason=f"real FSDD data not found at {FSDD}")


def _write_wav(path: Path, samples: np.ndarray, rate: int, width: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def _sphere_bytes(samples: np.ndarray, fields: dict[str, str]) -> bytes:
    lines = ["NIST_1A", "   1024"] + [f"{k} {v}" for k, v in fields.items()] + ["end_head"]
    head = ("\n".join(lines) + "\n").encode("ascii")
    return head + b" " * (1024 - len(head)) + samples.tobytes()


# --------------------------------------------------------------------------------------------------
# WAV
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "width,dtype,scale,offset",
    [(1, np.uint8, 128.0, 128), (2, np.int16, 32768.0, 0), (4, np.int32, 2147483648.0, 0)],
)
def test_read_wav_widths(tmp_path, width, dtype, scale, offset):
    v = np.array([-1.0, -0.5, 0.0, 0.25, 0.75])
    ints = (v * scale + offset).astype(dtype)
    path = tmp_path / "a.wav"
    _write_wav(path, ints, 8000, width)
    x, sr = read_wav(path)
    assert sr == 8000 and x.dtype == np.float64
    np.testing.assert_allclose(x, v, atol=1e-12)


def test_read_wav_stereo_is_averaged(tmp_path):
    inter = np.array([1000, 3000, -2000, 0], dtype=np.int16)  # frames (1000, 3000), (−2000, 0)
    path = tmp_path / "s.wav"
    _write_wav(path, inter, 16000, 2, channels=2)
    x, _sr = read_wav(path)
    np.testing.assert_allclose(x, [2000 / 32768, -1000 / 32768])
    assert read_audio(path)[1] == 16000


@pytest.mark.reliability
def test_wav_garbage(tmp_path):
    path = tmp_path / "g.wav"
    path.write_bytes(b"this is not a wav file at all" * 10)
    with pytest.raises(DataFormatError) as ei:
        read_wav(path)
    assert ei.value.path == str(path) and str(path) in str(ei.value)
    with pytest.raises(DataFormatError, match="unknown audio format"):
        read_audio(path)


@pytest.mark.reliability
def test_wav_riff_with_garbage_body(tmp_path):
    path = tmp_path / "r.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(256)) * 4)
    with pytest.raises(DataFormatError) as ei:
        read_wav(path)
    assert str(path) in str(ei.value)


@pytest.mark.reliability
def test_wav_truncated(tmp_path):
    good = tmp_path / "good.wav"
    _write_wav(good, np.arange(4000, dtype=np.int16), 8000, 2)
    bad = tmp_path / "cut.wav"
    bad.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(DataFormatError, match="truncated") as ei:
        read_wav(bad)
    assert str(bad) in str(ei.value)


@pytest.mark.reliability
def test_wav_header_claims_huge_data(tmp_path):
    good = tmp_path / "good.wav"
    _write_wav(good, np.arange(100, dtype=np.int16), 8000, 2)
    raw = bytearray(good.read_bytes())
    i = raw.index(b"data")
    raw[i + 4 : i + 8] = (0xFFFFFFF0).to_bytes(4, "little")  # ~4 GB data chunk
    bad = tmp_path / "huge.wav"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match="truncated") as ei:
        read_wav(bad)
    assert str(bad) in str(ei.value)


@pytest.mark.reliability
def test_missing_audio(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        read_wav(tmp_path / "x.wav")


# --------------------------------------------------------------------------------------------------
# SPHERE
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order,dt", [("01", "<i2"), ("10", ">i2")])
def test_read_sphere_pcm(tmp_path, order, dt):
    s = np.array([0, 16384, -32768, 100], dtype=dt)
    path = tmp_path / "u.sph"
    fields = {
        "sample_count": "-i 4",
        "sample_n_bytes": "-i 2",
        "channel_count": "-i 1",
        "sample_byte_format": f"-s2 {order}",
        "sample_rate": "-i 12500",
        "sample_coding": "-s3 pcm",
    }
    path.write_bytes(_sphere_bytes(s, fields))
    x, sr = read_sphere(path)
    assert sr == 12500
    np.testing.assert_allclose(x, [0, 0.5, -1.0, 100 / 32768])
    np.testing.assert_array_equal(read_audio(path)[0], x)


@pytest.mark.reliability
def test_sphere_compressed_is_refused(tmp_path):
    path = tmp_path / "c.sph"
    fields = {
        "sample_count": "-i 4",
        "sample_n_bytes": "-i 2",
        "sample_rate": "-i 12500",
        "sample_coding": "-s26 pcm,embedded-shorten-v2.00",
    }
    path.write_bytes(_sphere_bytes(np.zeros(4, np.int16), fields))
    with pytest.raises(DataFormatError, match="shorten") as ei:
        read_sphere(path)
    assert str(path) in str(ei.value) and "sph2pipe" in str(ei.value)


@pytest.mark.reliability
def test_sphere_truncated_and_bad_header(tmp_path):
    fields = {"sample_count": "-i 1000000", "sample_n_bytes": "-i 2", "sample_rate": "-i 8000"}
    path = tmp_path / "t.sph"
    path.write_bytes(_sphere_bytes(np.zeros(10, np.int16), fields))
    with pytest.raises(DataFormatError, match="truncated") as ei:
        read_sphere(path)
    assert str(path) in str(ei.value)
    bad = tmp_path / "h.sph"
    bad.write_bytes(b"NIST_1A\n   9999999\nrest")
    with pytest.raises(DataFormatError, match="header size") as ei:
        read_sphere(bad)
    assert str(bad) in str(ei.value)
    nohdr = tmp_path / "n.sph"
    nohdr.write_bytes(b"NIST_1A\n   1024\nsample_count -i 3\n" + b" " * 1000)
    with pytest.raises(DataFormatError, match="end_head"):
        read_sphere(nohdr)


# --------------------------------------------------------------------------------------------------
# Listings
# --------------------------------------------------------------------------------------------------
@needs_fsdd
def test_fsdd_split_counts():
    train = load_fsdd(FSDD, "train")
    test = load_fsdd(FSDD, "test")
    assert len(train) == 2700 and len(test) == 300
    assert {spk for _, _, spk in train} == {"jackson", "nicolas", "theo", "yweweler", "george", "lucas"}
    assert np.bincount([d for _, d, _ in test]).tolist() == [30] * 10
    assert all(int(p.stem.split("_")[2]) < 5 for p, _, _ in test)
    assert all(int(p.stem.split("_")[2]) >= 5 for p, _, _ in train)
    path, digit, speaker = test[0]
    assert path.name == f"{digit}_{speaker}_0.wav"
    x, sr = read_wav(path)
    assert sr == 8000 and x.ndim == 1 and 0 < np.abs(x).max() <= 1.0


@pytest.mark.reliability
def test_fsdd_missing(tmp_path):
    with pytest.raises(DataFormatError) as ei:
        load_fsdd(tmp_path / "nothing", "train")
    assert "recordings" in str(ei.value)


def test_speech_folder_labels(tmp_path):
    for cls in ["0", "1", "2", "10"]:
        d = tmp_path / cls
        d.mkdir()
        _write_wav(d / "u1.wav", np.zeros(10, np.int16), 12500, 2)
    (tmp_path / "10" / "notes.txt").write_text("ignored")
    items, classes = load_speech_folder(tmp_path)
    assert classes == ["0", "1", "2", "10"]  # numeric folder names sort numerically
    assert [lab for _, lab in items] == [0, 1, 2, 3]
    named = tmp_path / "named"
    for cls in ["b", "a"]:
        (named / cls).mkdir(parents=True)
        _write_wav(named / cls / "x.wav", np.zeros(10, np.int16), 12500, 2)
    items, classes = load_speech_folder(named)
    assert classes == ["a", "b"] and [p.parent.name for p, _ in items] == ["a", "b"]


@pytest.mark.reliability
def test_speech_folder_empty(tmp_path):
    (tmp_path / "0").mkdir()
    with pytest.raises(DataFormatError, match="no audio files"):
        load_speech_folder(tmp_path)


# --------------------------------------------------------------------------------------------------
# Lyon ear
# --------------------------------------------------------------------------------------------------
@needs_fsdd
def test_lyon_features_78_channels_fsdd():
    pytest.importorskip("lyon", reason="lyon not installed (pip install hm2bp[data])")
    path = FSDD / "recordings" / "0_jackson_0.wav"
    x, sr = read_wav(path)
    coch = lyon_features(x, sr)
    n_res = int(np.ceil(len(x) * 12500 / 8000))
    assert coch.shape == (78, n_res // 200)
    assert np.isfinite(coch).all() and coch.min() >= 0
    # magnitudes like the golden TI46 file (max 2.5e-4, mean 5e-5)
    assert 1e-5 < coch.mean() < 2e-4 and 1e-4 < coch.max() < 1e-3


def test_lyon_features_resampling_and_shape():
    pytest.importorskip("lyon", reason="lyon not installed (pip install hm2bp[data])")
    pytest.importorskip("scipy", reason="scipy not installed")
    rng = np.random.default_rng(0)
    x = 0.1 * rng.standard_normal(16000)  # 1 s at 16 kHz → 12500 samples → 62 frames
    coch = lyon_features(x, 16000)
    assert coch.shape == (78, 62)
    coch2 = lyon_features(x[:12500], 12500)  # no resampling
    assert coch2.shape == (78, 62)


@pytest.mark.golden
def test_lyon_channels_match_golden_layout():
    """The golden cochleagram is 78 × 68 and ``lyon`` at 12.5 kHz gives 78 channels too.

    ``lyon`` already drops the two pre-emphasis channels (``y[:, 2:]``, like the MATLAB
    ``y = y(3:nChannels, :)``) of its 80 filters, so no further channel must be dropped. Without
    the TI46 recording the channel values themselves cannot be compared; their profiles agree in
    range: both lie within 1e-7…1e-3.
    """
    if not GOLDEN_LYON.is_file():
        pytest.skip(f"golden data not found at {GOLDEN_LYON}")
    pytest.importorskip("lyon", reason="lyon not installed (pip install hm2bp[data])")
    from lyon.utils import design_lyon_filters

    g = read_lyon_text(GOLDEN_LYON)
    assert g.shape == (78, 68) and g.dtype == np.float32
    filters, _ = design_lyon_filters(12500, 8, 8 / 32)
    assert filters.shape[1] == 80  # 2 front filters + 78 cascade stages
    x = np.sin(2 * np.pi * 440 * np.arange(68 * 200) / 12500) * 0.1
    coch = lyon_features(x, 12500)
    assert coch.shape == g.shape
    assert 1e-7 < g.min() and g.max() < 1e-3


def test_lyon_missing_gives_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lyon", None)
    monkeypatch.setitem(sys.modules, "lyon.calc", None)
    with pytest.raises(ImportError, match=r"pip install hm2bp\[data\]"):
        lyon_features(np.zeros(1000), 12500)


def test_import_hm2bp_data_modules_is_light():
    """Importing the data modules must not pull in the optional extras."""
    import subprocess
    import sys

    code = (
        "import sys, hm2bp.data.speech, hm2bp.data.nmnist, hm2bp.data.idx, hm2bp.encoding; "
        "print(sorted(m for m in ('lyon', 'tonic', 'soundfile', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
