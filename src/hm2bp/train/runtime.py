"""Where a run executes and what it builds first: the device, the CPU thread count, the initial network.

Imported by the training loop, the evaluation helpers, :mod:`hm2bp.train.distributed` and the plots,
and importing none of them, so that none of those imports the others to reach these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..config import RunConfig
from ..errors import ConfigError
from ..nn.network import SpikingNetwork, build_network
from .datasets import sample_generator

__all__ = ["build_model", "num_threads", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a CUDA device that is not there is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r}: CUDA is not available in this PyTorch build/machine "
                              f"(torch {torch.__version__}, torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` (n = 0: unchanged), restoring the previous count."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_model(cfg: RunConfig, seed: int | None = None) -> SpikingNetwork:
    """The network of ``cfg.model``, initialised from a generator seeded with ``cfg.train.seed``."""
    m = cfg.model
    gen = sample_generator(cfg.train.seed if seed is None else seed, "init")
    return build_network(
        m.arch, m.thresholds, lateral_inhibition=m.lateral_inhibition or None, effect_ratio=m.effect_ratio,
        desired=m.desired, fc_init=m.fc_init, conv_init=m.conv_init, tau_m=m.tau_m, tau_s=m.tau_s,
        t_ref=m.t_ref, generator=gen,
    )
