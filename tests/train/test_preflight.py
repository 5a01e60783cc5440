"""#18 items 11, 17: runs that cannot start are refused before the data load and the model build."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import hm2bp.train.preflight as pf
from hm2bp.config import load_config
from hm2bp.errors import ConfigError
from hm2bp.nn.network import build_network
from hm2bp.train import loop
from hm2bp.train.loop import train

pytestmark = pytest.mark.reliability
SMALL = ["data.n_train=20", "data.digits_n_test=10", "model.T=20", "model.arch=64-12-10", "model.desired=10",
         "model.undesired=2", "train.batch_size=10", "train.mode=minibatch", "train.plots=false",
         "train.tensorboard=false", "train.threads=1", "train.epochs=1"]


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if a test reaches the data load or the model build."""
    def boom(*a, **k):
        raise AssertionError("reached the data load / model build")
    monkeypatch.setattr(loop, "resolve_datasets", boom)  # the loop's data load
    monkeypatch.setattr(loop, "build_model", boom)


def test_out_is_a_file(tmp_path: Path, no_data: None) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    for out in (f, f / "run"):
        with pytest.raises(ConfigError, match=r"train.out_dir \(--out\): .*afile exists and is not a folder"):
            train(load_config("digits", SMALL + [f"train.out_dir={out}"]), quiet=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_not_writable(tmp_path: Path, no_data: None) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        for out in (ro, ro / "run"):
            with pytest.raises(ConfigError, match="train.out_dir"):
                train(load_config("digits", SMALL + [f"train.out_dir={out}"]), quiet=True)
    finally:
        ro.chmod(0o700)


def test_huge_architecture_refused_before_allocation(tmp_path: Path, no_data: None) -> None:
    # a layer the 32-bit kernels cannot index is refused by the config itself
    with pytest.raises(ConfigError, match=r"model.arch: layer sizes must be <= 2147483647"):
        load_config("digits", SMALL + ["model.arch=64-99999999999-10"])
    # one that fits the kernels but not the memory: refused from the parsed string, before any allocation
    cfg = load_config("digits", SMALL + ["model.arch=64-2000000000-10", f"train.out_dir={tmp_path / 'r'}"])
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"model.arch '64-2000000000-10': 148,000,000,000 weights need about"):
        train(cfg, quiet=True)
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "r").exists()


def test_evaluation_batch_counted(tmp_path: Path, no_data: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf, "available_memory_bytes", lambda device: 16 * 2**30)
    cfg = load_config("digits", SMALL + ["model.T=1000", "train.eval_batch_size=10000", "model.arch=64-800-10",
                                         f"train.out_dir={tmp_path / 'r'}"])
    with pytest.raises(ConfigError, match=r"train.eval_batch_size=10000: .* use at most about \d+"):
        train(cfg, quiet=True)


def test_estimates_from_the_string_match_the_built_network() -> None:
    for arch, th in (("784-800-10", [5, 5]), ("28x28-15c5-p2-40c5-p2-300-10", [5, 2, 12, 4, 10, 10]),
                     ("30x30x2-4c3-p3-16-5", [1, 1, 1, 1])):
        net = build_network(arch, th)
        assert pf.arch_sizes(arch)[0] == sum(p.numel() for p in net.parameters())


def test_a_normal_run_passes(tmp_path: Path) -> None:
    res = train(load_config("digits", SMALL + [f"train.out_dir={tmp_path / 'r'}"]), quiet=True)
    assert (tmp_path / "r" / "config.json").exists() and 0 <= res.test_acc <= 1
