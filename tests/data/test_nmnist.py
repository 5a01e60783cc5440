"""N-MNIST reader, stabilisation, binning and the tonic adapter."""

from __future__ import annotations

import numpy as np
import pytest

import shared_paths
from hm2bp.data.nmnist import (
    EVENT_DTYPE,
    events_to_raster,
    from_tonic,
    load_nmnist,
    read_nmnist_events,
    stabilize,
)
from hm2bp.errors import DataFormatError

DATA = shared_paths.DATA
NMNIST = DATA / "nmnist"
FIXTURE = NMNIST / "tonic_fixture" / "sample_nmnist.bin"

needs_nmnist = pytest.mark.skipif(not NMNIST.is_dir(), reason=f"real N-MNIST data not found at {NMNIST}")


def _encode(x, y, p, t) -> bytes:
    """Write events in the official 5-byte format."""
    x, y, p, t = (np.asarray(v, dtype=np.int64) for v in (x, y, p, t))
    raw = np.empty((x.size, 5), dtype=np.uint8)
    raw[:, 0] = x
    raw[:, 1] = y
    raw[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    return raw.tobytes()


def _events(x, y, p, t) -> np.ndarray:
    ev = np.empty(len(x), dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"], ev["t"] = x, y, p, t
    return ev


# --------------------------------------------------------------------------------------------------
# Reader on synthetic files
# --------------------------------------------------------------------------------------------------
def test_read_bit_layout(tmp_path):
    t = [0, 1, 65535, 65536, (1 << 23) - 1]
    path = tmp_path / "a.bin"
    path.write_bytes(_encode([0, 33, 5, 7, 12], [33, 0, 6, 8, 13], [1, 0, 1, 0, 1], t))
    ev = read_nmnist_events(path)
    assert ev.dtype == EVENT_DTYPE
    assert ev["x"].tolist() == [0, 33, 5, 7, 12]
    assert ev["y"].tolist() == [33, 0, 6, 8, 13]
    assert ev["p"].tolist() == [1, 0, 1, 0, 1]
    assert ev["t"].tolist() == t


def test_read_overflow_marker(tmp_path):
    path = tmp_path / "o.bin"
    path.write_bytes(_encode([1, 0, 2], [1, 240, 2], [0, 0, 1], [100, 0, 50]))
    ev = read_nmnist_events(path)
    assert ev["x"].tolist() == [1, 2]
    assert ev["t"].tolist() == [100, 50 + 8192]


def test_read_empty_file(tmp_path):
    path = tmp_path / "e.bin"
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty file"):  # a 0-byte recording trains on nothing (#18 item 2)
        read_nmnist_events(path)


@pytest.mark.reliability
def test_size_not_multiple_of_5(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(_encode([1, 2], [3, 4], [0, 1], [5, 6])[:-2])
    with pytest.raises(DataFormatError, match="multiple of 5") as ei:
        read_nmnist_events(path)
    assert ei.value.path == str(path) and str(path) in str(ei.value)


@pytest.mark.reliability
def test_missing_file_and_dataset(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        read_nmnist_events(tmp_path / "none.bin")
    with pytest.raises(DataFormatError) as ei:
        load_nmnist(tmp_path, "train")
    msg = str(ei.value)
    assert str(tmp_path / "Train") in msg and "Train/<digit>/<n>.bin" in msg
    (tmp_path / "Test" / "3").mkdir(parents=True)
    with pytest.raises(DataFormatError, match=r"no .bin"):
        load_nmnist(tmp_path, "test")


# --------------------------------------------------------------------------------------------------
# stabilize (docs/algorithm.md §1.5 step 2, 1-based X = x + 1)
# --------------------------------------------------------------------------------------------------
def test_stabilize_saccade_formulas():
    # X, Y 1-based = x+1, y+1 = 21, 21 everywhere; expected 1-based results computed by hand.
    t = [0, 52_500, 105_000, 157_500, 210_000, 262_500, 315_000, 400_000]
    ev = _events([20] * 8, [20] * 8, [0, 1, 0, 1, 0, 1, 0, 1], t)
    out = stabilize(ev)
    # t=0: (21, 21); t=52.5ms: X=21-1.75=19.25→19, Y=21-3.5=17.5→18 (half away from zero)
    # t=105ms: (17.5→18, 14); t=157.5ms: X=21-3.5-1.75=15.75→16, Y=21-7+3.5=17.5→18
    # t=210ms: X=21-7=14, Y=21; t=262.5ms: X=21-7+3.5=17.5→18; t=315ms: X=21; t=400ms: X=21+5.667=26.67→27
    assert (out["x"] + 1).tolist() == [21, 19, 18, 16, 14, 18, 21, 27]
    assert (out["y"] + 1).tolist() == [21, 18, 14, 18, 21, 21, 21, 21]
    assert out["p"].tolist() == ev["p"].tolist() and out["t"].tolist() == t


def test_stabilize_drops_below_one():
    # X = 1 at t = 105 ms → 1 − 3.5 = −2.5 → dropped; Y = 7 at 105 ms → 0 → dropped; X = 5 → 1.5 → 2 kept.
    ev = _events([0, 10, 4], [20, 6, 20], [0, 0, 0], [105_000, 105_000, 105_000])
    out = stabilize(ev)
    assert out.size == 1 and int(out["x"][0]) == 1 and int(out["y"][0]) == 13


# --------------------------------------------------------------------------------------------------
# events_to_raster (docs/algorithm.md §1.5 steps 3–7)
# --------------------------------------------------------------------------------------------------
def test_raster_channels_times_and_collapse():
    ev = _events(
        x=[0, 0, 33, 2, 2, 2, 34, 5, 5],
        y=[0, 0, 33, 3, 3, 3, 1, 35, 4],
        p=[0, 1, 1, 0, 0, 0, 0, 0, 0],
        t=[0, 600, 601, 1199, 1200, 1000, 10, 10, 600 * 538],
    )
    r = events_to_raster(ev, T=540, bin_us=600, two_channels=True)
    assert r.shape == (540, 2312) and r.dtype == bool
    expected = {
        (1, 0),  # t=0: bin 0 → time 1; channel (1-1)*34+1 = 1 → index 0
        (2, 1156 + 0),  # ON event, bin 1 → time 2
        (3, 1156 + 33 * 34 + 33),  # x=y=33: index 1155, ON → 2311; ceil(601/600) = 2 → time 3
        (3, 2 * 34 + 3),  # t=1199 and t=1200 both bin 2 → collapse; t=1000 bin 2 too
    }
    # x=34 / y=35 are off-sensor (1-based 35, 36 > 34): dropped; t=600*538 → bin 538 → time 539 kept
    expected.add((539, 5 * 34 + 4))
    got = {(int(a), int(b)) for a, b in zip(*np.nonzero(r))}
    assert got == expected
    r1 = events_to_raster(ev, T=540, bin_us=600, two_channels=False)
    assert r1.shape == (540, 1156)
    got1 = {(int(a), int(b)) for a, b in zip(*np.nonzero(r1))}
    assert got1 == {(a, b % 1156) for a, b in expected}
    # time = bin + 1 >= T is dropped
    assert not events_to_raster(_events([0], [0], [0], [600 * 539]), T=540).any()
    assert events_to_raster(_events([0], [0], [0], [600 * 538]), T=540)[539, 0]
    assert not events_to_raster(np.empty(0, EVENT_DTYPE), T=10).any()


# --------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------
@needs_nmnist
def test_nmnist_real_counts():
    """The README's verification numbers (subset of 1,000 train + 100 test)."""
    for split, n, per_class, ev_min, ev_med, ev_max, pol in [
        ("train", 1000, [97, 116, 99, 93, 105, 92, 94, 117, 87, 100], 1112, 4180, 7152, (2_059_426, 2_073_805)),
        ("test", 100, [8, 14, 8, 11, 14, 7, 10, 15, 2, 11], 1069, 3913, 6326, None),
    ]:
        items = load_nmnist(NMNIST, split)
        assert len(items) == n
        labels = np.array([lab for _, lab in items])
        assert np.bincount(labels, minlength=10).tolist() == per_class
        assert all(p.parent.name == str(lab) for p, lab in items)
        counts, on, off, xmax, ymax, last = [], 0, 0, 0, 0, []
        for path, _ in items:
            ev = read_nmnist_events(path)
            counts.append(ev.size)
            on += int(ev["p"].sum())
            off += int(ev.size - ev["p"].sum())
            xmax, ymax = max(xmax, int(ev["x"].max())), max(ymax, int(ev["y"].max()))
            assert (np.diff(ev["t"]) >= 0).all()
            last.append(int(ev["t"][-1]))
        assert (min(counts), int(np.median(counts)), max(counts)) == (ev_min, ev_med, ev_max)
        assert xmax == 33 and ymax == 33
        span_ms = (round(min(last) / 1e3, 1), round(max(last) / 1e3, 1))
        if pol is not None:
            assert (on, off) == pol
            assert span_ms == (296.8, 315.1)
        else:
            assert span_ms == (301.8, 336.0)


@needs_nmnist
def test_nmnist_fixture_and_raster():
    ev = read_nmnist_events(FIXTURE)
    assert ev.size == 4325
    assert int((ev["p"] == 0).sum()) == 2180 and int((ev["p"] == 1).sum()) == 2145
    assert int(ev["t"][0]) == 654 and int(ev["t"][-1]) == 311_175
    r = events_to_raster(stabilize(ev), T=540, bin_us=600)
    assert r.shape == (540, 2312)
    assert not r[0].any()  # the +1 shift: nothing at t = 0
    assert 0 < r.sum() <= ev.size


@needs_nmnist
def test_from_tonic_matches_our_pipeline():
    tonic = pytest.importorskip("tonic", reason="tonic not installed (pip install hm2bp[tonic])")
    from tonic.io import read_mnist_file

    paths = [FIXTURE] + [p for p, _ in load_nmnist(NMNIST, "test")[:5]]
    samples = [(read_mnist_file(str(p), dtype=tonic.datasets.NMNIST.dtype), k) for k, p in enumerate(paths)]
    for (events, _), p in zip(samples, paths):  # tonic's parser and ours agree field by field
        ours = read_nmnist_events(p)
        for f in "xypt":
            np.testing.assert_array_equal(events[f], ours[f])
    ds = from_tonic(samples, T=540, bin_us=600)
    assert len(ds) == len(paths)
    for k, p in enumerate(paths):
        raster, label = ds[k]
        assert label == k and raster.dtype.is_floating_point is False and tuple(raster.shape) == (540, 2312)
        expected = events_to_raster(stabilize(read_nmnist_events(p)), T=540, bin_us=600)
        np.testing.assert_array_equal(raster.numpy(), expected)
