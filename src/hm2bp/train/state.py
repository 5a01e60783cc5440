"""The state of a training run and its checkpoint form: everything a resumed run needs to continue as if
it had never stopped, at an epoch boundary or at any step inside an epoch.

Randomness: training draws only from the shuffle generator (saved); initial weights and input rasters
come from generators seeded by (seed, purpose[, sample, epoch]), so they need no saved state.

``TrainState`` holds the completed epochs, the update count, the data order, the boost weights, the shuffle
generator, the per-epoch records, the best selection accuracy and which update's weights are in
``best.pt``. ``EpochProgress`` is the epoch in progress: how many of its batches are done and its running
sums (loss, cost, accuracy, predictions for boosting); a mid-epoch checkpoint stores it under
``"progress"``, so the resumed run skips the batches already done, with the same order, learning rate and
sums, and ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import RunConfig, config_to_dict
from ..errors import ConfigError
from .checkpoint import FORMAT, VERSION, CheckpointError
from .datasets import sample_generator

__all__ = [
    "RESUMABLE_KEYS",
    "EpochProgress",
    "TrainState",
    "check_resumable",
    "fresh_state",
    "init_weights_from",
    "make_checkpoint",
    "restore_state",
]


@dataclass
class EpochProgress:
    """The epoch in progress (``epoch``: 0-based index) after ``batch`` of its batches."""

    epoch: int
    preds: Tensor  # int64 [n_train], −1 for samples not seen yet
    batch: int = 0
    loss_sum: float = 0.0
    cost_sum: float = 0.0
    count_sum: float = 0.0
    seen: int = 0
    correct: int = 0
    skipped: int = 0
    elapsed: float = 0.0  # seconds spent on this epoch before the current session (timing only)

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "preds": self.preds.clone(), "loss_sum": self.loss_sum,
                "cost_sum": self.cost_sum, "count_sum": self.count_sum, "seen": self.seen, "correct": self.correct,
                "skipped": self.skipped, "elapsed": self.elapsed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochProgress:
        return cls(epoch=int(d["epoch"]), preds=d["preds"].clone(), batch=int(d["batch"]),
                   loss_sum=float(d["loss_sum"]), cost_sum=float(d["cost_sum"]), count_sum=float(d["count_sum"]),
                   seen=int(d["seen"]), correct=int(d["correct"]), skipped=int(d["skipped"]),
                   elapsed=float(d["elapsed"]))


@dataclass
class TrainState:
    epoch: int  # completed epochs
    step: int  # updates so far
    order: Tensor
    boost: Tensor
    shuffle_gen: torch.Generator
    metrics: list[dict[str, Any]] = field(default_factory=list)
    best: float = -1.0  # best selection accuracy so far
    best_step: int = -1  # ``step`` of the checkpoint in best.pt
    wall_offset: float = 0.0  # wall time of earlier (interrupted) sessions
    progress: EpochProgress | None = None


def fresh_state(n_train: int, seed: int) -> TrainState:
    return TrainState(epoch=0, step=0, order=torch.arange(n_train), boost=torch.ones(n_train, dtype=torch.float64),
                      shuffle_gen=sample_generator(seed, "shuffle"))


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _rng_states(shuffle_gen: torch.Generator) -> dict[str, Any]:
    # The shuffle generator is the only generator training draws from: weights come from a seeded
    # generator at build time, input rasters from per-(sample, epoch) generators (datasets.sample_generator).
    # torch's global generators are deliberately not saved: one-off per-process code (e.g. a kernel's first
    # use) draws from them, so restoring them would not reproduce an uninterrupted process anyway.
    return {"shuffle": shuffle_gen.get_state()}


def make_checkpoint(cfg: RunConfig, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    st: TrainState) -> dict[str, Any]:
    """The checkpoint dict of ``st`` (mid-epoch when ``st.progress`` is set)."""
    ck = {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(opt.state_dict()),
        "boost": st.boost.clone(),
        "order": st.order.clone(),
        "rng": _rng_states(st.shuffle_gen),
        "epoch": st.epoch,
        "step": st.step,
        "metrics": [dict(m) for m in st.metrics],
        "best": st.best,
        "best_step": st.best_step,
        "config": config_to_dict(cfg),
        "arch": cfg.model.arch,
        "torch_version": str(torch.__version__),
    }
    if st.progress is not None:
        ck["progress"] = st.progress.to_dict()
    return ck


def restore_state(ck: dict[str, Any], path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                  st: TrainState) -> None:
    """Load a checkpoint's weights, optimizer state, data order, boost weights, RNG states and progress."""
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    n_train = st.order.numel()
    st.epoch, st.step = int(ck["epoch"]), int(ck["step"])
    st.order, st.boost = ck["order"].clone(), ck["boost"].clone()
    if st.order.numel() != n_train:
        raise CheckpointError(path, f"holds {st.order.numel()} training samples, the dataset {n_train}")
    rng = ck["rng"]
    st.shuffle_gen.set_state(rng["shuffle"])
    st.metrics, st.best = list(ck["metrics"]), float(ck["best"])
    st.best_step = int(ck.get("best_step", -1))
    st.wall_offset = float(st.metrics[-1]["wall_time_s"]) if st.metrics else 0.0
    prog = ck.get("progress")
    st.progress = None if prog is None else EpochProgress.from_dict(prog)
    if st.progress is not None:
        if st.progress.preds.numel() != n_train or st.progress.epoch != st.epoch:
            raise CheckpointError(path, "its mid-epoch progress does not match its epoch or training set")
        st.wall_offset += st.progress.elapsed


