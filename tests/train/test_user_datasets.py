"""Datasets as torch Datasets, train() on a user's datasets, and a backward pass without labels."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from hm2bp.config import load_config
from hm2bp.errors import ConfigError
from hm2bp.nn.network import build_network
from hm2bp.train import train
from hm2bp.train.datasets import SpikeDataset, collate_time_major, load_datasets, validation_split
from hm2bp.train.user_datasets import MapSpikes, resolve_datasets

TINY = ["model.arch=64-16-10", "model.T=20", "model.thresholds=3,5", "model.desired=6", "model.undesired=1",
        "model.margin=1", "train.mode=minibatch", "train.batch_size=5", "train.epochs=1", "train.tensorboard=false",
        "train.plots=false", "train.threads=1", "data.val_fraction=0"]


def _spike_set(n: int, T: int = 20, n_in: int = 64, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    rate = 0.05 + 0.3 * (torch.arange(n_in)[None, :] % 10 == y[:, None]).float()  # class-dependent rates
    x = torch.rand(n, T, n_in, generator=g) < rate[:, None, :]
    return TensorDataset(x, y)


def test_builtin_dataset_is_a_torch_dataset_for_a_dataloader() -> None:
    pytest.importorskip("sklearn")
    cfg = load_config("digits", ["data.n_train=12", "data.n_test=6", "model.T=30", "model.desired=10",
                                 "data.val_fraction=0"])
    train_set, _ = load_datasets(cfg)
    assert isinstance(train_set, torch.utils.data.Dataset)
    x0, y0 = train_set[0]
    assert x0.shape == (30, 64) and x0.dtype == torch.bool and y0 == int(train_set.labels[0])
    batches = list(DataLoader(train_set, batch_size=5, collate_fn=collate_time_major))
    assert [tuple(b[0].shape) for b in batches] == [(30, 5, 64), (30, 5, 64), (30, 2, 64)]
    assert torch.equal(batches[0][0], train_set.get(torch.arange(5), 0))  # the same rasters as the trainer's
    assert torch.equal(torch.cat([b[1] for b in batches]), train_set.labels)
    with pytest.raises(IndexError):
        train_set[12]


def test_train_accepts_user_datasets(tmp_path: Path) -> None:
    cfg = load_config("digits", [*TINY, f"train.out_dir={tmp_path}"])
    tr, te, va = _spike_set(40), _spike_set(20, seed=1), _spike_set(10, seed=2)
    result = train(cfg, datasets=(tr, te), echo=None)
    assert 0.0 <= result.test_acc <= 1.0 and result.last_eval is not None and result.last_eval.n == 20
    assert result.metrics[0]["step"] == 8
    cfg = load_config("digits", [*TINY, f"train.out_dir={tmp_path / 'with_val'}"])
    result = train(cfg, datasets={"train": tr, "test": te, "val": va}, echo=None)
    assert result.metrics[0].get("val_acc") is not None
    loader_ready = MapSpikes(tr, 10)
    assert isinstance(loader_ready, SpikeDataset) and loader_ready.get([3, 1]).shape == (20, 2, 64)


def test_user_datasets_are_checked(tmp_path: Path) -> None:
    cfg = load_config("digits", [*TINY, f"train.out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="takes 64 inputs but the training set"):
        train(cfg, datasets=(_spike_set(10, n_in=32), _spike_set(10)), echo=None)
    with pytest.raises(ConfigError, match="model.T=20 but the test set .* has T=30"):
        train(cfg, datasets=(_spike_set(10), _spike_set(10, T=30)), echo=None)
    images = TensorDataset(torch.randint(0, 256, (10, 20, 64)), torch.zeros(10, dtype=torch.int64))
    with pytest.raises(ConfigError, match="0/1"):
        train(cfg, datasets=(images, _spike_set(10)), echo=None)


def test_a_validation_split_holds_out_part_of_the_users_training_set(tmp_path: Path) -> None:
    """data.n_val without a validation dataset: the seeded split of the built-in datasets, on the user's."""
    cfg = load_config("digits", [*TINY, "data.n_val=4", f"train.out_dir={tmp_path}"])
    tr, te = _spike_set(20), _spike_set(10, seed=1)
    splits = resolve_datasets(cfg, (tr, te))
    tr_idx, val_idx = validation_split(20, 4, seed=cfg.data.split_seed)
    assert splits.val is not None and len(splits.val) == 4 and len(splits.train) == 16
    spikes, labels = tr.tensors
    assert torch.equal(splits.val.get([0, 1, 2, 3]), spikes[torch.as_tensor(val_idx)].transpose(0, 1).bool())
    assert torch.equal(splits.train.labels, labels[torch.as_tensor(tr_idx)])
    result = train(cfg, datasets=(tr, te), echo=None)
    assert result.selected_on == "val" and result.metrics[0]["step"] == 4  # 16 samples, batch 5


@pytest.mark.parametrize("arch", ["64-10", "64-16-10"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_without_labels_is_a_clear_error(arch: str, dtype: torch.dtype) -> None:
    net = build_network(arch, [3, 5][: arch.count("-")], generator=torch.Generator().manual_seed(0)).to(dtype)
    x = (torch.rand(20, 4, 64, generator=torch.Generator().manual_seed(1)) < 0.2).to(dtype)
    with pytest.raises(ValueError, match="needs the labels .* net\\(x, labels\\)"):
        net(x).sum().backward()
    net(x, torch.tensor([0, 1, 2, 3])).sum().backward()  # with labels: fine
    assert all(p.grad is not None for p in net.parameters())
