"""Checkpoints: atomic writes, safe loading (a code-running pickle is refused)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from hm2bp.train import checkpoint as ckmod
from hm2bp.train.checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.reliability


def _valid() -> dict:
    return {"format": ckmod.FORMAT, "version": ckmod.VERSION, "model": {"w": torch.arange(4.0)},
            "config": "{}", "epoch": 1, "rng": {"g": torch.Generator().get_state()}, "metrics": "[]"}


def test_round_trip(tmp_path: Path) -> None:
    save_checkpoint(_valid(), tmp_path / "a.pt")
    ck = load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(ck["model"]["w"], torch.arange(4.0)) and ck["epoch"] == 1
    assert ck["config"] == {} and ck["metrics"] == []
    assert ck["rng"]["g"].dtype == torch.uint8


class _RunsCode:
    """Unpickling this calls os.system: exactly what a malicious checkpoint would do."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {_RunsCode.marker}",))

    marker = ""


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _RunsCode.marker = str(marker)
    evil = _valid()
    evil["payload"] = _RunsCode()
    path = tmp_path / "evil.pt"
    torch.save(evil, path)  # a real torch checkpoint carrying a code-running object
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    # a plain pickle file (not a torch zip) is refused as well, without running anything
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_garbage_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an hm2bp checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_interrupted_save_leaves_old_file_and_no_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(_valid(), path)
    before = path.read_bytes()

    real_fsync = os.fsync

    def boom(fd: int) -> None:  # the write reached the temp file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(ckmod.os, "fsync", boom)
    newer = _valid()
    newer["epoch"] = 2
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(newer, path)
    monkeypatch.setattr(ckmod.os, "fsync", real_fsync)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def test_failed_replace_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckmod.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert list(tmp_path.iterdir()) == []
