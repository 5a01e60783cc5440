"""The one backend seam (style.md B10): which implementation serves these tensors.

A fast path in ``hm2bp.functional`` asks ``backend_for(*tensors)`` and calls one method of the answer; it never
tests devices, compilers or environment variables itself. Three backends:

- ``torch`` (``torch_backend.py``): portable, any device and dtype; the mirror every other backend is tested
  against.
- ``cpu`` (``cpu_backend.py``): the compiled C kernels of ``cpu.py`` on CPU tensors (the event-driven FC path).
- ``triton`` (``triton_backend.py``): Triton kernels on CUDA tensors (or on CPU tensors under
  ``TRITON_INTERPRET=1``, which is how CI proves them).

A backend serves every method of ``Backend``: what it has no kernel for it inherits from the torch backend
(every backend subclasses it), so the torch twin serves. ``HM2BP_BACKEND`` (``torch``, ``cpu`` or ``triton``)
forces one; a forced backend that cannot serve the tensors' device falls back to torch and says why once.
``describe()`` (also ``python -m hm2bp.kernels``) prints every decision in words.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..functional.params import NeuronParams

log = logging.getLogger("hm2bp.kernels")

NAMES = ("torch", "cpu", "triton")
"""The backends ``HM2BP_BACKEND`` may name."""


class NonFiniteInput(ValueError):
    """A kernel found NaN or inf in the spikes or the weights it read (``what`` says which)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the {what} contain NaN or inf")
        self.what = what


class SpikeIndex(NamedTuple):
    """The spikes of a ``[T·B, N]`` 0/1 matrix as CSR over rows r = t·B + b (``Backend.spike_index``)."""

    row_ptr: Tensor
    """``[T·B + 1]`` int64 offsets into ``cols``."""
    cols: Tensor
    """``[number of spikes]`` int32 neuron index of every spike, row by row."""
    counts: Tensor
    """``[B, N]`` spike counts per sample and neuron."""


class OutputRules(NamedTuple):
    """The output layer's spike insertion and lateral factor for one batch (``Backend.output_rules``)."""

    spikes: Tensor
    """``[T, B, N]`` spikes after the insertion of docs/algorithm.md §3.2 (same dtype as the input spikes, or uint8)."""
    lateral: Tensor | None
    """``[B, N]`` float64 Λ of docs/algorithm.md §3.4 (None without lateral inhibition)."""
    inserted: bool
    """Whether any spike was inserted (σ's numerator of the forward is then stale)."""
    unstable: bool
    """Whether some Λ is not finite or ≤ 0 (loop gain ≥ 1; the authors leave it unguarded)."""