def init_weights_from(model: torch.nn.Module, path: Path, cfg: RunConfig) -> int:
    """Load only the weights of the hm2bp checkpoint ``path`` into ``model`` (``train.init_from``); the
    checkpoint must hold the same architecture as ``cfg``. Returns the checkpoint's completed epochs."""
    from .checkpoint import load_checkpoint
    from .preflight import check_checkpoint_matches

    key = "train.init_from"
    try:
        ck = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"{key}: {e}") from None
    saved = ck["config"].get("model", {}) if isinstance(ck["config"], dict) else {}
    arch = saved.get("arch") if isinstance(saved, dict) else None
    if arch != cfg.model.arch:
        raise ConfigError(f"{key}: {path} holds a network of architecture {arch!r}, this run's model.arch is "
                          f"{cfg.model.arch!r}; weights carry over only between equal architectures")
    try:
        check_checkpoint_matches(ck, cfg, path)  # weight sizes against the arch, before loading them
        model.load_state_dict(ck["model"])
    except (CheckpointError, RuntimeError) as e:
        raise ConfigError(f"{key}: the weights of {path} do not fit {cfg.model.arch!r}: {e}") from None
    return int(ck["epoch"])


# Config keys that may change between an interrupted run and its resumption.
RESUMABLE_KEYS = {"train.epochs", "train.device", "train.threads", "train.eval_batch_size", "train.out_dir",
                  "train.checkpoint_dir", "train.tensorboard", "train.plots", "train.checkpoint_every_steps",
                  "train.checkpoint_every_minutes", "data.data_dir", "data.cache_mb", "name"}


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{key}.{k}" for k in _config_diff(va, vb)]
        elif va != vb:
            out.append(key)
    return out


def check_resumable(ck: dict[str, Any], cfg: RunConfig, path: Path) -> None:
    """Refuse to resume ``ck`` under a config that differs in more than :data:`RESUMABLE_KEYS`."""
    diff = [k for k in _config_diff(ck["config"], config_to_dict(cfg)) if k not in RESUMABLE_KEYS]
    if diff:
        raise ConfigError(f"--resume: the config differs from the checkpoint's in {', '.join(diff)} "
                          f"({path}); only {', '.join(sorted(RESUMABLE_KEYS))} may change")
