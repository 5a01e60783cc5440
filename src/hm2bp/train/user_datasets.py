"""A user's own datasets for :func:`hm2bp.train.train`: any map-style dataset of ``(spikes, label)`` items
becomes a :class:`~hm2bp.train.datasets.SpikeDataset`, checked against the run's network.

Example::

    from torch.utils.data import TensorDataset
    spikes = (torch.rand(100, 50, 64) < 0.1)            # [N, T, inputs] 0/1 spikes
    labels = torch.randint(0, 10, (100,))
    train_set = TensorDataset(spikes, labels)          # items (spikes [T, 64], label)
    cfg = load_config("digits", ["model.T=50", "train.epochs=1"])
    result = train(cfg, datasets=(train_set, test_set))    # or (train, test, validation)

Items may be ``bool`` or 0/1 numbers shaped ``[T, inputs]`` (or ``[T, C, H, W]`` for a conv network); a
dataset with a ``set_epoch(epoch)`` method is told the epoch before each batch, so it can re-encode.
Labels come from a ``targets`` or ``labels`` attribute when there is one (read once otherwise).
Without a validation set, ``data.n_val`` / ``data.val_fraction`` hold out part of the given training set
(the same seeded split as for the built-in datasets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..config import RunConfig
from ..errors import ConfigError
from .datasets import SpikeDataset, Splits, hold_out_validation, load_splits

__all__ = ["MapSpikes", "as_spike_dataset", "check_dataset", "resolve_datasets"]


def _spikes(x: Any, where: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dtype == torch.bool:
        return t
    if not (t.dtype.is_floating_point or not t.is_complex()) or not bool(((t == 0) | (t == 1)).all()):
        raise ConfigError(f"{where}: inputs must be spike trains of 0/1 (or bool) values [T, inputs]; got "
                          f"dtype {t.dtype} with values other than 0 and 1 (encode images first, e.g. "
                          "hm2bp.encoding.poisson_encode)")
    return t.to(torch.bool)


def _labels_of(data: Any, n: int) -> torch.Tensor:
    for attr in ("targets", "labels"):
        v = getattr(data, attr, None)
        if v is not None and len(v) == n:
            return torch.as_tensor(v, dtype=torch.int64).reshape(-1)
    return torch.as_tensor([int(data[i][1]) for i in range(n)], dtype=torch.int64)


class _Part(torch.utils.data.Subset):
    """A ``Subset`` that carries its items' labels and passes ``set_epoch`` on to the whole dataset."""

    def __init__(self, data: Any, indices: Sequence[int], labels: torch.Tensor) -> None:
        super().__init__(data, indices)
        self.labels = labels

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class MapSpikes(SpikeDataset):
    """A map-style dataset of ``(spikes [T, ...], label)`` items as a :class:`SpikeDataset`."""

    def __init__(self, data: Any, n_classes: int, name: str = "user") -> None:
        n = len(data)
        if n == 0:
            raise ConfigError(f"{name} dataset: empty")
        x0 = _spikes(data[0][0], f"{name} dataset, item 0")
        if x0.dim() < 2:
            raise ConfigError(f"{name} dataset, item 0: spikes must be [T, inputs] (time first); got shape "
                              f"{list(x0.shape)}")
        super().__init__(_labels_of(data, n), n_classes, math.prod(x0.shape[1:]), x0.shape[0], name)
        self.data = data
        self.item_shape = tuple(x0.shape)

    def get(self, indices: torch.Tensor | Sequence[int], epoch: int = 0) -> torch.Tensor:
        if hasattr(self.data, "set_epoch"):
            self.data.set_epoch(epoch)
        xs = []
        for i in torch.as_tensor(indices, dtype=torch.int64).tolist():
            x = _spikes(self.data[i][0], f"{self.name} dataset, item {i}")
            if tuple(x.shape) != self.item_shape:
                raise ConfigError(f"{self.name} dataset, item {i}: spikes of shape {list(x.shape)}, item 0 has "
                                  f"{list(self.item_shape)}")
            xs.append(x.reshape(x.shape[0], -1))
        return torch.stack(xs, dim=1) if xs else torch.zeros(self.T, 0, self.n_inputs, dtype=torch.bool)

    def subset(self, indices: Any, split: str) -> MapSpikes:
        idx = [int(i) for i in indices]
        part = _Part(self.data, idx, self.labels[torch.as_tensor(idx, dtype=torch.int64)])
        return MapSpikes(part, self.n_classes, name=f"{self.name} ({split})")


