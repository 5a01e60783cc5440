"""N-MNIST: the official 5-byte event files, saccade stabilisation and the binning of docs/algorithm.md §1.5.

Event arrays are numpy structured arrays with fields ``x``, ``y`` (int16, **0-based** sensor
coordinates as stored in the file, 0…33), ``p`` (int8, 1 = ON, 0 = OFF) and ``t`` (int64, µs) — the same
fields as a ``tonic`` event array. The reference MATLAB tools work with 1-based ``x + 1``, ``y + 1`` and
polarity ``p + 1`` ∈ {1, 2}; the functions below convert internally where the spec's formulas need it.

Pipeline of the reference (``nmnist/NMNIST_Converter.m`` + ``readData/readNMnistData.cpp``)::

    ev = read_nmnist_events(path)          # step 1
    ev = stabilize(ev)                     # step 2
    raster = events_to_raster(ev, T=540)   # steps 3–7: [T, 2312] bool
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hm2bp.errors import DataFormatError
from hm2bp.io.bounded import read_head

if TYPE_CHECKING:
    import torch

__all__ = [
    "EVENT_DTYPE",
    "RandomShift",
    "TonicRaster",
    "events_to_raster",
    "from_tonic",
    "load_nmnist",
    "nmnist_raster",
    "read_nmnist_dat",
    "read_nmnist_events",
    "shift_raster",
    "stabilize",
]

EVENT_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("p", "i1"), ("t", "<i8")])
SENSOR = 34  # N-MNIST sensor is 34 × 34
N_PIX = SENSOR * SENSOR  # 1156

_OVERFLOW_Y = 240  # ATIS timestamp-overflow marker (y == 240), never a real N-MNIST pixel
_OVERFLOW_INCREMENT = 1 << 13


def read_nmnist_events(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one N-MNIST ``.bin`` recording (5 bytes per event, as ``Read_Ndataset.m``).

    byte 0 = x, byte 1 = y, byte 2 bit 7 = polarity (1 = ON) and bits 6–0 = timestamp bits 22–16, bytes
    3–4 = timestamp bits 15–0 (µs). Events with y == 240 are the ATIS timestamp-overflow markers of the
    official reader (each adds 2¹³ µs to all later timestamps) and are removed; plain N-MNIST files have none.

    Returns:
        structured array of :data:`EVENT_DTYPE` with 0-based x, y, p ∈ {0, 1}, t in µs.

    Raises:
        DataFormatError: missing or empty file, a size that is not a multiple of 5 (truncated / not
            N-MNIST), the authors' text converter format (read it with :func:`read_nmnist_dat`), or
            events off the 34 × 34 sensor (random bytes, another camera's recording).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    size = path.stat().st_size
    if size == 0:
        raise DataFormatError(path, "empty file: no events")
    if _looks_like_converter_text(path):
        raise DataFormatError(
            path, "is the authors' text converter format ('channel<TAB>bin…' lines), not 5-byte events; "
            "read it with hm2bp.data.nmnist.read_nmnist_dat"
        )
    if size % 5:
        raise DataFormatError(
            path, f"size {size} bytes is not a multiple of 5: truncated or not an N-MNIST event file"
        )
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataFormatError(path, f"cannot read: {e}") from e
    if raw.size != size:
        raise DataFormatError(path, f"read {raw.size} bytes, expected {size}")
    raw = raw.reshape(-1, 5).astype(np.uint32)
    x = raw[:, 0]
    y = raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    t = t.astype(np.int64)
    overflow = y == _OVERFLOW_Y
    if overflow.any():
        t = t + np.cumsum(overflow) * _OVERFLOW_INCREMENT
        keep = ~overflow
        x, y, p, t = x[keep], y[keep], p[keep], t[keep]
    _check_on_sensor(path, x, y)
    ev = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    ev["x"] = x
    ev["y"] = y
    ev["p"] = p
    ev["t"] = t
    return ev


def _looks_like_converter_text(path: Path) -> bool:
    """The converter's text starts with a decimal channel id and a TAB (``1\t3\t17…``)."""
    head = read_head(path, 64)
    return re.match(rb"[#\s]*[0-9]+\t[0-9]", head) is not None


