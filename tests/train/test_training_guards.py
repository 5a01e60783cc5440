"""Guards that train() itself should apply before it starts (the building blocks are tested in
tests/engine/test_numerics.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hm2bp.config import load_config
from hm2bp.errors import ConfigError

pytestmark = pytest.mark.reliability

TINY = ["model.arch=64-20-10", "model.T=24", "model.thresholds=3,3", "model.desired=8", "model.undesired=2",
        "model.margin=1", "data.n_train=24", "data.n_test=16", "train.plots=false", "train.tensorboard=false",
        "train.threads=1", "train.epochs=1", "train.mode=minibatch", "train.batch_size=8"]


@pytest.mark.requires("sklearn")
def test_train_refuses_a_configuration_that_cannot_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With (pretend) 16 KiB of free memory, train() must refuse up front with the estimate and a remedy,
    instead of starting and failing with an out-of-memory error mid-epoch."""
    from hm2bp.nn import memory
    from hm2bp.train import train

    monkeypatch.setattr(memory, "available_memory_bytes", lambda device="cpu": 1 << 14)
    with pytest.raises(ConfigError, match=r"needs about .* reduce the batch size"):
        train(load_config("digits", TINY + [f"train.out_dir={tmp_path}"]), quiet=True)
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), None])
def test_non_finite_gradient_check(bad: float | None) -> None:
    from hm2bp.train.loop import _grads_finite

    w = torch.nn.Parameter(torch.zeros(40, 30))
    opt = torch.optim.SGD([w, torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    w.grad = torch.full((40, 30), 3e38)  # finite, but its sum overflows to inf: must still pass
    if bad is not None:
        w.grad[17, 4] = bad
    assert _grads_finite(opt) is (bad is None)
