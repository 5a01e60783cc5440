"""#18 items 1, 2, 4: the N-MNIST training path stabilises; files off the sensor, empty or random are refused;
the authors' converter text has its own reader; a bin width that silences every sample is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shared_paths
from hm2bp.config import load_config
from hm2bp.data.nmnist import (
    dat_sample_to_raster,
    events_to_raster,
    nmnist_raster,
    read_nmnist_dat,
    read_nmnist_events,
    stabilize,
)
from hm2bp.errors import ConfigError, DataFormatError
from hm2bp.train.datasets import load_datasets

NMNIST = shared_paths.DATA / "nmnist"
needs_nmnist = pytest.mark.skipif(not NMNIST.is_dir(), reason=f"real N-MNIST data not found at {NMNIST}")
pytestmark = pytest.mark.reliability


def _encode(x, y, p, t) -> bytes:
    x, y, p, t = (np.asarray(v, dtype=np.int64) for v in (x, y, p, t))
    raw = np.empty((x.size, 5), dtype=np.uint8)
    raw[:, 0], raw[:, 1] = x, y
    raw[:, 2] = (p << 7) | ((t >> 16) & 0x7F)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    return raw.tobytes()


def _fake_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@needs_nmnist
def test_training_raster_is_stabilised() -> None:
    cfg = load_config("nmnist_fc", [f"data.data_dir={NMNIST}", "data.n_train=3", "data.n_test=2"])
    train, test = load_datasets(cfg)
    for ds in (train, test):
        got = ds.get([0, 1]).numpy()
        for k in range(2):
            ev = read_nmnist_events(ds.paths[k])
            want = events_to_raster(stabilize(ev), T=cfg.model.T, bin_us=cfg.data.nmnist_bin_us)
            unstable = events_to_raster(ev, T=cfg.model.T, bin_us=cfg.data.nmnist_bin_us)
            assert np.array_equal(got[:, k], want)
            assert not np.array_equal(want, unstable)  # the test can tell the two apart


@pytest.mark.parametrize("x, y", [(100, 5), (5, 34), (34, 0)])
def test_events_off_the_sensor_are_refused(tmp_path: Path, x: int, y: int) -> None:
    p = tmp_path / "off.bin"
    p.write_bytes(_encode([1, x, 2], [1, y, 2], [0, 1, 1], [10, 20, 30]))
    with pytest.raises(DataFormatError, match=r"off.bin: 1 of 3 events lie off the 34×34 sensor") as e:
        read_nmnist_events(p)
    assert f"x = {x}, y = {y}" in str(e.value)


def test_empty_and_random_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(DataFormatError, match="empty.bin: empty file"):
        read_nmnist_events(empty)
    rnd = tmp_path / "random.bin"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    with pytest.raises(DataFormatError, match="random.bin: .* off the 34×34 sensor"):
        read_nmnist_events(rnd)


def _converter_text(samples: list[dict[int, list[int]]]) -> str:
    blocks = ["\n".join(f"{ch}\t" + "\t".join(map(str, b)) for ch, b in sorted(s.items())) for s in samples]
    return "\n#\n".join(blocks) + "\n"


def test_converter_text_has_its_own_reader(tmp_path: Path) -> None:
    # 405 lines whose size is a multiple of 5: the old reader took them for 5-byte events with x, y up to 57
    rows = {ch: [3 + ch % 7, 40 + ch] for ch in range(1, 406)}
    text = _converter_text([rows])
    text += " " * (-len(text) % 5)
    p = tmp_path / "Train_0.dat"
    p.write_text(text)
    assert p.stat().st_size % 5 == 0
    with pytest.raises(DataFormatError, match="Train_0.dat: is the authors' text converter format"):
        read_nmnist_events(p)
    samples = read_nmnist_dat(p)
    assert len(samples) == 1 and len(samples[0]) == 2312
    assert samples[0][0].tolist() == [4, 41] and samples[0][404].tolist() == [3 + 405 % 7, 445]
    r = nmnist_raster(p, T=100)
    assert r.shape == (100, 2312) and r[5, 0] and r[42, 0] and not r[41, 0]  # time = bin + 1, < T
    assert int(r.sum()) == int(sum(sum(1 for b in v if b + 1 < 100) for v in rows.values()))


def test_converter_text_separators_and_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "Test_3.dat"
    p.write_text(_converter_text([{1: [2]}, {2312: [0, 0, 5]}]))
    s = read_nmnist_dat(p)
    assert len(s) == 2 and s[1][2311].tolist() == [0, 0, 5]
    r = dat_sample_to_raster(s[1], 10)
    assert r[1, 2311] and r[6, 2311] and r.sum() == 2  # duplicate bins collapse
    for body, msg in [("2313\t4\n", "channel 2313 outside"), ("1\tx\n", "line 1: not"), ("1\t-4\n", "negative"),
                      ("#\n", "no spikes")]:
        p.write_text(body)
        with pytest.raises(DataFormatError, match=msg):
            read_nmnist_dat(p)


@needs_nmnist
def test_bin_width_that_silences_everything_is_refused(tmp_path: Path) -> None:
    src = sorted((NMNIST / "Train" / "0").glob("*.bin"))[:2] + sorted((NMNIST / "Test" / "0").glob("*.bin"))[:1]
    root = _fake_tree(tmp_path, {f"{'Train' if i < 2 else 'Test'}/0/{i}.bin": f.read_bytes()
                                 for i, f in enumerate(src)})
    # 0.001 µs bins: every event lands beyond T, each sample warns and the data set is refused
    with pytest.warns(RuntimeWarning, match=r"\.bin: no input spike .*data.nmnist_bin_us"):
        nmnist_raster(root / "Train/0/0.bin", T=540, bin_us=0.001)
    cfg = load_config("nmnist_fc", [f"data.data_dir={root}", "data.nmnist_bin_us=0.001"])
    with pytest.raises(ConfigError, match=r"no input spike.*data.nmnist_bin_us"):
        load_datasets(cfg)
    load_datasets(load_config("nmnist_fc", [f"data.data_dir={root}"]))  # the default bin trains
