"""The on-disk speech feature cache: hits, keys (content and parameters), corrupt entries recomputed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import shared_paths
from hm2bp.data import feature_cache as fc

DATA = shared_paths.DATA


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> np.ndarray:
        self.calls += 1
        rng = np.random.default_rng(len(path.read_bytes()))
        return rng.random((50, 78)) < 0.1


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.bin"))


def test_hit_and_keys(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF" + b"\0" * 100)
    root, f = tmp_path / "cache", Counting()
    first = fc.cached_raster(audio, {"T": 50}, f, root)
    again = fc.cached_raster(audio, {"T": 50}, f, root)
    assert f.calls == 1 and np.array_equal(first, again) and again.dtype == bool and again.shape == (50, 78)
    fc.cached_raster(audio, {"T": 60}, f, root)  # another parameter: another entry
    assert f.calls == 2
    audio.write_bytes(b"RIFF" + b"\1" * 100)  # another content under the same name: another entry
    fc.cached_raster(audio, {"T": 50}, f, root)
    assert f.calls == 3 and len(_entries(root)) == 3
    assert not list(root.rglob("*.tmp"))  # atomic writes leave no temp files


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "other_key", "empty"])
def test_a_corrupt_entry_is_recomputed_not_trusted(tmp_path: Path, damage: str) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"x" * 10)
    b.write_bytes(b"y" * 20)
    root, f = tmp_path / "cache", Counting()
    want = fc.cached_raster(a, {}, f, root)
    entry = fc._entry_path(root, fc.feature_key(a, {}))
    data = entry.read_bytes()
    if damage == "flip":
        entry.write_bytes(data[:-3] + bytes([data[-3] ^ 0x10]) + data[-2:])
    elif damage == "truncate":
        entry.write_bytes(data[: len(data) - 5])
    elif damage == "garbage":
        entry.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        entry.write_bytes(b"")
    else:  # a valid entry of another file copied over this one
        fc.cached_raster(b, {}, f, root)
        entry.write_bytes(fc._entry_path(root, fc.feature_key(b, {})).read_bytes())
    calls = f.calls
    got = fc.cached_raster(a, {}, f, root)
    assert f.calls == calls + 1 and np.array_equal(got, want)  # recomputed, the right raster
    assert fc._read(entry, fc.feature_key(a, {})) is not None  # and the entry repaired
    fc.cached_raster(a, {}, f, root)
    assert f.calls == calls + 1


def test_cache_off_and_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"z")
    f = Counting()
    monkeypatch.setenv("HM2BP_CACHE", "off")
    assert fc.cache_dir() is None
    fc.cached_raster(audio, {}, f)
    fc.cached_raster(audio, {}, f)
    assert f.calls == 2
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HM2BP_CACHE", str(blocker / "cache"))  # cannot be created: computed, no error
    assert fc.cached_raster(audio, {}, f).shape == (50, 78) and f.calls == 3
    monkeypatch.delenv("HM2BP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fc.cache_dir() == tmp_path / "xdg" / "hm2bp" / "features"


def test_fsdd_features_come_from_the_cache_on_the_second_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lyon")
    if not (DATA / "fsdd" / "recordings").is_dir():
        pytest.skip("no local FSDD copy")
    from hm2bp.config import load_config
    from hm2bp.train import datasets as D

    monkeypatch.setenv("HM2BP_CACHE", str(tmp_path / "cache"))
    cfg = load_config("fsdd", [f"data.data_dir={DATA / 'fsdd'}", "data.n_train=3", "data.n_test=2"])
    first = D.load_datasets(cfg)[1].get([0, 1])
    assert len(_entries(tmp_path / "cache")) == 5  # the 3 + 2 files: the load's no-spike check reads them all
    calls: list[Path] = []
    real = D._cochleagram
    monkeypatch.setattr(D, "_cochleagram", lambda p: calls.append(p) or real(p))
    second = D.load_datasets(cfg)[1].get([0, 1])  # a new run: the in-memory cache is empty
    assert calls == [] and np.array_equal(first.numpy(), second.numpy())
    entry = _entries(tmp_path / "cache")[0]
    entry.write_bytes(entry.read_bytes()[:-1])  # corrupt one entry: that utterance is recomputed
    third = D.load_datasets(cfg)[1].get([0, 1])
    assert len(calls) == 1 and np.array_equal(first.numpy(), third.numpy())