def _check_on_sensor(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Every event of an N-MNIST file lies on the 34 × 34 sensor; the polarity is one bit and so always valid."""
    bad = (x >= SENSOR) | (y >= SENSOR)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataFormatError(
            path, f"{int(bad.sum()):,} of {x.size:,} events lie off the {SENSOR}×{SENSOR} sensor (first: event "
            f"{k}, x = {int(x[k])}, y = {int(y[k])}); not an N-MNIST recording"
        )


def read_nmnist_dat(path: str | os.PathLike[str], n_channels: int = 2 * N_PIX) -> list[list[np.ndarray]]:
    """Read the authors' converter text format (``NMNIST_Converter.m`` output, docs/algorithm.md §1.5 step 6).

    One line per channel, ``channel_id<TAB>bin<TAB>bin…`` with 1-based channel ids and integer bins;
    samples are separated by ``#`` lines.

    Returns:
        one list per sample of ``n_channels`` int64 arrays of bins (0-based channel index).

    Raises:
        DataFormatError: a line that is not ``id<TAB>bins``, a channel id outside 1…``n_channels``, a
            negative bin, or a file without any spike.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    samples: list[list[np.ndarray]] = []
    cur: list[np.ndarray] | None = None
    n_spikes = 0
    try:
        with open(path, encoding="ascii") as f:
            for lineno, line in enumerate(f, 1):
                text = line.strip()
                if text.startswith("#"):
                    if cur is not None:
                        samples.append(cur)
                    cur = None
                    continue
                if not text:
                    continue
                try:
                    vals = np.array([int(v) for v in text.split()], dtype=np.int64)
                except ValueError:
                    raise DataFormatError(path, f"line {lineno}: not 'channel<TAB>bin…' integers") from None
                ch = int(vals[0])
                if not 1 <= ch <= n_channels:
                    raise DataFormatError(path, f"line {lineno}: channel {ch} outside 1…{n_channels}")
                if vals.size > 1 and vals[1:].min() < 0:
                    raise DataFormatError(path, f"line {lineno}: negative bin {int(vals[1:].min())}")
                if cur is None:
                    cur = [np.zeros(0, dtype=np.int64)] * n_channels
                cur[ch - 1] = vals[1:]
                n_spikes += vals.size - 1
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"cannot read as converter text: {e}") from e
    if cur is not None:
        samples.append(cur)
    if n_spikes == 0:
        raise DataFormatError(path, "converter text file holds no spikes")
    return samples


def dat_sample_to_raster(sample: Sequence[np.ndarray], T: int) -> np.ndarray:
    """Raster ``bool [T, channels]`` of one converter sample: spike time = bin + 1, dropped if ≥ T (step 7)."""
    out = np.zeros((T, len(sample)), dtype=bool)
    for ch, bins in enumerate(sample):
        t = bins + 1
        out[t[t < T], ch] = True
    return out


