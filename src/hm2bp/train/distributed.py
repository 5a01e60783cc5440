"""Data-parallel mini-batch training across processes started by ``torchrun`` (one process per device).

``torchrun --nproc-per-node N -m hm2bp train CONFIG ...`` starts N copies of the trainer. Each one finds
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment; :func:`session` then joins the process
group (NCCL on CUDA, one GPU per process, ``cuda:LOCAL_RANK``; gloo on the CPU) and
:func:`hm2bp.train.train` runs the usual loop with these changes (see ``docs/distributed.md``):

- every process holds the full training set, the same model, optimizer, data order and boost weights;
- the global mini-batch ``order[i : i + batch_size]`` is cut into ``world_size`` contiguous pieces
  (:func:`shard`, ``torch.tensor_split``: sizes differ by at most one, the union is the batch);
  process r runs forward/backward on piece r only;
- each process back-propagates Σ_{n in its piece} L_n / B (B = size of the global batch), so that the
  SUM all-reduce of the weight gradients (:func:`all_reduce_gradients`) is the single-process mean
  (1/B) Σ_n ∇L_n; the weight regulariser (docs/algorithm.md §4.1) is added once, by rank 0;
- every process then takes the same optimizer step with the same gradient, so the weights stay equal;
- the training predictions (for boosting, docs/algorithm.md §4.4) are merged with a MAX all-reduce (a sample no
  process saw stays −1), the epoch's loss/accuracy sums with a SUM all-reduce;
- the test set is cut into contiguous ranges, evaluated in parallel and the output counts summed;
- only rank 0 writes ``config.json``, ``metrics.jsonl``, checkpoints and plots, and prints.

Online mode (batch 1, docs/algorithm.md §4.2) has nothing to split and is refused when ``WORLD_SIZE > 1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ConfigError
from .runtime import resolve_device

__all__ = [
    "DistContext",
    "all_reduce_gradients",
    "all_reduce_sum",
    "all_reduce_tensor",
    "any_flags",
    "barrier",
    "env_world_size",
    "gather_rows",
    "is_main_process",
    "merge_predictions",
    "session",
    "shard",
    "shard_range",
]


@dataclass(frozen=True)
class DistContext:
    """The process's place in a data-parallel run: ``rank`` of ``world_size``, the collectives' device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` of the torchrun environment (1 when it is not set)."""
    text = os.environ.get("WORLD_SIZE", "1") or "1"
    try:
        return max(int(text), 1)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={text!r} in the environment is not an integer") from None


def is_main_process() -> bool:
    """True outside a distributed run and on rank 0 of one (from the process group or ``RANK``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return (os.environ.get("RANK", "0") or "0") == "0"


def _distributed_device(name: str, local_rank: int) -> torch.device:
    """The device of one process: ``cuda:LOCAL_RANK`` for any CUDA choice, else the CPU."""
    dev = resolve_device(name)  # a CUDA device that is not there is a ConfigError
    if dev.type != "cuda":
        return dev
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise ConfigError(f"train.device={name!r}: LOCAL_RANK {local_rank} but only {n} CUDA device(s) visible; "
                          f"start at most {n} processes per node (torchrun --nproc-per-node {n})")
    return torch.device("cuda", local_rank)


@contextmanager
def session(device_name: str, mode: str, batch_size: int) -> Iterator[tuple[DistContext | None, torch.device]]:
    """Join (or reuse) the process group of a torchrun launch; yields ``(context or None, device)``.

    Single-process runs (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``, no initialised group) get ``None`` and the
    device of ``train.device``. A group created here is destroyed on exit; one created by the caller
    (e.g. a test that spawns processes itself) is left alone.
    """
    owned = False
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
    else:
        world = env_world_size()
    if world <= 1:
        yield None, resolve_device(device_name)
        return
    if mode == "online":
        raise ConfigError(f"train.mode='online' updates after every single sample, which cannot be split across "
                          f"{world} processes; use train.mode=minibatch with train.batch_size >= {world}, or run "
                          f"one process")
    if batch_size < world:
        raise ConfigError(f"train.batch_size={batch_size} is smaller than the {world} processes; every process "
                          f"needs at least one sample of each mini-batch")
    if not dist.is_available():  # pragma: no cover - depends on the torch build
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or "0")
    if dist.is_initialized():
        backend = str(dist.get_backend())
        device = _distributed_device(device_name, local_rank)
        if backend == "nccl" and device.type != "cuda":
            raise ConfigError("the process group uses NCCL, which needs train.device=cuda (or auto)")
    else:
        device = _distributed_device(device_name, local_rank)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group(backend=backend, timeout=timedelta(minutes=30), device_id=device)
        else:
            dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
        owned = True
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)
    try:
        yield ctx, device
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def shard(indices: Tensor, ctx: DistContext) -> Tensor:
    """This process's contiguous piece of a global mini-batch (``torch.tensor_split`` into world_size parts).

    Piece sizes differ by at most one; the pieces in rank order are the batch. A batch shorter than the
    number of processes (the last one of an epoch) leaves the last ranks an empty piece.
    """
    return torch.tensor_split(indices, ctx.world_size)[ctx.rank]


def shard_range(n: int, ctx: DistContext) -> tuple[int, int]:
    """``[start, stop)`` of this process's contiguous share of ``n`` items (the same cut as :func:`shard`)."""
    q, r = divmod(n, ctx.world_size)
    start = ctx.rank * q + min(ctx.rank, r)
    return start, start + q + (1 if ctx.rank < r else 0)


def all_reduce_gradients(params: Sequence[Tensor], ctx: DistContext) -> None:
    """Sum every parameter's ``.grad`` over all processes, in place (one flat all-reduce).

    A parameter whose gradient is None on some processes (an empty shard) but not on others gets zeros
    there first; one that has no gradient anywhere keeps None, as in a single-process step.
    """
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    grads = []
    for p, flag in zip(params, has.tolist()):
        if flag:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_sum(values: Sequence[float], ctx: DistContext) -> list[float]:
    """Sums of a few numbers over all processes (float64)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def merge_predictions(preds: Tensor, ctx: DistContext) -> Tensor:
    """Union of the per-process prediction records (−1 where a process did not see a sample)."""
    t = preds.to(ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu()


def all_reduce_tensor(t: Tensor, ctx: DistContext) -> Tensor:
    """Element-wise sum of a tensor over all processes; returned on the CPU."""
    out = t.to(ctx.device).clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.cpu()


def any_flags(flags: Sequence[bool], ctx: DistContext | None) -> list[bool]:
    """Each flag OR-ed over all processes (unchanged outside a distributed run): decisions such as
    "stop now" or "checkpoint now" that every process must take at the same update."""
    if ctx is None:
        return [bool(f) for f in flags]
    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.cpu().tolist()]


def gather_rows(row: Sequence[float], ctx: DistContext) -> Tensor:
    """``[world_size, len(row)]`` float64 on the CPU: row r holds process r's values (exact: a SUM over zeros)."""
    t = torch.zeros(ctx.world_size, len(row), dtype=torch.float64, device=ctx.device)
    t[ctx.rank] = torch.tensor(list(row), dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def barrier(ctx: DistContext | None) -> None:
    """Wait for every process (no-op outside a distributed run)."""
    if ctx is not None:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()