class Backend(Protocol):
    """One method per hot loop of the fast paths. Shapes are time-major; ``p`` is the layer's constants."""

    name: str

    def lif_scan(self, drive: Tensor, p: NeuronParams, lateral: Tensor | None) -> Tensor:
        """docs/algorithm.md §1.1 over ``drive`` ``[T, B, *shape]`` → 0/1 spikes of ``drive.dtype``, same shape; ``lateral``
        ``[N, N]`` adds Σ_l w[i, l]·s_l(t−1) of the layer's own spikes (N = prod(shape))."""
        ...

    def psp_coefficients(self, post_spikes: Tensor, p: NeuronParams, dtype: torch.dtype) -> Tensor:
        """The backward-filtered S-PSP coefficients C̃ ``[T, M]`` of 0/1 post spikes ``[T, M]``
        (``functional/psp.py``)."""
        ...

    def output_rules(self, spikes: Tensor, labels: Tensor, p: NeuronParams, strength: float | None,
                     desired: int) -> OutputRules:
        """docs/algorithm.md §3.2 (insertion) and, when ``strength`` is not None, §3.4 (Λ of the spikes before insertion)."""
        ...

    def takes_events(self, weight_dtype: torch.dtype) -> bool:
        """Whether FC layers with weights of this dtype run event-driven (``spike_index`` and the ``fc_*``
        methods); when False the dense path (torch matmul/conv) serves."""
        ...

    def spike_index(self, spikes: Tensor, batch: int, max_density: float) -> SpikeIndex | None:
        """The CSR index of a 0/1 matrix ``[T·B, N]``, or None when the dense path is the better choice (more
        than ``max_density`` ones, graded values, or no event path). Raises ``NonFiniteInput``."""
        ...

    def fc_forward(self, index: SpikeIndex, weight: Tensor, steps: int, batch: int, p: NeuronParams,
                   lateral: Tensor | None, keep: bool, float_out: bool
                   ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        """Event-driven FC forward (drive fused into the LIF scan): spikes, and with ``keep`` (uint8 spikes,
        int32 counts, float64 σ numerator). Raises ``NonFiniteInput`` for NaN/inf weights."""
        ...

    def fc_psp_drive(self, post: Tensor, index: SpikeIndex, weight: Tensor, p: NeuronParams) -> Tensor:
        """``[B, N]`` Σ_t C̃_bi(t)·(W s(t))_bi from the input events, in ``weight.dtype``."""
        ...

    def fc_backward(self, post: Tensor, index: SpikeIndex, weight: Tensor, delta: Tensor, psp_drive: Tensor,
                    lateral: Tensor | None, p: NeuronParams, below: str | None, silent_psp: float,
                    counts_out: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The HM2-BP backward step of an event-driven FC layer: (weight gradient, error below or None)."""
        ...

    def takes_conv_events(self, weight_dtypes: Sequence[torch.dtype]) -> bool:
        """Whether a run of conv/pool layers with conv weights of these dtypes runs event-driven
        (``conv_layer_forward``/``conv_layer_backward``, ``functional/conv_events.py``)."""
        ...

    def conv_layer_forward(self, index: SpikeIndex, weight: Tensor | None, geometry: Any, steps: int, batch: int,
                           p: NeuronParams, keep: bool, float_out: bool
                           ) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """Event-driven forward of a conv (``weight``) or pool (None) layer of ``geometry``: (float32 spikes or
        None, uint8 spikes, int32 counts or None)."""
        ...

    def conv_layer_backward(self, post: SpikeIndex, pre: SpikeIndex, weight: Tensor | None, delta: Tensor,
                            geometry: Any, p: NeuronParams, need_below: bool, silent_psp: float
                            ) -> tuple[Tensor | None, Tensor | None]:
        """HM2-BP conv (docs/algorithm.md §3.5) or pool backward from the post and pre spike indexes: (weight gradient or
        None for pool, error below ``[B, C·H·W]`` or None), float64."""
        ...


_lock = threading.Lock()
_instances: dict[str, Backend] = {}
_unavailable: dict[str, str] = {}
_decisions: dict[tuple[str, str], tuple[Backend, str]] = {}


def _instance(name: str) -> Backend | None:
    """The backend called ``name``, built once; None (reason kept in ``_unavailable``) if it cannot load."""
    if name in _instances:
        return _instances[name]
    if name in _unavailable:
        return None
    if name == "cpu" and os.environ.get("HM2BP_BACKEND", "").strip().lower() == "torch":
        _unavailable.pop(name, None)
        return None  # cpu.library() refuses under HM2BP_BACKEND=torch: not a lasting failure, so not kept
    with _lock:
        if name not in _instances and name not in _unavailable:
            try:
                if name == "torch":
                    from .torch_backend import TorchBackend
                    _instances[name] = TorchBackend()
                elif name == "cpu":
                    from .cpu_backend import load_cpu_backend
                    _instances[name] = load_cpu_backend()
                else:
                    from .triton_backend import load_triton_backend
                    _instances[name] = load_triton_backend()
            except (RuntimeError, ImportError, OSError) as exc:
                _unavailable[name] = str(exc)
    return _instances.get(name)


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``torch``, ``cpu`` or ``triton``), whatever the device.

    Raises:
        ValueError: an unknown name. RuntimeError: the backend is unavailable here (the reason in words).
    """
    if name not in NAMES:
        raise ValueError(f"unknown hm2bp backend {name!r}; choose one of {', '.join(NAMES)}")
    backend = _instance(name)
    if backend is None:
        raise RuntimeError(f"hm2bp backend {name!r} is unavailable: {_unavailable[name]}")
    return backend


def _device_type(tensors: tuple[Tensor | torch.device | str, ...]) -> str:
    types = {t.device.type if isinstance(t, Tensor) else torch.device(t).type for t in tensors}
    return types.pop() if len(types) == 1 else "mixed"


def _default_order(device: str) -> tuple[str, ...]:
    return {"cuda": ("triton", "torch"), "cpu": ("cpu", "torch")}.get(device, ("torch",))


def _serves(name: str, device: str) -> str | None:
    """None when backend ``name`` can take ``device`` tensors, else why not."""
    if name == "torch":
        return None
    if device == "mixed":
        return "the tensors are on different devices"
    if name == "cpu":
        return None if device == "cpu" else f"the compiled C kernels take CPU tensors, not {device}"
    from .triton_backend import serves_device
    return serves_device(device)


def _decide(forced: str, device: str) -> tuple[Backend, str]:
    if forced and forced not in NAMES:
        raise ValueError(f"HM2BP_BACKEND={forced!r} names no backend; choose one of {', '.join(NAMES)}")
    order = (forced, "torch") if forced else _default_order(device)
    reasons: list[str] = []
    for name in order:
        refusal = _serves(name, device)
        backend = _instance(name) if refusal is None else None
        if backend is not None:
            why = f"HM2BP_BACKEND={forced}" if name == forced else (
                "the portable fallback" if reasons else f"the default for {device} tensors")
            if reasons:
                why += " (" + "; ".join(reasons) + ")"
            return backend, why
        reasons.append(f"{name} unavailable: {refusal or _unavailable.get(name, 'disabled by HM2BP_BACKEND')}")
    raise AssertionError("the torch backend always serves")  # pragma: no cover


def backend_for(*tensors: Tensor | torch.device | str) -> Backend:
    """The backend that serves these tensors (or devices): ``HM2BP_BACKEND`` if set, else triton on CUDA, the
    compiled C kernels on CPU, else torch. The only place that decides; each decision is logged once."""
    forced = os.environ.get("HM2BP_BACKEND", "").strip().lower()
    key = (forced, _device_type(tensors))
    decided = _decisions.get(key)
    if decided is None:
        decided = _decide(*key)
        _decisions[key] = decided
        log.info("hm2bp backend for %s tensors: %s, %s", key[1], decided[0].name, decided[1])
        if forced and decided[0].name != forced:
            import warnings
            warnings.warn(f"hm2bp: HM2BP_BACKEND={forced} cannot serve {key[1]} tensors; using {decided[0].name}: "
                          f"{decided[1]}", RuntimeWarning, stacklevel=2)
    return decided[0]


def describe(devices: tuple[str, ...] = ("cpu", "cuda")) -> str:
    """In words: the backend each device gets now and why, and why any backend is unavailable."""
    lines = []
    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            lines.append("cuda: no CUDA device")
            continue
        backend = backend_for(torch.device(device))
        lines.append(f"{device}: {backend.name} ({_decisions[(os.environ.get('HM2BP_BACKEND', '').strip().lower(), device)][1]})")
    for name in NAMES:
        if _instance(name) is None:
            lines.append(f"{name} backend unavailable: {_unavailable.get(name, 'disabled by HM2BP_BACKEND=torch')}")
    return "\n".join(lines)


def reset() -> None:
    """Forget every decision and loaded backend (tests that change ``HM2BP_BACKEND`` or ``TRITON_INTERPRET``)."""
    with _lock:
        _instances.clear()
        _unavailable.clear()
        _decisions.clear()
