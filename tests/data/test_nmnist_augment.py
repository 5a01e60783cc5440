"""N-MNIST training augmentation (`data.augment` for nmnist): a random whole-pixel shift per sample and
epoch, equal to binning the shifted events, seeded per (seed, epoch, sample), never on validation or test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import shared_paths
from hm2bp.config import load_config
from hm2bp.data.nmnist import EVENT_DTYPE, SENSOR, RandomShift, events_to_raster, shift_raster
from hm2bp.errors import ConfigError
from hm2bp.train.datasets import FileSpikes, load_splits, sample_generator

NMNIST = shared_paths.DATA / "nmnist"
needs_nmnist = pytest.mark.skipif(not NMNIST.is_dir(), reason=f"real N-MNIST data not found at {NMNIST}")


def _random_events(rng: np.random.Generator, n: int = 400) -> np.ndarray:
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"] = rng.integers(0, SENSOR, n)
    ev["y"] = rng.integers(0, SENSOR, n)
    ev["p"] = rng.integers(0, 2, n)
    ev["t"] = rng.integers(0, 30_000, n)
    return ev


@pytest.mark.parametrize("dx, dy", [(0, 0), (2, -1), (-3, 3), (-2, -2), (5, 0), (0, -33), (34, 1), (-40, 0)])
@pytest.mark.parametrize("two_channels", [True, False])
def test_shifting_the_raster_equals_binning_the_shifted_events(dx: int, dy: int, two_channels: bool) -> None:
    ev = _random_events(np.random.default_rng((dx + 50) * 100 + dy + 50))
    moved = ev.copy()
    moved["x"] = ev["x"] + dx
    moved["y"] = ev["y"] + dy  # events_to_raster drops whatever leaves the sensor
    kw = dict(T=60, bin_us=600, two_channels=two_channels)
    want = events_to_raster(moved, **kw)  # type: ignore[arg-type]
    got = shift_raster(events_to_raster(ev, **kw), dx, dy)  # type: ignore[arg-type]
    assert np.array_equal(got, want)
    if (dx, dy) != (0, 0) and abs(dx) < SENSOR and abs(dy) < SENSOR:
        assert not np.array_equal(got, events_to_raster(ev, **kw))  # type: ignore[arg-type]


def test_shift_refuses_a_raster_of_another_layout() -> None:
    with pytest.raises(ValueError, match="not \\[T, C"):
        shift_raster(np.zeros((4, 1000), dtype=bool), 1, 0)


def test_random_shift_stays_in_range_and_uses_every_offset() -> None:
    raster = np.zeros((1, 2 * SENSOR * SENSOR), dtype=bool)
    raster[0, 17 * SENSOR + 17] = True  # one event in the middle of the OFF block
    seen = set()
    for k in range(400):
        out = RandomShift(2)(raster, sample_generator(0, "augment", k))
        (idx,) = np.flatnonzero(out[0])
        seen.add((idx // SENSOR - 17, idx % SENSOR - 17))
    assert seen == {(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)}


def _file_dataset(split: str) -> FileSpikes:
    paths = [Path(f"/nowhere/{i}.bin") for i in range(6)]

    def to_raster(p: Path) -> np.ndarray:
        r = np.zeros((3, 2 * SENSOR * SENSOR), dtype=bool)
        r[:, 10 * SENSOR + int(p.stem) + 5] = True
        return r

    return FileSpikes(paths, list(range(6)), 10, 2 * SENSOR * SENSOR, 3, to_raster, name="fake", split=split,
                      augment=RandomShift(3), seed=7)


def test_training_rasters_move_per_epoch_and_repeat_exactly() -> None:
    ds = _file_dataset("train")
    a, b = ds.get([0, 1, 2], epoch=0), ds.get([0, 1, 2], epoch=1)
    assert torch.equal(a, ds.get([0, 1, 2], epoch=0))  # a pure function of (seed, epoch, sample)
    assert not torch.equal(a, b)
    assert torch.equal(a[:, 1], ds.get([5, 1], epoch=0)[:, 1])  # independent of the rest of the batch
    assert a.sum(dim=(0, 2)).le(3).all()  # a shift moves or drops events, never adds


def test_validation_and_test_rasters_are_never_shifted() -> None:
    train = _file_dataset("train")
    for held_out in (train.subset(np.array([0, 1]), "val"), _file_dataset("test")):
        first = held_out.get([0, 1], epoch=0)
        assert torch.equal(first, held_out.get([0, 1], epoch=3))
        assert torch.equal(first[:, 0], torch.from_numpy(held_out.to_raster(held_out.paths[0])))


def test_augment_is_refused_on_speech_and_the_shift_is_bounded() -> None:
    with pytest.raises(ConfigError, match="data.augment"):
        load_config("fsdd", ["data.augment=true"])
    with pytest.raises(ConfigError, match="data.augment_shift"):
        load_config("nmnist_fc", ["data.augment_shift=34"])


@needs_nmnist
def test_the_nmnist_preset_shifts_training_recordings_only() -> None:
    cfg = load_config("nmnist_fc", [f"data.data_dir={NMNIST}", "data.n_train=20", "data.n_test=2", "data.n_val=4",
                                    "data.augment=true"])
    s = load_splits(cfg)
    assert s.val is not None
    x0, x1 = s.train.get([0, 1], epoch=0), s.train.get([0, 1], epoch=1)
    assert not torch.equal(x0, x1)
    for k in range(2):  # each is a shift of the plain raster
        plain = s.train.to_raster(s.train.paths[k])  # type: ignore[attr-defined]
        assert any(np.array_equal(x0[:, k].numpy(), shift_raster(plain, dx, dy))
                   for dx in range(-2, 3) for dy in range(-2, 3))
    assert torch.equal(s.val.get([0], epoch=0), s.val.get([0], epoch=5))
    assert torch.equal(s.test.get([0], epoch=0), s.test.get([0], epoch=5))