def nmnist_raster(path: str | os.PathLike[str], T: int = 540, bin_us: float = 600) -> np.ndarray:
    """The training input of one recording, docs/algorithm.md §1.5: read → :func:`stabilize` → :func:`events_to_raster`.

    A ``.dat`` file is read as the authors' converter text (already stabilised and binned; its first
    sample). A recording that gives no spike in the ``T`` bins warns, naming the file and
    ``data.nmnist_bin_us``.
    """
    path = Path(path)
    if path.suffix.lower() == ".dat":
        raster = dat_sample_to_raster(read_nmnist_dat(path)[0], T)
    else:
        raster = events_to_raster(stabilize(read_nmnist_events(path)), T=T, bin_us=bin_us, two_channels=True)
    if not raster.any():
        warnings.warn(f"{path}: no input spike in T = {T} bins of {bin_us} µs (data.nmnist_bin_us); "
                      "this sample trains on nothing", RuntimeWarning, stacklevel=2)
    return raster


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """MATLAB ``round``: halves go away from zero."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def stabilize(events: np.ndarray) -> np.ndarray:
    """Undo the three N-MNIST saccades (``stabilize.m``, docs/algorithm.md §1.5 step 2).

    With 1-based X = x + 1, Y = y + 1 and ts in µs:

    - ts ≤ 105 ms: X −= 3.5·ts/105e3, Y −= 7·ts/105e3;
    - 105 < ts ≤ 210 ms: X −= 3.5 + 3.5·(ts−105e3)/105e3, Y −= 7 − 7·(ts−105e3)/105e3;
    - ts > 210 ms: X −= 7 − 7·(ts−210e3)/105e3;

    then X, Y are rounded (halves away from zero) and events with X < 1 or Y < 1 are dropped.
    Events falling beyond the sensor (X or Y > 34) are kept here; :func:`events_to_raster` drops them.

    Returns:
        a new event array (0-based x, y again).
    """
    ev = np.asarray(events)
    ts = ev["t"].astype(np.float64)
    X = ev["x"].astype(np.float64) + 1.0
    Y = ev["y"].astype(np.float64) + 1.0
    m1 = ts <= 105e3
    X[m1] = X[m1] - 3.5 * ts[m1] / 105e3
    Y[m1] = Y[m1] - 7 * ts[m1] / 105e3
    m2 = (ts > 105e3) & (ts <= 210e3)
    X[m2] = X[m2] - 3.5 - 3.5 * (ts[m2] - 105e3) / 105e3
    Y[m2] = Y[m2] - 7 + 7 * (ts[m2] - 105e3) / 105e3
    m3 = ts > 210e3
    X[m3] = X[m3] - 7 + 7 * (ts[m3] - 210e3) / 105e3
    X = _round_half_away(X)
    Y = _round_half_away(Y)
    keep = (X >= 1) & (Y >= 1)
    out = np.empty(int(keep.sum()), dtype=EVENT_DTYPE)
    out["x"] = X[keep] - 1
    out["y"] = Y[keep] - 1
    out["p"] = ev["p"][keep]
    out["t"] = ev["t"][keep]
    return out


def events_to_raster(
    events: np.ndarray,
    T: int = 540,
    bin_us: float = 600,
    two_channels: bool = True,
    *,
    width: int = SENSOR,
    height: int = SENSOR,
) -> np.ndarray:
    """Bin events into a boolean spike raster, docs/algorithm.md §1.5 steps 3–7.

    - events with X > 34 or Y > 34 (1-based) are dropped (also X, Y < 1);
    - channel = (X − 1)·34 + Y (1-based), i.e. 0-based index x·34 + y;
    - with ``two_channels`` ON events (polarity 2 in the MATLAB code) go to channel + 1156, giving 2312
      inputs; otherwise polarities merge (1156 inputs);
    - bin = ceil(ts / bin_us); spike time = bin + 1 (the reference's 1-based shift), dropped if ≥ T;
    - several events in one (channel, time) cell collapse into one spike.

    ``width``/``height`` generalise the 34 × 34 sensor (channel = x·height + y).

    Returns:
        ``bool`` array ``[T, 2·W·H]`` (two channels) or ``[T, W·H]``.
    """
    ev = np.asarray(events)
    n_pix = width * height
    n_ch = 2 * n_pix if two_channels else n_pix
    out = np.zeros((T, n_ch), dtype=bool)
    if ev.size == 0:
        return out
    x = ev["x"].astype(np.int64)
    y = ev["y"].astype(np.int64)
    keep = (x >= 0) & (y >= 0) & (x < width) & (y < height)
    ch = x * height + y
    if two_channels:
        ch = ch + n_pix * (ev["p"].astype(np.int64) > 0)
    b = np.ceil(ev["t"].astype(np.float64) / float(bin_us)).astype(np.int64)
    time = b + 1
    keep &= (time >= 0) & (time < T)
    out[time[keep], ch[keep]] = True
    return out


def shift_raster(raster: np.ndarray, dx: int, dy: int, *, width: int = SENSOR, height: int = SENSOR) -> np.ndarray:
    """The raster of the same recording seen ``dx`` pixels right and ``dy`` pixels down (training augmentation).

    ``raster`` is ``bool [T, C·W·H]`` in the channel layout of :func:`events_to_raster` (channel
    x·H + y within each of the C polarity blocks). Events pushed off the sensor are lost and the uncovered
    border is silent, exactly as :func:`events_to_raster` of the shifted events would give.
    """
    r = np.asarray(raster, dtype=bool)
    n_pix = width * height
    if r.ndim != 2 or r.shape[1] % n_pix:
        raise ValueError(f"raster of shape {r.shape} is not [T, C*{width}*{height}]")
    if abs(dx) >= width or abs(dy) >= height:
        return np.zeros_like(r)
    grid = r.reshape(r.shape[0], -1, width, height)
    out = np.zeros_like(grid)
    (xs, xd), (ys, yd) = _overlap(dx, width), _overlap(dy, height)
    out[:, :, xd, yd] = grid[:, :, xs, ys]
    return out.reshape(r.shape)


def _overlap(d: int, n: int) -> tuple[slice, slice]:
    """Source and destination slices of an axis of length ``n`` moved by ``d`` (|d| < n)."""
    return (slice(0, n - d), slice(d, n)) if d >= 0 else (slice(-d, n), slice(0, n + d))


class RandomShift:
    """Training augmentation of N-MNIST rasters: a whole-pixel shift drawn uniformly from [−max_px, max_px]²
    per sample and epoch (the recordings are centred MNIST digits on a 34 × 34 sensor with a 3-pixel margin,
    so small shifts keep the digit on the sensor)."""

    def __init__(self, max_px: int, *, width: int = SENSOR, height: int = SENSOR) -> None:
        self.max_px = int(max_px)
        self.width, self.height = width, height

    def __call__(self, raster: np.ndarray, generator: torch.Generator) -> np.ndarray:
        import torch

        d = torch.randint(-self.max_px, self.max_px + 1, (2,), generator=generator).tolist()
        return shift_raster(raster, d[0], d[1], width=self.width, height=self.height)


_SPLITS = {"train": "Train", "test": "Test"}


def _natural_key(p: Path) -> tuple[int, int | str]:
    return (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem)


def load_nmnist(root: str | os.PathLike[str], split: str = "train") -> list[tuple[Path, int]]:
    """List the recordings of the official N-MNIST layout: ``root/Train/<digit>/*.bin``, ``root/Test/<digit>/*.bin``.

    Returns:
        ``[(path, label), …]`` sorted by digit, then by numeric file name.

    Raises:
        DataFormatError: when the split folder is missing or holds no ``.bin`` files.
    """
    root = Path(root)
    s = split.lower()
    if s not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = root / _SPLITS[s]
    how = (
        f"place the N-MNIST recordings as {root}/Train/<digit>/<n>.bin and {root}/Test/<digit>/<n>.bin "
        "(the layout of the official Train.zip / Test.zip)"
    )
    if not base.is_dir():
        raise DataFormatError(base, f"missing N-MNIST folder; {how}")
    items: list[tuple[Path, int]] = []
    for d in sorted(base.iterdir()):
        if d.is_dir() and re.fullmatch(r"[0-9]", d.name):
            items.extend((f, int(d.name)) for f in sorted(d.glob("*.bin"), key=_natural_key))
    if not items:
        raise DataFormatError(base, f"no .bin recordings found under <digit>/ subfolders; {how}")
    return items


# --------------------------------------------------------------------------------------------------
# tonic adapter
# --------------------------------------------------------------------------------------------------
def _tonic_to_events(ev: np.ndarray) -> np.ndarray:
    names = ev.dtype.names or ()
    for f in ("x", "y", "p", "t"):
        if f not in names:
            raise ValueError(f"event array needs fields x, y, p, t; got {names}")
    out = np.empty(ev.shape[0], dtype=EVENT_DTYPE)
    out["x"] = ev["x"]
    out["y"] = ev["y"]
    out["p"] = np.asarray(ev["p"]).astype(np.int64) > 0
    out["t"] = ev["t"]
    return out


class TonicRaster:
    """Map-style dataset wrapping a tonic event dataset: item k is ``(raster torch.bool [T, C], label)``.

    Built by :func:`from_tonic`; see there.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        T: int,
        bin_us: float,
        two_channels: bool,
        stabilize_saccades: bool,
        width: int,
        height: int,
        target_transform: Callable[[Any], Any] | None,
    ) -> None:
        self.dataset = dataset
        self.T = T
        self.bin_us = bin_us
        self.two_channels = two_channels
        self.stabilize_saccades = stabilize_saccades
        self.width = width
        self.height = height
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.dataset)

    def raster(self, events: np.ndarray) -> np.ndarray:
        ev = _tonic_to_events(np.asarray(events))
        if self.stabilize_saccades:
            ev = stabilize(ev)
        return events_to_raster(
            ev, self.T, self.bin_us, self.two_channels, width=self.width, height=self.height
        )

    def __getitem__(self, k: int) -> tuple[Any, Any]:
        import torch

        events, label = self.dataset[k]
        r = torch.from_numpy(self.raster(events))
        if self.target_transform is not None:
            label = self.target_transform(label)
        return r, label


def from_tonic(
    dataset: Sequence[Any],
    T: int = 540,
    bin_us: float = 600,
    *,
    two_channels: bool = True,
    stabilize_saccades: bool | None = None,
    sensor_size: tuple[int, ...] | None = None,
    target_transform: Callable[[Any], Any] | None = None,
) -> TonicRaster:
    """Adapt any tonic event dataset (items ``(events, label)``, events with fields x, y, p, t) to our rasters.

    tonic's coordinates are 0-based and its polarity is 0/1, the same convention as
    :func:`read_nmnist_events`, so ``from_tonic(tonic.datasets.NMNIST(...))`` gives exactly the rasters of
    ``events_to_raster(stabilize(read_nmnist_events(path)))``. Pass the dataset *without* a tonic
    ``transform`` (or with one that keeps the raw events), and with tonic's own ``stabilize=False``:
    tonic's N-MNIST stabilisation adds a (+4, +2) pixel offset and rounds halves to even, so it is not the
    reference's ``stabilize.m``; :func:`stabilize` here is.

    Args:
        dataset: a tonic dataset, or any sequence of ``(events, label)``.
        T, bin_us, two_channels: as :func:`events_to_raster`.
        stabilize_saccades: apply :func:`stabilize`; ``None`` = only for a 34 × 34 sensor (N-MNIST).
        sensor_size: ``(width, height[, polarities])``; ``None`` takes ``dataset.sensor_size`` or 34 × 34.
        target_transform: applied to each label.

    Tonic itself is not needed by this function; install it with ``pip install hm2bp[tonic]``.
    """
    if sensor_size is None:
        sensor_size = tuple(getattr(dataset, "sensor_size", (SENSOR, SENSOR, 2)))
    width, height = int(sensor_size[0]), int(sensor_size[1])
    if stabilize_saccades is None:
        stabilize_saccades = (width, height) == (SENSOR, SENSOR)
    return TonicRaster(
        dataset, T, bin_us, two_channels, bool(stabilize_saccades), width, height, target_transform
    )
