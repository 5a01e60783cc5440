"""Speech front end: audio readers (WAV, NIST SPHERE), the Lyon passive ear, and dataset listings.

TI46 pipeline of the reference (docs/algorithm.md §1.5; ``TI46_Lyon_ear.m`` + ``readSpeechData.cpp``)::

    x, sr = read_audio(path)                 # samples in [-1, 1), like MATLAB's audioread
    coch = lyon_features(x, sr)              # [78, frames] at 12.5 kHz, decimation 200 (16 ms/frame)
    spikes = hm2bp.encoding.bsa_encode(coch, T)

The Lyon model comes from the ``lyon`` package and resampling from scipy; both are imported lazily
(``pip install hm2bp[data]``).
"""

from __future__ import annotations

import math
import os
import re
import struct
import warnings
import wave
from pathlib import Path

import numpy as np

from hm2bp.errors import DataFormatError
from hm2bp.io.bounded import read_head

__all__ = [
    "load_fsdd",
    "load_speech_folder",
    "lyon_features",
    "read_audio",
    "read_lyon_text",
    "read_sphere",
    "read_wav",
]

_EXTRA_HINT = "install the optional data extra: pip install hm2bp[data]"


# --------------------------------------------------------------------------------------------------
# Audio readers
# --------------------------------------------------------------------------------------------------
def _pcm_to_float(raw: bytes, width: int, n_channels: int, big_endian: bool, path: Path) -> np.ndarray:
    """Decode interleaved integer PCM into float64 in [−1, 1), averaged over channels."""
    end = ">" if big_endian else "<"
    if width == 1:
        a = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        a = np.frombuffer(raw, dtype=end + "i2").astype(np.float64) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        if big_endian:
            b = b[:, ::-1]
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        a = v.astype(np.float64) / float(1 << 23)
    elif width == 4:
        a = np.frombuffer(raw, dtype=end + "i4").astype(np.float64) / 2147483648.0
    else:
        raise DataFormatError(path, f"unsupported sample width {width} bytes (PCM 8/16/24/32-bit only)")
    if n_channels > 1:
        a = _mix_to_mono(a.reshape(-1, n_channels), path)
    return a


#: Sample rates accepted by the readers: a header outside this range is corrupt or not speech, and
#: resampling it to 12.5 kHz would take minutes (1 Hz) or a 149 GiB buffer (2³²−1 Hz).
MIN_RATE, MAX_RATE = 1_000, 192_000


