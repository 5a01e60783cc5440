"""Classification accuracy of a network on a dataset, of a checkpoint, and of a data-parallel shard.

Prediction = arg-max of the output counts; ties go to the lowest index and all-zero counts predict
class 0 (docs/algorithm.md §1.3). Every pass over more than a few samples reports its progress
(:mod:`hm2bp.progress`) when asked to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import RunConfig, config_from_dict
from ..errors import ConfigError
from ..inference import EvalResult
from ..nn.network import SpikingNetwork
from ..progress import progress
from . import distributed as D
from .checkpoint import CheckpointError, load_checkpoint
from .datasets import SpikeDataset, load_datasets
from .preflight import check_checkpoint_matches
from .runtime import build_model, num_threads, resolve_device

__all__ = [
    "EvalInterrupted",
    "EvalResult",
    "evaluate",
    "evaluate_all",
    "evaluate_checkpoint",
    "model_from_checkpoint",
]


class EvalInterrupted(Exception):
    """An evaluation stopped early because ``should_stop()`` became true (e.g. after Ctrl-C)."""


@torch.no_grad()
def evaluate(
    model: SpikingNetwork,
    dataset: SpikeDataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    n: int | None = None,
    epoch: int = 0,
    show_progress: bool = False,
    desc: str = "evaluation",
) -> EvalResult:
    """Classify (the first ``n`` samples of) ``dataset``; ``show_progress``: a bar or log lines named ``desc``."""
    total = len(dataset) if n is None else min(n, len(dataset))
    counts = _eval_counts(model, dataset, 0, total, batch_size, torch.device(device), epoch,
                          show_progress=show_progress, desc=desc)
    return _eval_result(counts, dataset.labels[:total])


def _eval_counts(model: SpikingNetwork, dataset: SpikeDataset, start: int, stop: int, batch_size: int,
                 device: torch.device, epoch: int, *, show_progress: bool = False, desc: str = "evaluation",
                 should_stop: Callable[[], bool] | None = None) -> Tensor:
    """Output counts ``[stop − start, C]`` of samples ``start … stop − 1`` (CPU, float32)."""
    was_training = model.training
    model.eval()
    counts_all = []
    try:
        with torch.no_grad(), progress(stop - start, desc, enabled=show_progress) as bar:
            for i in range(start, stop, batch_size):
                if should_stop is not None and should_stop():
                    raise EvalInterrupted(desc)
                idx = torch.arange(i, min(i + batch_size, stop))
                x = dataset.get(idx, epoch).to(device)  # bool: each layer converts what it needs
                counts_all.append(model(x).sum(0).cpu())
                bar.update(int(idx.numel()))
    finally:
        model.train(was_training)
    return torch.cat(counts_all) if counts_all else torch.zeros(0, dataset.n_classes)


def _eval_result(counts: Tensor, labels: Tensor) -> EvalResult:
    return EvalResult(counts, labels)


def evaluate_all(model: SpikingNetwork, dataset: SpikeDataset, ctx: D.DistContext | None, *, batch_size: int,
                 device: torch.device, epoch: int, show_progress: bool = False, desc: str = "evaluation",
                 should_stop: Callable[[], bool] | None = None) -> EvalResult:
    """:func:`evaluate` of the whole ``dataset``; in a data-parallel run (``ctx``) every process counts one
    contiguous range and the counts are summed. ``should_stop`` (single process only) is polled before
    every batch and raises :class:`EvalInterrupted` when true."""
    total = len(dataset)
    if ctx is None:
        counts = _eval_counts(model, dataset, 0, total, batch_size, device, epoch, show_progress=show_progress,
                              desc=desc, should_stop=should_stop)
        return _eval_result(counts, dataset.labels[:total])
    start, stop = D.shard_range(total, ctx)
    full = torch.zeros(total, dataset.n_classes, dtype=torch.float32)
    full[start:stop] = _eval_counts(model, dataset, start, stop, batch_size, device, epoch,
                                    show_progress=show_progress, desc=desc)
    return _eval_result(D.all_reduce_tensor(full, ctx), dataset.labels[:total])


def model_from_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[SpikingNetwork, RunConfig, dict[str, Any]]:
    """Rebuild the network of a checkpoint (safe load) and return ``(model, config, checkpoint)``."""
    ck = load_checkpoint(path)
    try:
        cfg = config_from_dict(ck["config"])
    except ConfigError as e:  # a crafted or damaged file: name it, not only the key
        raise CheckpointError(path, f"its config is not valid: {e}") from None
    check_checkpoint_matches(ck, cfg, path)  # config vs weights, before building anything
    model = build_model(cfg)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise CheckpointError(path, f"weights do not fit the architecture {cfg.model.arch!r}: {e}") from None
    return model.to(device), cfg, ck


def evaluate_checkpoint(
    path: str | Path,
    *,
    data_dir: str | None = None,
    n: int | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    overrides: Sequence[str] = (),
    show_progress: bool = True,
) -> tuple[EvalResult, RunConfig, dict[str, Any]]:
    """Evaluate a checkpoint on the test set of its own config (``data_dir`` if the data moved; dotted
    ``overrides`` such as ``data.n_test=0`` change the data, not the network).

    Returns ``(result, config, checkpoint)``.
    """
    from ..config import apply_overrides

    dev = resolve_device(device)
    model, cfg, ck = model_from_checkpoint(path, dev)
    cfg = apply_overrides(cfg, ([f"data.data_dir={data_dir}"] if data_dir else []) + list(overrides))
    with num_threads(cfg.train.threads):
        _, test_set = load_datasets(cfg)
        res = evaluate(model, test_set, batch_size=batch_size or cfg.train.eval_batch_size, device=dev, n=n,
                       show_progress=show_progress, desc=f"evaluating {Path(path).name}")
    return res, cfg, ck
