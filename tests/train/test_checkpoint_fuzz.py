"""Damaged checkpoints and metrics logs: every damage is reported, none loads as something else.

* checkpoints: flipped bits, truncations and random bytes (numbers of examples in ``@settings``) either
  raise :class:`CheckpointError` naming the file or load with exactly the saved content (a flip in zip
  metadata that torch ignores); the SHA-256 content digest is what catches flips in tensor data;
* temporary files of killed writes are removed by the next save/load, those of live processes are not;
* ``metrics.jsonl``: cut-short, repeated or garbled logs raise ``DataFormatError`` naming file and line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hm2bp.errors import DataFormatError
from hm2bp.io import files as io_files
from hm2bp.nn.network import build_network
from hm2bp.train import checkpoint as ckmod
from hm2bp.train.checkpoint import (
    CheckpointError,
    content_digest,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
    save_run_checkpoints,
)
from hm2bp.train.metrics import MetricsLog, read_metrics

pytestmark = pytest.mark.reliability
FUZZ = dict(deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _checkpoint() -> dict:
    net = build_network("12-8-3", [2.0, 2.0], generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return {"format": ckmod.FORMAT, "version": ckmod.VERSION, "model": net.state_dict(),
            "optimizer": opt.state_dict(), "boost": torch.ones(5, dtype=torch.float64), "order": torch.arange(5),
            "rng": {"shuffle": torch.Generator().manual_seed(3).get_state()}, "epoch": 2, "step": 10,
            "metrics": [{"epoch": 0, "test_acc": 0.5}, {"epoch": 1, "test_acc": 0.75}], "best": 0.75,
            "config": {"name": "x", "model": {"arch": "12-8-3"}}, "arch": "12-8-3"}


CK = _checkpoint()


class Saved(tuple):
    def __repr__(self) -> str:  # keep hypothesis' reports short
        return f"<checkpoint of {len(self[0])} bytes>"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    path = tmp_path_factory.mktemp("ck") / "good.pt"
    save_checkpoint(CK, path)
    return Saved((path.read_bytes(), content_digest(load_checkpoint(path))))


def _refused_or_identical(path: Path, digest: str) -> str:
    try:
        ck = load_checkpoint(path)
    except CheckpointError as e:
        assert str(path) in str(e)
        return "refused"
    assert content_digest(ck) == digest, "a damaged checkpoint loaded with different content"
    return "identical"


@settings(max_examples=300, **FUZZ)
@given(pos=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_flipped_bit(tmp_path: Path, saved: tuple[bytes, str], pos: float, bit: int) -> None:
    data, digest = saved
    b = bytearray(data)
    b[int(pos * len(b))] ^= 1 << bit
    p = tmp_path / "flip.pt"
    p.write_bytes(bytes(b))
    _refused_or_identical(p, digest)


def test_flips_in_tensor_data_are_caught(tmp_path: Path, saved: tuple[bytes, str]) -> None:
    """One flipped bit at ~400 evenly spaced offsets. Plain ``torch.load`` reads many of these files with
    changed tensor values (its zip reader does not check CRCs); ``load_checkpoint`` refuses all of them."""
    data, digest = saved
    outcomes = {"refused": 0, "identical": 0, "plain torch.load: different content": 0}
    for i in range(0, len(data), max(1, len(data) // 400)):
        b = bytearray(data)
        b[i] ^= 0x10
        p = tmp_path / "flip.pt"
        p.write_bytes(bytes(b))
        outcomes[_refused_or_identical(p, digest)] += 1
        try:
            raw = torch.load(p, weights_only=True)
            raw.pop("sha256", None)
            if content_digest(raw) != digest:
                outcomes["plain torch.load: different content"] += 1
        except Exception:
            pass
    print("bit flips at evenly spaced offsets:", outcomes)
    assert outcomes["plain torch.load: different content"] > 0.3 * (outcomes["refused"] + outcomes["identical"])


@settings(max_examples=100, **FUZZ)
@given(frac=st.floats(0, 1, exclude_max=True))
def test_truncated_checkpoint(tmp_path: Path, saved: tuple[bytes, str], frac: float) -> None:
    data, _ = saved
    p = tmp_path / "cut.pt"
    p.write_bytes(data[: int(frac * len(data))])
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p)
    assert str(p) in str(ei.value)


@settings(max_examples=50, **FUZZ)
@given(data=st.binary(max_size=4096))
def test_random_bytes_checkpoint(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "junk.pt"
    p.write_bytes(data)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(p)
    assert str(p) in str(ei.value)


def test_digest_mismatch_and_legacy_checkpoint(tmp_path: Path) -> None:
    forged = dict(CK, sha256=content_digest(CK))
    forged["model"] = {k: v.clone() for k, v in CK["model"].items()}
    next(iter(forged["model"].values())).view(-1)[0] += 1  # content changed after the digest was taken
    torch.save(forged, tmp_path / "forged.pt")
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        load_checkpoint(tmp_path / "forged.pt")
    torch.save(CK, tmp_path / "legacy.pt")  # written before digests existed: loads unchecked
    assert load_checkpoint(tmp_path / "legacy.pt")["epoch"] == 2
    save_checkpoint(CK, tmp_path / "new.pt")
    ck = load_checkpoint(tmp_path / "new.pt")
    assert "sha256" not in ck and content_digest(ck) == content_digest(CK)


def test_last_is_written_before_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real = ckmod.atomic_write_bytes
    monkeypatch.setattr(ckmod, "atomic_write_bytes", lambda p, d: (order.append(Path(p).name), real(p, d)))
    save_run_checkpoints(CK, tmp_path / "last.pt", tmp_path / "best.pt")
    save_run_checkpoints(CK, tmp_path / "last.pt")
    assert order == ["last.pt", "best.pt", "last.pt"]


def test_repair_best_completes_only_a_missing_or_stale_best(tmp_path: Path) -> None:
    """A kill between last.pt and best.pt: last.pt says its step is the best one, best.pt holds another
    step (or is missing): the resumed run copies last.pt; otherwise best.pt is never touched."""
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    ck = {**CK, "step": 30, "best_step": 30}
    save_checkpoint(ck, last)
    assert ckmod.repair_best(load_checkpoint(last), last, best) and best.read_bytes() == last.read_bytes()
    assert not ckmod.repair_best(load_checkpoint(last), last, best)  # already complete
    save_checkpoint({**CK, "step": 20, "best_step": 20}, best)  # the previous best: stale
    assert ckmod.repair_best(load_checkpoint(last), last, best) and load_checkpoint(best)["step"] == 30
    older = {**CK, "step": 20, "best_step": 20}
    save_checkpoint(older, best)
    for not_best in ({**CK, "step": 40, "best_step": 20},  # a later, worse epoch
                     {**CK, "step": 40, "best_step": 40, "progress": {"batch": 3}},  # a mid-epoch state
                     {k: v for k, v in CK.items() if k != "best_step"}):  # an older checkpoint
        save_checkpoint(not_best, last)
        assert not ckmod.repair_best(load_checkpoint(last), last, best)
        assert load_checkpoint(best)["step"] == 20


def test_stale_temp_files_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = io_files._host_tag()
    stale = [tmp_path / f".last.pt.{host}.{dead_pid}.abc123_x.tmp", tmp_path / f".best.pt.{host}.{dead_pid}.q.tmp"]
    live = tmp_path / f".last.pt.{host}.{os.getpid()}.zzz.tmp"  # this process: a write in progress
    other_host = tmp_path / f".last.pt.otherhost.{dead_pid}.zzz.tmp"
    foreign = [tmp_path / ".last.pt.tmp", tmp_path / "notes.tmp", tmp_path / f".x.{host}.{dead_pid}.tmp"]
    for p in stale + [live, other_host] + foreign:
        p.write_bytes(b"partial")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "last.pt")  # a load cleans the folder too
    left = {p.name for p in tmp_path.iterdir()}
    assert not any(p.name in left for p in stale)
    assert {live.name, other_host.name, *(p.name for p in foreign)} <= left
    assert remove_stale_temp_files(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# metrics.jsonl
# --------------------------------------------------------------------------------------------------
RECORDS = [{"epoch": e, "lr": 0.01, "train_loss": 1.0 / (e + 1), "test_acc": 0.1 * e, "wall_time_s": 1.5 * e}
           for e in range(4)]


def _log(tmp_path: Path) -> Path:
    log = MetricsLog(tmp_path)
    for r in RECORDS:
        log.log(r)
    log.close()
    return tmp_path / "metrics.jsonl"


@settings(max_examples=100, **FUZZ)
@given(frac=st.floats(0, 1))
def test_cut_metrics_log(tmp_path: Path, frac: float) -> None:
    path = _log(tmp_path)
    text = path.read_bytes()
    cut = text[: int(frac * len(text))]
    path.write_bytes(cut)
    try:
        got = read_metrics(path)
    except DataFormatError as e:
        assert str(path) in str(e) and not cut.endswith(b"\n")
    else:
        assert got == RECORDS[: cut.count(b"\n")]


def test_damaged_metrics_logs(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    for body, what in [
        (lines[0] + lines[1] + lines[1], "line 3: expected epoch 2, got 1"),  # an epoch logged twice
        (lines[0] + '{"epoch": 1, "lr": \n', "line 2 is not valid JSON"),
        (lines[0] + "[1, 2]\n", "line 2: expected a JSON object"),
        ("\ufeff" + lines[0], "line 1 is not valid JSON"),
    ]:
        path.write_text(body)
        with pytest.raises(DataFormatError, match=what) as ei:
            read_metrics(tmp_path)
        assert str(path) in str(ei.value)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(DataFormatError, match="UTF-8"):
        read_metrics(path)
    with pytest.raises(DataFormatError, match="not found"):
        read_metrics(tmp_path / "none.jsonl")


def test_resume_rewrite_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _log(tmp_path)
    before = path.read_bytes()

    def die(*a: object) -> None:
        raise KeyboardInterrupt  # the process "dies" between writing the temp file and the rename

    monkeypatch.setattr(ckmod.os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        MetricsLog(tmp_path, fresh=False, keep=RECORDS[:2])
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    MetricsLog(tmp_path, fresh=False, keep=RECORDS[:2]).close()
    assert read_metrics(path) == RECORDS[:2]
    assert json.loads(path.read_text().splitlines()[-1]) == RECORDS[1]