def check_dataset(cfg: RunConfig, ds: SpikeDataset, role: str) -> None:
    """Refuse a dataset that does not fit the network of ``cfg`` (inputs, classes, T), naming the problem."""
    from ..nn.network import parse_architecture

    in_shape, _ = parse_architecture(cfg.model.arch)
    n_in = math.prod(in_shape)
    what = f"the {role} set ({ds.name})"
    if ds.n_inputs != n_in:
        raise ConfigError(f"model.arch {cfg.model.arch!r} takes {n_in} inputs but {what} gives {ds.n_inputs}")
    if ds.n_classes != cfg.model.n_classes:
        raise ConfigError(f"model.arch {cfg.model.arch!r} has {cfg.model.n_classes} outputs but {what} has "
                          f"{ds.n_classes} classes")
    if ds.T != cfg.model.T:
        raise ConfigError(f"model.T={cfg.model.T} but {what} has T={ds.T} time steps; set model.T={ds.T}")
    if len(ds) == 0:
        raise ConfigError(f"{what} is empty")
    bad = (ds.labels < 0) | (ds.labels >= ds.n_classes)
    if bool(bad.any()):
        raise ConfigError(f"{what}: label {int(ds.labels[bad][0])} outside 0…{ds.n_classes - 1}")


def as_spike_dataset(obj: Any, cfg: RunConfig, role: str = "training") -> SpikeDataset:
    """``obj`` as a :class:`SpikeDataset` checked against ``cfg`` (a SpikeDataset is used as it is)."""
    ds = obj if isinstance(obj, SpikeDataset) else MapSpikes(obj, cfg.model.n_classes, name=f"user {role}")
    check_dataset(cfg, ds, role)
    return ds


def resolve_datasets(cfg: RunConfig, datasets: Any = None) -> Splits:
    """The run's :class:`~hm2bp.train.datasets.Splits`: the built-in datasets of ``cfg`` when ``datasets`` is
    None, else the user's, given as ``(train, test)``, ``(train, test, val)`` or a mapping with keys
    train/test[/val] (each a SpikeDataset or a map-style dataset of ``(spikes, label)``)."""
    if datasets is None:
        return load_splits(cfg)
    if isinstance(datasets, Mapping):
        unknown = set(datasets) - {"train", "test", "val"}
        if unknown or not {"train", "test"} <= set(datasets):
            raise ConfigError(f"datasets: expected keys train, test and optionally val; got {sorted(datasets)}")
        parts = [datasets["train"], datasets["test"], datasets.get("val")]
    elif isinstance(datasets, (tuple, list)) and len(datasets) in (2, 3):
        parts = [*datasets, None][:3]
    else:
        raise ConfigError("datasets: give (train, test), (train, test, val) or {'train': ..., 'test': ...}")
    train = as_spike_dataset(parts[0], cfg, "training")
    test = as_spike_dataset(parts[1], cfg, "test")
    val = as_spike_dataset(parts[2], cfg, "validation") if parts[2] is not None else None
    if val is not None:
        return Splits(train, val, test)
    try:  # data.n_val / data.val_fraction hold out part of the user's training set, as for the built-in ones
        return hold_out_validation(train, test, cfg.data)
    except NotImplementedError:
        raise ConfigError(f"data.n_val / data.val_fraction: {train.name} cannot be split; pass the validation "
                          "set as the third dataset, datasets=(train, test, val), or set data.n_val=0 "
                          "data.val_fraction=0") from None
    return Splits(train, val, test)
