"""Data-parallel training: ``torchrun --nproc-per-node 2 -m hm2bp train`` (gloo, CPU) equals one process.

The mini-batch of 8 is split 4 + 4 (the last batch of the epoch, 5 samples, 3 + 2); the gradients are
summed across the two processes after each local backward of Σ_shard L_n / B. With the same data order,
boost weights and optimizer, the weights after two epochs must equal the single-process run's up to float
rounding, and rank 0 alone must have written the run folder.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hm2bp.config import load_config
from hm2bp.errors import ConfigError
from hm2bp.train import load_checkpoint, train
from hm2bp.train.checkpoint import content_digest
from hm2bp.train.distributed import DistContext, shard, shard_range

pytestmark = pytest.mark.distributed

# 21 samples in batches of 8: 8, 8, 5 (uneven shards in the last one); regulariser, boosting and Adam on.
TINY = ["model.arch=64-30-10", "model.T=30", "model.thresholds=1,2", "model.desired=8", "model.undesired=2",
        "model.margin=1", "model.lateral_inhibition=0.3", "data.n_train=21", "data.n_test=15", "train.mode=minibatch", "train.batch_size=8",
        "train.epochs=2", "train.optimizer=adam", "train.lr=0.01", "train.reg_lambda=10", "train.reg_beta=0.04",
        "train.boosting=true", "train.shuffle=permutation", "train.plots=false", "train.tensorboard=false",
        "train.threads=1"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(args: list[str], cwd: Path, timeout: float = 300, script: Path | None = None,
              env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    target = [str(script)] if script is not None else ["-m", "hm2bp"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *target, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.requires("sklearn")
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    dist_dir, single_dir = tmp_path / "dist", tmp_path / "single"
    proc = _torchrun(["train", "digits", "--out", str(dist_dir), *[f"--{o}" for o in TINY]], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # rank 0 alone printed (one header, one line per epoch, one result line)
    lines = proc.stdout.splitlines()
    assert sum(x.startswith("test accuracy: ") for x in lines) == 1, proc.stdout
    assert sum(x.startswith("run digits: ") for x in lines) == 1, proc.stdout
    assert sum(x.startswith("epoch ") for x in lines) == 2, proc.stdout

    single = train(load_config("digits", TINY + [f"train.out_dir={single_dir}"]), quiet=True)

    a, b = load_checkpoint(dist_dir / "last.pt"), load_checkpoint(single_dir / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 6
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-6, atol=1e-6, msg=k)
    assert torch.equal(a["order"], b["order"])
    torch.testing.assert_close(a["boost"], b["boost"], rtol=1e-12, atol=0)  # same predictions → same boosting
    for ma, mb in zip(a["metrics"], b["metrics"]):
        for key in ("train_acc", "test_acc", "best_test_acc", "step", "skipped_steps"):
            assert ma[key] == mb[key], key
        assert ma["train_loss"] == pytest.approx(mb["train_loss"], rel=1e-6)
        assert ma["train_cost_as_logged"] == pytest.approx(mb["train_cost_as_logged"], rel=1e-6)
        assert ma["mean_output_count"] == pytest.approx(mb["mean_output_count"], rel=1e-9)
    assert a["metrics"][-1]["test_acc"] == single.test_acc

    # one writer: one config, one metrics log with one line per epoch, one last.pt/best.pt, no temporaries
    names = sorted(p.name for p in dist_dir.iterdir())
    assert names == ["best.pt", "config.json", "last.pt", "metrics.jsonl"], names
    lines = (dist_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


# Rank 1 alone sends itself SIGINT during its N-th update: both processes must stop after the same update,
# rank 0 saving every process's running sums.
SIGNAL_ONE_RANK = r"""
import os, signal, sys
import hm2bp.train.loop as L
orig, calls = L.Trainer.train_step, [0]
def step(self, *a, **k):
    calls[0] += 1
    if calls[0] == int(os.environ["HM2BP_TEST_STEP"]) and os.environ.get("RANK") == "1":
        os.kill(os.getpid(), signal.SIGINT)
    return orig(self, *a, **k)
L.Trainer.train_step = step
from hm2bp.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.requires("sklearn")
def test_a_signal_on_one_rank_stops_all_at_one_update_and_resumes_exactly(tmp_path: Path) -> None:
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    args = ["train", "digits", *[f"--{o}" for o in TINY]]
    proc = _torchrun(args + ["--out", str(ref_dir)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hook = tmp_path / "hook.py"
    hook.write_text(SIGNAL_ONE_RANK)
    proc = _torchrun(args + ["--out", str(run_dir)], cwd=tmp_path, script=hook, env_extra={"HM2BP_TEST_STEP": "4"})
    assert proc.returncode != 0
    assert "last.pt holds epoch 2 after update 1 of 3 (step 4); continue with --resume" in proc.stderr, \
        proc.stderr[-3000:]
    ck = load_checkpoint(run_dir / "last.pt")
    assert (ck["epoch"], ck["step"], ck["progress"]["batch"]) == (1, 4, 1)
    assert ck["progress"]["rank_sums"].shape == (2, 6) and int(ck["progress"]["rank_sums"][:, 3].sum()) == 8
    proc = _torchrun(args + ["--out", str(run_dir), "--resume"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = load_checkpoint(ref_dir / "last.pt"), load_checkpoint(run_dir / "last.pt")
    for key in ("model", "optimizer", "boost", "order", "rng"):  # bit-identical to the uninterrupted run
        assert content_digest({key: a[key]}) == content_digest({key: b[key]}), key
    assert (a["step"], a["best"], a["best_step"]) == (b["step"], b["best"], b["best_step"])
    strip = [{k: v for k, v in m.items() if not k.endswith("time_s")} for m in a["metrics"]]
    assert strip == [{k: v for k, v in m.items() if not k.endswith("time_s")} for m in b["metrics"]]


@pytest.mark.requires("sklearn")
def test_online_mode_is_refused_with_several_processes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config("digits", TINY + ["train.mode=online", "train.batch_size=1", f"train.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="online"):
        train(cfg, quiet=True)
    cfg = load_config("digits", TINY + ["train.batch_size=1", f"train.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="batch_size=1"):
        train(cfg, quiet=True)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_shards_partition_the_batch() -> None:
    idx = torch.tensor([5, 3, 9, 0, 7])
    for world in (1, 2, 3, 5, 7):
        ctxs = [DistContext(r, world, r, "gloo", torch.device("cpu")) for r in range(world)]
        assert torch.equal(torch.cat([shard(idx, c) for c in ctxs]), idx)
        ranges = [shard_range(10, c) for c in ctxs]
        assert ranges[0][0] == 0 and ranges[-1][1] == 10
        assert all(r[1] == s[0] for r, s in itertools.pairwise(ranges))
        assert max(r[1] - r[0] for r in ranges) - min(r[1] - r[0] for r in ranges) <= 1
