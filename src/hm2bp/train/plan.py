"""The plan of a run before it starts (``hm2bp train --dry-run``): dataset sizes, steps, and the time and
memory it will take, estimated from a few timed steps on a throw-away copy of the network.

Nothing is written: no run folder, no checkpoint. The time estimate measures ``timing_steps`` training
steps (forward with labels, loss, HM2-BP backward, optimizer step) after one warm-up step (more, up
to 50, while they take under 2 s in all), and one evaluation batch, on the configured device and thread count; it scales them linearly to the epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from .datasets import SpikeDataset
from .user_datasets import resolve_datasets

__all__ = ["RunPlan", "format_plan", "make_plan"]


@dataclass(frozen=True)
class RunPlan:
    """Sizes, steps and estimates of a run (times in seconds, memory in bytes; None = not measured)."""

    n_train: int
    n_test: int
    n_val: int
    steps_per_epoch: int
    epochs: int
    step_s: float | None
    eval_s_per_sample: float | None
    step_bytes: int
    available_bytes: int | None
    device: str
    init_epochs: int | None = None  # the completed epochs of the train.init_from checkpoint (None = none)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def epoch_s(self) -> float | None:
        if self.step_s is None or self.eval_s_per_sample is None:
            return None
        return self.steps_per_epoch * self.step_s + (self.n_test + self.n_val) * self.eval_s_per_sample

    @property
    def total_s(self) -> float | None:
        e = self.epoch_s
        return None if e is None else e * self.epochs


def _time_steps(cfg: RunConfig, train_set: SpikeDataset, device: torch.device, n: int, budget_s: float = 2.0,
                most: int = 50) -> float:
    """Seconds per training step: the mean of at least ``n`` steps after one warm-up step, more (up to
    ``most``) while they take less than ``budget_s`` in all (short steps are noisy)."""
    from ..loss import rate_loss, softmax_loss, weight_regularizer
    from .loop import build_model

    m, t = cfg.model, cfg.train
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr)
    b = min(t.batch_size, len(train_set))
    times: list[float] = []
    k = 0
    while k <= n or (k <= most and sum(times[1:]) < budget_s):
        t0 = time.perf_counter()
        idx = torch.arange(k * b, (k + 1) * b) % len(train_set)
        x = train_set.get(idx, 0).to(device)
        labels = train_set.labels[idx].to(device)
        counts = model(x, labels).sum(0)
        if m.loss == "softmax":
            loss = softmax_loss(counts, labels)
        else:
            loss = rate_loss(counts, labels, desired=m.desired, undesired=m.undesired, margin=m.margin)
        if t.reg_lambda > 0:
            loss = loss + weight_regularizer(model, t.reg_lambda, t.reg_beta, t.reg_limit).to(device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        k += 1
    return sum(times[1:]) / max(len(times) - 1, 1)


@torch.no_grad()
def _time_eval(cfg: RunConfig, test_set: SpikeDataset, device: torch.device, cap: int = 32) -> float:
    """Seconds per evaluated sample, from one batch of at most ``cap`` samples (after a warm-up)."""
    from .loop import build_model

    model = build_model(cfg).to(device).eval()
    b = max(1, min(cfg.train.eval_batch_size, cap, len(test_set)))
    idx = torch.arange(b)
    model(test_set.get(idx[:1], 0).to(device))
    t0 = time.perf_counter()
    model(test_set.get(idx, 0).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / b


def make_plan(cfg: RunConfig, datasets: Any = None, *, timing_steps: int = 2,
              device: str | torch.device | None = None) -> RunPlan:
    """The plan of ``cfg``: loads the datasets (or uses ``datasets``, as :func:`~hm2bp.train.train` takes
    them) and, when ``timing_steps`` > 0, times that many training steps and one evaluation batch."""
    from ..nn.memory import available_memory_bytes, training_step_bytes
    from .loop import build_model, num_threads, resolve_device
    from .state import init_weights_from

    t = cfg.train
    dev = resolve_device(t.device) if device is None else torch.device(device)
    # a bad train.init_from is refused here as in training, before the (possibly slow) data loading
    init_epochs = init_weights_from(build_model(cfg), Path(t.init_from), cfg) if t.init_from else None
    with num_threads(t.threads):
        train_set, val, test_set = resolve_datasets(cfg, datasets)
        steps = math.ceil(len(train_set) / t.batch_size)
        if t.max_steps:
            steps = min(steps, t.max_steps)
        step_s = eval_s = None
        if timing_steps > 0:
            step_s = _time_steps(cfg, train_set, dev, timing_steps)
            eval_s = _time_eval(cfg, test_set, dev)
        need = training_step_bytes(build_model(cfg), cfg.model.T, t.batch_size, device=dev)
    return RunPlan(len(train_set), len(test_set), len(val) if val is not None else 0, steps, t.epochs, step_s,
                   eval_s, need, available_memory_bytes(dev), str(dev), init_epochs)


def _duration(s: float | None) -> str:
    if s is None:
        return "not measured"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def format_plan(cfg: RunConfig, plan: RunPlan) -> str:
    """The plan as the lines ``--dry-run`` prints."""
    t = cfg.train
    sizes = f"{plan.n_train:,} train, {plan.n_test:,} test" + (f", {plan.n_val:,} validation" if plan.n_val else "")
    cap = f" (capped by train.max_steps={t.max_steps})" if t.max_steps else ""
    free = f" of {_size(plan.available_bytes)} available" if plan.available_bytes is not None else ""
    step = "not measured" if plan.step_s is None else f"{plan.step_s * 1e3:.1f} ms"
    lines = [
        f"plan for {cfg.name}: {cfg.data.dataset} {cfg.model.arch}, T={cfg.model.T}, {t.mode} on {plan.device}",
        f"  samples:          {sizes}",
        (f"  steps:            {plan.steps_per_epoch:,} per epoch{cap} x {plan.epochs} "
         f"epoch{'s' if plan.epochs != 1 else ''} = {plan.total_steps:,} (batch {t.batch_size})"),
        f"  one step:         {step} (measured)",
        f"  one epoch:        {_duration(plan.epoch_s)} (training and evaluation, estimated)",
        f"  whole run:        {_duration(plan.total_s)} (estimated)",
        f"  memory per step:  {_size(plan.step_bytes)}{free} (estimated)",
        f"  run folder:       {cfg.out_dir} (nothing written: dry run)",
    ]
    if plan.init_epochs is not None:
        lines.insert(-1, f"  starts from:      the weights of {t.init_from} (after {plan.init_epochs} epochs of its run)")
    return "\n".join(lines) + "\n"
