"""Run-folder safety (#18 items 14-16, #17 item 10): no earlier run replaced without --overwrite, one
training per folder (a lock, stale locks taken over), names that stay inside runs/, ordinary file
permissions, epochs counted from 1, "1 epoch"."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hm2bp.cli import main
from hm2bp.config import load_config
from hm2bp.errors import ConfigError
from hm2bp.train import RunFolderError, load_checkpoint, train
from hm2bp.train.checkpoint import save_checkpoint
from hm2bp.train.metrics import read_metrics
from hm2bp.train.rundir import LOCK_NAME, RunLock

pytestmark = pytest.mark.requires("sklearn")  # the runs train on scikit-learn's digits

TINY = ["model.arch=64-12-10", "model.T=16", "model.thresholds=3,3", "model.desired=6", "model.undesired=1",
        "model.margin=1", "data.n_train=24", "data.n_test=12", "train.plots=false", "train.tensorboard=false",
        "train.threads=1", "train.mode=minibatch", "train.batch_size=8"]


def _cfg(out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config("digits", TINY + [f"train.out_dir={out}", *extra])


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_rerun_refuses_without_overwrite_and_keeps_every_file(tmp_path: Path) -> None:
    train(_cfg(tmp_path, "train.epochs=2"), quiet=True)
    before = _snapshot(tmp_path)
    with pytest.raises(RunFolderError, match=r"already holds a run .*--resume.*--overwrite.*--out"):
        train(_cfg(tmp_path, "train.epochs=1"), quiet=True)
    assert _snapshot(tmp_path) == before
    res = train(_cfg(tmp_path, "train.epochs=1"), overwrite=True, quiet=True)  # asked for: replaced
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1] and len(res.metrics) == 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_resume_without_last_pt_does_not_destroy_a_finished_run(tmp_path: Path) -> None:
    """#18 item 14: --resume in a folder whose last.pt is gone must not truncate metrics.jsonl or replace
    best.pt with an epoch-1 model."""
    train(_cfg(tmp_path, "train.epochs=2"), quiet=True)
    (tmp_path / "last.pt").unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(RunFolderError, match=r"--resume: there is no .*last\.pt.*best\.pt, metrics\.jsonl.*--overwrite"):
        train(_cfg(tmp_path, "train.epochs=2"), resume=True, quiet=True)
    assert _snapshot(tmp_path) == before


def test_resume_in_an_empty_or_unstarted_folder_starts_fresh(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")  # a run killed while loading its data left only this
    (tmp_path / "metrics.jsonl").write_text("")
    res = train(_cfg(tmp_path, "train.epochs=1"), resume=True, quiet=True)
    assert len(res.metrics) == 1


def test_resume_and_overwrite_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--resume .* --overwrite"):
        train(_cfg(tmp_path, "train.epochs=1"), resume=True, overwrite=True, quiet=True)


def test_overwrite_removes_a_stale_best_checkpoint_before_training(tmp_path: Path) -> None:
    train(_cfg(tmp_path, "train.epochs=1"), quiet=True)
    old = load_checkpoint(tmp_path / "best.pt")
    old["best"] = 2.0  # an impossible accuracy: must not survive an overwrite
    save_checkpoint(old, tmp_path / "best.pt")
    train(_cfg(tmp_path, "train.epochs=1", "train.seed=3"), overwrite=True, quiet=True)
    assert load_checkpoint(tmp_path / "best.pt")["best"] <= 1.0


def test_a_second_training_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    with RunLock(tmp_path):  # another training holds the folder (flock: per open file, so also in-process)
        with pytest.raises(RunFolderError, match=r"another training is running in this run folder \(pid \d+"):
            train(_cfg(tmp_path, "train.epochs=1"), quiet=True)
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "last.pt").exists()
    train(_cfg(tmp_path, "train.epochs=1"), quiet=True)  # free again
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_left_by_a_killed_training_is_taken_over(tmp_path: Path) -> None:
    code = ("import os, signal, sys; from hm2bp.train.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / LOCK_NAME).exists()  # stale: its process is gone
    res = train(_cfg(tmp_path, "train.epochs=1"), quiet=True)
    assert len(res.metrics) == 1 and not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("name", ["..", ".", " .. ", "a/b", "../up", "x\\y"])
def test_a_name_that_leaves_the_runs_folder_is_refused(tmp_path: Path, name: str) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f'name = {json.dumps(name)}\n[data]\ndataset = "digits"\n[model]\narch = "64-10"\n'
                    f'thresholds = [3.0]\n')
    with pytest.raises(ConfigError, match="name: must be a folder name inside runs/"):
        load_config(str(toml))


def test_run_files_get_ordinary_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        train(_cfg(tmp_path, "train.epochs=1"), quiet=True)
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_metrics_count_epochs_from_1_and_old_logs_still_read(tmp_path: Path) -> None:
    res = train(_cfg(tmp_path, "train.epochs=2"), quiet=True)
    assert [m["epoch"] for m in res.metrics] == [1, 2] == [m["epoch"] for m in read_metrics(tmp_path)]
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (0, 1)))
    assert [m["epoch"] for m in read_metrics(legacy)] == [0, 1]


def test_cli_says_1_epoch_and_refuses_a_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    args = ["train", "digits", "--epochs", "1", "--out", str(run), "--no-plots", *[f"--{o}" for o in TINY]]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert ", 1 epoch ->" in out and "1 epochs" not in out
    assert main(args) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