def _check_rate(path: Path, rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise DataFormatError(
            path, f"sample rate {rate:,} Hz is outside {MIN_RATE:,}–{MAX_RATE:,} Hz: a corrupt header or not a "
            "speech recording"
        )


def _mix_to_mono(frames: np.ndarray, path: Path) -> np.ndarray:
    """Average the channels; if they cancel (e.g. stereo in anti-phase) warn and keep the first channel."""
    mono = frames.mean(axis=1)
    loud = float(np.abs(frames).max()) if frames.size else 0.0
    if loud > 0 and float(np.abs(mono).max()) < 1e-3 * loud:
        warnings.warn(f"{path}: the {frames.shape[1]} channels cancel when averaged (anti-phase?); "
                      "using the first channel", RuntimeWarning, stacklevel=3)
        return np.ascontiguousarray(frames[:, 0])
    return mono


_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_KSDATAFORMAT_PCM = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def _riff_chunks(path: Path, data: bytes) -> dict[bytes, bytes]:
    """The first chunk of each id of a RIFF/WAVE file (``fmt `` and ``data`` are what we need)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise DataFormatError(path, "not a RIFF/WAVE file")
    chunks: dict[bytes, bytes] = {}
    pos = 12
    while pos + 8 <= len(data):
        cid, n = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + n]
        if len(body) != n:
            raise DataFormatError(path, f"truncated: chunk {cid!r} announces {n:,} bytes, {len(body):,} remain")
        chunks.setdefault(cid, body)
        pos += 8 + n + (n & 1)
    return chunks


def _read_wav_extensible(path: Path) -> tuple[np.ndarray, int]:
    """WAVE_FORMAT_EXTENSIBLE with integer PCM (16/24/32-bit), which Python 3.11's ``wave`` refuses."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataFormatError(path, f"cannot read: {e}") from e
    chunks = _riff_chunks(path, data)
    fmt, raw = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or raw is None or len(fmt) < 40:
        raise DataFormatError(path, "WAVE_FORMAT_EXTENSIBLE file without a complete 'fmt ' and 'data' chunk")
    tag, n_ch, rate, _, align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag != _WAVE_FORMAT_EXTENSIBLE or fmt[24:40] != _KSDATAFORMAT_PCM:
        raise DataFormatError(path, "WAVE_FORMAT_EXTENSIBLE with a non-PCM subformat (float or compressed)")
    width = (bits + 7) // 8
    if n_ch < 1 or width not in (1, 2, 3, 4) or align != n_ch * width:
        raise DataFormatError(path, f"bad WAV header: {n_ch} channels, {bits}-bit samples, block {align}")
    _check_rate(path, rate)
    raw = raw[: len(raw) - len(raw) % align]
    return _pcm_to_float(raw, width, n_ch, False, path), rate


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file with the standard-library ``wave`` module (WAVE_FORMAT_EXTENSIBLE with our parser).

    8-bit (unsigned), 16-, 24- and 32-bit (signed) integer PCM; several channels are averaged (if they
    cancel, the first is used, with a warning). Rates outside 1–192 kHz are refused.

    Returns:
        ``(samples float64 in [−1, 1), sample_rate)`` — the scaling of MATLAB's ``audioread``.

    Raises:
        DataFormatError: missing, garbage, non-PCM (e.g. float or compressed) or truncated files.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    size = path.stat().st_size
    try:
        with wave.open(str(path), "rb") as w:
            n_ch, width, rate, n_frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            if n_ch < 1 or rate <= 0 or width < 1:
                raise DataFormatError(path, f"bad WAV header: {n_ch} channels, {width}-byte samples, {rate} Hz")
            need = n_frames * n_ch * width
            if need > size:  # never let an unchecked header size drive the allocation
                raise DataFormatError(
                    path,
                    f"truncated: header announces {n_frames} frames ({need:,} bytes), the file has {size:,} bytes",
                )
            _check_rate(path, rate)
            raw = w.readframes(n_frames)
    except DataFormatError:
        raise
    except wave.Error as e:
        if str(e) == f"unknown format: {_WAVE_FORMAT_EXTENSIBLE}":
            return _read_wav_extensible(path)
        raise DataFormatError(path, f"not a readable PCM WAV file: {e}") from e
    except (EOFError, OSError, ValueError, RuntimeError, struct.error) as e:
        raise DataFormatError(path, f"not a readable PCM WAV file: {e}") from e
    if len(raw) != n_frames * n_ch * width:
        raise DataFormatError(
            path, f"truncated: header announces {n_frames} frames, the data chunk holds {len(raw) // (n_ch * width)}"
        )
    return _pcm_to_float(raw, width, n_ch, False, path), rate


_SPHERE_MAGIC = b"NIST_1A"


def _parse_sphere_header(path: Path, head: bytes) -> dict[str, int | float | str]:
    fields: dict[str, int | float | str] = {}
    text = head.decode("latin-1")
    lines = text.split("\n")
    for line in lines[2:]:
        line = line.strip()
        if line == "end_head":
            return fields
        if not line or line.startswith(";"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise DataFormatError(path, f"bad SPHERE header line {line!r}")
        name, typ, value = parts
        try:
            if typ == "-i":
                fields[name] = int(value)
            elif typ == "-r":
                fields[name] = float(value)
            elif typ.startswith("-s"):
                n = int(typ[2:])
                fields[name] = value[:n]
            else:
                raise ValueError
        except ValueError:
            raise DataFormatError(path, f"bad SPHERE header line {line!r}") from None
    raise DataFormatError(path, "SPHERE header has no 'end_head' line")


def read_sphere(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a NIST SPHERE file (TI46, TIMIT, …): ``NIST_1A`` header, then uncompressed PCM samples.

    Header fields used: ``sample_count``, ``sample_n_bytes``, ``channel_count`` (default 1),
    ``sample_rate``, ``sample_byte_format`` (``01`` little-endian, ``10`` big-endian, ``1`` for 8-bit)
    and ``sample_coding`` (only ``pcm``; shorten-compressed files must be decompressed first, e.g. with
    LDC's ``sph2pipe``).

    Returns:
        ``(samples float64 in [−1, 1), sample_rate)``; several channels are averaged.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            first = f.read(16)
            if not first.startswith(_SPHERE_MAGIC + b"\n"):
                raise DataFormatError(path, "not a NIST SPHERE file (no 'NIST_1A' header)")
            try:
                hsize = int(first[8:16].decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                raise DataFormatError(path, "SPHERE header size line is not a number") from None
            if hsize < 16 or hsize > size or hsize > 1 << 20:
                raise DataFormatError(path, f"SPHERE header size {hsize} impossible for a {size}-byte file")
            f.seek(0)
            head = f.read(hsize)
            fields = _parse_sphere_header(path, head)
            coding = str(fields.get("sample_coding", "pcm")).lower()
            if coding != "pcm":
                raise DataFormatError(
                    path,
                    f"sample_coding '{coding}' is not supported (uncompressed PCM only); decompress it "
                    "first, e.g. 'sph2pipe -f wav in.sph out.wav'",
                )
            try:
                n = int(fields["sample_count"])
                width = int(fields["sample_n_bytes"])
                rate = int(fields["sample_rate"])
            except KeyError as e:
                raise DataFormatError(path, f"SPHERE header lacks the field {e.args[0]!r}") from None
            n_ch = int(fields.get("channel_count", 1))
            order = str(fields.get("sample_byte_format", "01" if width > 1 else "1"))
            if width not in (1, 2, 3, 4) or n_ch < 1 or n < 0 or rate <= 0:
                raise DataFormatError(
                    path, f"bad SPHERE header: {n} samples × {n_ch} channels × {width} bytes at {rate} Hz"
                )
            _check_rate(path, rate)
            if width > 1 and order not in ("01", "10"):
                raise DataFormatError(path, f"unsupported sample_byte_format '{order}'")
            need = n * n_ch * width
            if need > size - hsize:
                raise DataFormatError(
                    path, f"truncated: header announces {need:,} sample bytes, the file holds {size - hsize:,}"
                )
            raw = f.read(need)
    except DataFormatError:
        raise
    except OSError as e:
        raise DataFormatError(path, f"cannot read: {e}") from e
    if len(raw) != need:
        raise DataFormatError(path, f"truncated: read {len(raw)} of {need} sample bytes")
    if width == 1:
        # 8-bit SPHERE PCM is signed linear
        a = np.frombuffer(raw, dtype=np.int8).astype(np.float64) / 128.0
        if n_ch > 1:
            a = _mix_to_mono(a.reshape(-1, n_ch), path)
        return a, rate
    return _pcm_to_float(raw, width, n_ch, order == "10", path), rate


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a WAV or NIST SPHERE file, chosen by its content (TI46/TIMIT '.wav' files are often SPHERE)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    magic = read_head(path, 8)
    if magic.startswith(_SPHERE_MAGIC):
        return read_sphere(path)
    if magic.startswith(b"RIFF"):
        return read_wav(path)
    raise DataFormatError(path, "unknown audio format: neither RIFF/WAVE nor NIST SPHERE")


def read_lyon_text(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a cochleagram saved as ASCII (the reference's ``<label>/<file>.dat``: channels × frames).

    Values are returned as float32, as the reference's C++ reader parses them.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    rows: list[list[float]] = []
    try:
        with open(path, encoding="ascii") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append([float(v) for v in line.split()])
                except ValueError:
                    raise DataFormatError(path, f"line {lineno}: not a row of numbers") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"cannot read: {e}") from e
    if not rows:
        raise DataFormatError(path, "empty cochleagram file")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise DataFormatError(path, f"rows have different lengths {sorted(widths)}")
    a = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(a).all():
        raise DataFormatError(path, "contains NaN or inf")
    return a


# --------------------------------------------------------------------------------------------------
# Lyon passive ear
# --------------------------------------------------------------------------------------------------
def lyon_features(
    samples: np.ndarray,
    rate: int,
    target_rate: int = 12500,
    decimation: int = 200,
    ear_q: float = 8,
    step_factor: float = 8 / 32,
) -> np.ndarray:
    """Lyon passive-ear cochleagram, as ``LyonPassiveEar(wav, 12500, 200)`` of the reference (docs/algorithm.md §1.5).

    The signal is resampled to ``target_rate`` (``scipy.signal.resample_poly``) if needed, then passed to
    the ``lyon`` package (a port of the Auditory Toolbox). Like the MATLAB function
    (``y = y(3:nChannels, :)``), ``lyon`` already drops the two pre-emphasis channels, so at 12.5 kHz
    its 78 channels are the reference's 78 rows; no further channel is dropped here.

    Returns:
        float64 ``[channels, frames]`` (78 × ⌊n/decimation⌋ at 12.5 kHz), frame = decimation/target_rate s.
    """
    try:
        from lyon.calc import LyonCalc
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"lyon_features needs the 'lyon' package; {_EXTRA_HINT}") from e
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D (mono), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("samples contain NaN or inf")
    rate, target_rate, decimation = int(rate), int(target_rate), int(decimation)
    if rate <= 0 or target_rate <= 0 or decimation < 1:
        raise ValueError("rate, target_rate must be > 0 and decimation >= 1")
    if rate != target_rate:
        try:
            from scipy.signal import resample_poly
        except ImportError as e:  # pragma: no cover
            raise ImportError(f"resampling needs scipy; {_EXTRA_HINT} (or pip install scipy)") from e
        g = math.gcd(target_rate, rate)
        x = resample_poly(x, target_rate // g, rate // g)
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = LyonCalc().lyon_passive_ear(
        x, sample_rate=target_rate, decimation_factor=decimation, ear_q=ear_q, step_factor=step_factor
    )
    return np.ascontiguousarray(np.asarray(y, dtype=np.float64).T)


# --------------------------------------------------------------------------------------------------
# Dataset listings
# --------------------------------------------------------------------------------------------------
_FSDD_NAME = re.compile(r"^([0-9])_([A-Za-z]+)_([0-9]+)\.wav$")


def load_fsdd(root: str | os.PathLike[str], split: str = "train") -> list[tuple[Path, int, str]]:
    """List the Free Spoken Digit Dataset with its official split.

    Files ``{digit}_{speaker}_{index}.wav`` in ``root/recordings/`` (or directly in ``root``); indices 0–4
    are the test set, 5–49 the train set (2,700 train / 300 test for v1.0.10).

    Returns:
        ``[(path, digit, speaker), …]`` sorted by digit, speaker, index.
    """
    root = Path(root)
    s = split.lower()
    if s not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    how = f"place the FSDD 'recordings/' folder ({{digit}}_{{speaker}}_{{index}}.wav files) in {root}"
    if not folder.is_dir():
        raise DataFormatError(folder, f"missing FSDD folder; {how}")
    items: list[tuple[int, str, int, Path]] = []
    for f in folder.iterdir():
        m = _FSDD_NAME.match(f.name)
        if not m:
            continue
        digit, speaker, idx = int(m.group(1)), m.group(2), int(m.group(3))
        if (idx < 5) == (s == "test"):
            items.append((digit, speaker, idx, f))
    if not items:
        raise DataFormatError(folder, f"no FSDD recordings found; {how}")
    items.sort(key=lambda r: (r[0], r[1], r[2]))
    return [(f, d, spk) for d, spk, _, f in items]


_AUDIO_EXT = {".wav", ".sph", ".wv1", ".wv2", ".nist"}


def load_speech_folder(
    root: str | os.PathLike[str], extensions: set[str] | None = None, classes: list[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """List a TI46-style corpus: one sub-folder per class holding WAV or SPHERE files.

    Labels are the index of the folder name in sorted order; when every folder name is an integer
    (the reference's ``0`` … ``25``) they sort numerically, so label == int(folder name) for 0…K−1.
    Files are found recursively inside each class folder (read them with :func:`read_audio`).

    ``classes`` (the training split's names) numbers another split the same way: a folder not among
    them, or a name without a folder, is refused, so a missing class can never shift the labels.

    Returns:
        ``([(path, label), …], class_names)``.
    """
    root = Path(root)
    exts = {e.lower() for e in (extensions or _AUDIO_EXT)}
    how = f"expected {root}/<class>/<utterance>.wav (or .sph), one folder per class"
    if not root.is_dir():
        raise DataFormatError(root, f"missing speech folder; {how}")
    found = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if all(c.isdigit() for c in found):
        found.sort(key=int)
    else:
        found.sort()
    if classes is not None:
        unknown, missing = sorted(set(found) - set(classes)), [c for c in classes if c not in found]
        if unknown or missing:
            raise DataFormatError(
                root, f"class folders differ from the training split's {classes}: "
                + "; ".join(x for x in (unknown and f"unknown {unknown}", missing and f"missing {missing}") if x)
            )
        found = list(classes)
    classes = found
    items: list[tuple[Path, int]] = []
    for label, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in exts)
        items.extend((p, label) for p in files)
    if not items:
        raise DataFormatError(root, f"no audio files ({', '.join(sorted(exts))}) found; {how}")
    return items, classes
