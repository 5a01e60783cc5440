"""Checks run before any data is loaded or weight allocated: a run that cannot start is refused in
milliseconds, naming the key, instead of failing after the data load, the model build or an epoch.

- the run and checkpoint folders must be usable (``--out`` is a file, read-only, …);
- the weights with their gradients and Adam moments, estimated from the *parsed* architecture, must fit
  (``--model.arch=64-99999999999-10`` would otherwise reach the allocator);
- an evaluation batch must fit (it runs only after the first training epoch otherwise).

The precise training-step estimate (:func:`hm2bp.nn.memory.check_training_fits`) still runs after the
model is built; these are lower bounds, so they never refuse a run that would fit.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ..arch import parse as parse_architecture
from ..errors import ConfigError
from ..nn.memory import available_memory_bytes

__all__ = ["ThreadsChangedWarning", "arch_sizes", "check_checkpoint_matches", "check_run_folder", "eval_bytes_lower_bound", "preflight", "warn_if_threads_changed", "weight_bytes"]

_GIB = 1024**3


def check_run_folder(folder: Path, key: str) -> None:
    """Refuse a run folder that is a file, lies under a file, or cannot be written; creates nothing."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{key}: {folder} cannot be a run folder: {probe} exists and is not a folder")
    if probe == folder:
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise ConfigError(f"{key}: cannot write in {folder}: {e.strerror or e}") from None
    elif not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot create {folder}: {probe} is not writable")


def arch_sizes(arch: str) -> tuple[int, list[tuple[int, int]]]:
    """(parameters, [(inputs, outputs) per spiking layer]) of an architecture string, without building it
    (the output's fixed lateral weights are a buffer, not trained)."""
    a = parse_architecture(arch)
    return a.n_parameters(), [(math.prod(i), math.prod(o)) for i, o in zip(a.input_shapes, a.shapes)]


def weight_bytes(arch: str) -> int:
    """Weights, gradients and two Adam moments, float32."""
    return arch_sizes(arch)[0] * 4 * 4


def eval_bytes_lower_bound(arch: str, T: int, batch: int) -> int:
    """At least the float input and the widest layer's output of one evaluation batch."""
    _, sizes = arch_sizes(arch)
    return T * batch * 4 * (sizes[0][0] + max(n_out for _, n_out in sizes))


def preflight(cfg: Any, device: torch.device, available: int | None = None, headroom: float = 0.8) -> None:
    """All checks of this module for a run config; raise :class:`ConfigError` naming the key."""
    check_run_folder(cfg.out_dir, "train.out_dir (--out)")
    if cfg.checkpoint_dir != cfg.out_dir:
        check_run_folder(cfg.checkpoint_dir, "train.checkpoint_dir")
    init = cfg.train.init_from
    if init and not Path(init).is_file():
        raise ConfigError(f"train.init_from: no checkpoint file at {init}")
    if init and Path(init).resolve().parent == Path(cfg.checkpoint_dir).resolve():
        # this run replaces (or with --overwrite first deletes) the checkpoints of its own folder
        raise ConfigError(f"train.init_from: {init} lies in this run's own checkpoint folder, whose last.pt and "
                          f"best.pt the run replaces; start the new run in another folder (--out)")
    free = available if available is not None else available_memory_bytes(device)
    if free is None:
        return
    m, t = cfg.model, cfg.train
    weights = weight_bytes(m.arch)
    if weights > headroom * free:
        raise ConfigError(
            f"model.arch {m.arch!r}: {arch_sizes(m.arch)[0]:,} weights need about {weights / _GIB:,.1f} GiB with "
            f"their gradients and Adam moments, but only {free / _GIB:.1f} GiB is available on {device}"
        )
    ev = eval_bytes_lower_bound(m.arch, m.T, t.eval_batch_size) + weights // 4
    if ev > headroom * free:
        per = max(1, eval_bytes_lower_bound(m.arch, m.T, 1))
        fits = max(1, int((headroom * free - weights // 4) // per))
        raise ConfigError(
            f"train.eval_batch_size={t.eval_batch_size}: an evaluation batch at T={m.T} needs at least "
            f"{ev / _GIB:,.1f} GiB but only {free / _GIB:.1f} GiB is available on {device}; use at most "
            f"about {fits}"
        )


def check_checkpoint_matches(ck: dict[str, Any], cfg: Any, path: Any) -> None:
    """Refuse a checkpoint whose weights do not have the sizes its own config's architecture gives, before
    the network of that config is built (a crafted config could otherwise ask for terabytes)."""
    from .checkpoint import CheckpointError

    state = ck.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(path, "holds no model weights")
    held = sum(int(v.numel()) for k, v in state.items() if k.endswith(".weight") and hasattr(v, "numel"))
    want = arch_sizes(cfg.model.arch)[0]
    if held != want:
        raise CheckpointError(path, f"its config's architecture {cfg.model.arch!r} has {want:,} weights, the "
                                    f"checkpoint holds {held:,}: config and weights disagree")


class ThreadsChangedWarning(UserWarning):
    """A resumed run uses another CPU thread count than the checkpoint's: not bit-exact."""


def warn_if_threads_changed(saved_config: dict[str, Any], cfg: Any, path: Any) -> None:
    """A resume may change ``train.threads``, but only the same count is bit-exact: torch splits its float
    reductions by thread, so e.g. 1 → 2 threads changed 676 of 12,800 weights by up to 1.8e-7 after one
    epoch. Say so when it happens (docs/reliability.md)."""
    before = saved_config.get("train", {}).get("threads") if isinstance(saved_config, dict) else None
    now = cfg.train.threads
    if before is not None and before != now:
        warnings.warn(
            f"--resume from {path}: train.threads changes from {before} to {now}; the run continues, but only "
            "the same thread count reproduces the uninterrupted run bit for bit (float sums are split by thread)",
            ThreadsChangedWarning, stacklevel=3,
        )
