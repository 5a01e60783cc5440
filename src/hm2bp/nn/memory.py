"""Up-front memory estimate of a training step, so that a configuration that cannot fit is refused
with the figure and a remedy instead of failing with an out-of-memory error mid-epoch."""

from __future__ import annotations

import math

import torch

from ..arch import LayerSpec
from ..errors import ConfigError
from ..functional.events import MAX_EVENT_DENSITY
from ..kernels.backend import Backend, backend_for
from .layers import Flatten, SpikingConv2d, SpikingLinear, SpikingPool2d
from .network import SpikingNetwork

_FORWARD_SAVED = 3  # input spikes, drive, output spikes kept for the backward pass (per layer)
_BACKWARD_TEMPS = 7  # coefficients (2), C̃, scaled copies and products alive in one layer's backward
_EVENT_BYTES_PER_NEURON = 2  # event path: the uint8 spikes kept, and as much again for transients


def _spec_of(layer: torch.nn.Module) -> LayerSpec | None:
    """The architecture-string layer a module is (None for Flatten and non-spiking modules)."""
    if isinstance(layer, SpikingConv2d):
        return LayerSpec("conv", layer.out_channels, layer.kernel_size)
    if isinstance(layer, SpikingPool2d):
        return LayerSpec("pool", layer.pool)
    if isinstance(layer, SpikingLinear):
        return LayerSpec("fc", layer.out_features)
    return None


def _layer_sizes(net: SpikingNetwork) -> list[tuple[int, int]]:
    """(input elements, output elements) per sample and step, for each spiking layer; the shapes follow
    ``hm2bp.arch`` (one place for the shape rules), also for a network built from modules by hand."""
    sizes = []
    shape = net.input_shape
    for layer in net.layers:
        spec = _spec_of(layer)
        if spec is None:
            continue
        out = spec.output_shape(shape)
        sizes.append((math.prod(shape), math.prod(out)))
        shape = out
    return sizes


def _on_event_path(layer: torch.nn.Module, backend: Backend) -> bool:
    """Whether a spiking layer trains on an event-driven path (``functional/events.py`` for FC layers,
    ``functional/conv_events.py`` for conv and pool layers): HM2-BP layers whose backend for the device
    takes events at the layer's weight dtype (sparse input assumed)."""
    if not isinstance(layer, (SpikingLinear, SpikingConv2d, SpikingPool2d)) or not layer.learning_rule.fuses_stack:
        return False
    if isinstance(layer, SpikingLinear):
        return backend.takes_events(layer.weight.dtype)
    if isinstance(layer, SpikingConv2d):
        return backend.takes_conv_events([layer.weight.dtype])
    return backend.takes_conv_events([])


def _event_path(net: SpikingNetwork, device: torch.device | str) -> bool:
    """Whether every spiking layer of ``net`` trains on an event-driven path."""
    spiking = [layer for layer in net.layers if not isinstance(layer, Flatten)]
    backend = backend_for(torch.device(device))
    return bool(spiking) and all(_on_event_path(layer, backend) for layer in spiking)


def _conv_stack_output(net: SpikingNetwork, sizes: list[tuple[int, int]]) -> int:
    """Neurons per sample and step of the float spikes a conv/pool stack hands to the FC layers after it
    (0 without conv layers, or when the network ends in one)."""
    spiking = [layer for layer in net.layers if _spec_of(layer) is not None]
    for i in range(len(spiking) - 1):
        if not isinstance(spiking[i], SpikingLinear) and isinstance(spiking[i + 1], SpikingLinear):
            return sizes[i][1]
    return 0


def training_step_bytes(net: SpikingNetwork, T: int, batch: int, bytes_per_value: int = 4,
                        device: torch.device | str = "cpu") -> int:
    """Estimated peak bytes of one training step, input spikes included.

    Dense path (GPU, float64, BPTT, ...): every layer's saved forward tensors plus the largest layer's
    backward temporaries (which include an input-sized error tensor for conv layers). Event path (HM2-BP
    FC, conv and pool layers on the CPU's compiled kernels): the float input, per layer its one-byte
    output spikes and the spike index of its input (4 bytes per spike, at the densest input the FC event
    path takes), and the float output of the last layer (and of a conv stack before the FC layers).
    """
    sizes = _layer_sizes(net)
    weights = sum(p.numel() for p in net.parameters()) * 4 * 4  # weights, grads, two Adam moments
    if _event_path(net, device):
        per_step = sizes[0][0] * bytes_per_value + sizes[-1][1] * bytes_per_value
        per_step += sum(_EVENT_BYTES_PER_NEURON * n_out + math.ceil(MAX_EVENT_DENSITY * n_in * 4) + 8
                        for n_in, n_out in sizes)
        per_step += _conv_stack_output(net, sizes) * bytes_per_value
        return per_step * T * batch + weights
    per_step = sum(n_in + _FORWARD_SAVED * n_out for n_in, n_out in sizes)
    per_step += max(_BACKWARD_TEMPS * n_out + 2 * n_in for n_in, n_out in sizes)
    return per_step * T * batch * bytes_per_value + weights


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory of the device: MemAvailable on Linux CPUs, free memory on CUDA; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":  # free memory: a device property, not a backend choice
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_training_fits(net: SpikingNetwork, T: int, batch: int, device: torch.device | str = "cpu",
                        available: int | None = None, headroom: float = 0.8) -> int:
    """Raise ConfigError when a training step would not fit in memory; return the estimate in bytes.

    Args:
        available: bytes free (default: measured); headroom: fraction of it a step may use.
    """
    need = training_step_bytes(net, T, batch, device=device)
    free = available if available is not None else available_memory_bytes(device)
    if free is not None and need > headroom * free:
        fixed = training_step_bytes(net, T, 0, device=device)
        per_sample = max(1, (need - fixed) // max(batch, 1))
        max_batch = max(0, int((headroom * free - fixed) // per_sample))
        gib = 1024**3
        raise ConfigError(
            f"a training step of {net.arch or 'this network'} with T={T} and batch={batch} needs about "
            f"{need / gib:.1f} GiB but only {free / gib:.1f} GiB is available on {device}; reduce the batch "
            f"size (at most about {max_batch} fits at this T) or the number of time steps T"
        )
    return need


__all__ = ["available_memory_bytes", "check_training_fits", "training_step_bytes"]
