"""NIR → hm2bp: rebuild a :class:`~hm2bp.nn.network.SpikingNetwork` from a NIR graph (docs/nir.md, "Import").

The chain Input → (synapse → neuron [↔ lateral])… → Output is walked node by node; each synapse + neuron
pair becomes one engine layer. The step length ``dt`` is the caller's, else the graph's ``hm2bp.dt``,
else inferred from the neurons (``dt = tau_mem / r``, the convention of snnTorch, SpikingJelly and
hm2bp's own exports), else 1e-3 with a warning. Time constants below one step are refused.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .functional.params import NeuronParams
from .nir_io import (
    _P,
    _REL_TOL,
    DEFAULT_T_REF,
    DEFAULT_THETA_EPS,
    FALLBACK_DT,
    NIRConversionError,
    _arch_string,
    _require_nir,
)
from .nn.layers import Flatten, SpikingConv2d, SpikingLinear, SpikingPool2d
from .nn.network import SpikingNetwork

if TYPE_CHECKING:  # pragma: no cover
    import nir

__all__ = ["import_graph", "infer_dt"]


def _err(message: str) -> NIRConversionError:
    return NIRConversionError("import_nir: " + message)


# --------------------------------------------------------------------------------------------------
# small readers
# --------------------------------------------------------------------------------------------------
def _meta_get(meta: Mapping[str, Any] | None, key: str) -> Any:
    if not isinstance(meta, Mapping):
        return None
    value = meta.get(_P + key)
    if isinstance(value, bytes):
        value = value.decode("utf8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _close(a: float, b: float, tol: float = _REL_TOL) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def _snap(x: float) -> float:
    """Undo float noise from seconds↔steps conversions (e.g. 0.064/0.001) without changing real values."""
    return float(f"{x:.12g}")


def _uniform(node_name: str, node: Any, field_name: str, shape: tuple[int, ...]) -> float:
    arr = np.asarray(getattr(node, field_name), dtype=np.float64)
    if arr.size != 1 and arr.size != int(np.prod(shape)):
        raise _err(
            f"node {node_name!r} ({type(node).__name__}): parameter {field_name!r} has shape "
            f"{list(arr.shape)}, the layer has {list(shape)} neurons"
        )
    flat = arr.reshape(-1)
    if not np.all(np.isfinite(flat)):
        raise _err(f"node {node_name!r}: parameter {field_name!r} is not finite")
    if np.any(flat != flat[0]):
        raise _err(
            f"node {node_name!r} ({type(node).__name__}): parameter {field_name!r} varies across neurons "
            f"({flat.min()} … {flat.max()}); hm2bp layers share one value per layer"
        )
    return float(flat[0])


def _from_meta(meta: Any, key: str, derived: float, node_name: str) -> float:
    """The exact metadata value when it agrees with the value derived from the NIR parameters."""
    value = _meta_get(meta, key)
    if value is None:
        return derived
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise _err(f"node {node_name!r}: metadata hm2bp.{key} = {value!r} is not a number") from None
    if _close(value, derived):
        return value
    warnings.warn(
        f"import_nir: node {node_name!r}: metadata hm2bp.{key} = {value} disagrees with the NIR parameters "
        f"({derived}); using the NIR parameters (was the graph edited?)",
        stacklevel=4,
    )
    return derived


def _zero_bias(name: str, node: Any) -> None:
    bias = getattr(node, "bias", None)
    if bias is not None and np.any(np.asarray(bias) != 0):
        raise _err(f"node {name!r} ({type(node).__name__}) has a non-zero bias; hm2bp neurons have no bias")


def _pair(name: str, value: Any, what: str) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value)).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2:
        raise _err(f"node {name!r}: cannot read {what} = {value!r}")
    return int(arr[0]), int(arr[1])


# --------------------------------------------------------------------------------------------------
# dt
# --------------------------------------------------------------------------------------------------
def infer_dt(graph: nir.NIRGraph) -> float | None:
    """``tau_mem / r`` when every neuron node with r ≠ 1 gives the same value (relative 1e-6), else None.

    snnTorch and SpikingJelly write ``r = tau_mem/dt`` (with dt = 1e-4) and store no dt; so do hm2bp's
    exports. ``r = 1`` everywhere (Norse) says nothing about dt.
    """
    nir = _require_nir()
    values = []
    for node in graph.nodes.values():
        if isinstance(node, (nir.CubaLIF, nir.LIF)):
            tau = np.asarray(node.tau_mem if isinstance(node, nir.CubaLIF) else node.tau, dtype=np.float64)
            r = np.asarray(node.r, dtype=np.float64)
            if r.size and np.all(np.isfinite(r)) and np.all(r > 0) and not np.all(r == 1.0):
                values.extend((tau.reshape(-1)[:1] / r.reshape(-1)[:1]).tolist())
    if values and all(_close(v, values[0], 1e-6) for v in values):
        return _snap(values[0])
    return None


def _resolve_dt(graph: nir.NIRGraph, dt: float | None) -> float:
    if dt is None:
        gdt = _meta_get(graph.metadata, "dt")
        dt = float(gdt) if gdt is not None else infer_dt(graph)
    if dt is None and any(isinstance(n, (_require_nir().CubaLIF, _require_nir().LIF)) for n in graph.nodes.values()):
        warnings.warn(
            f"import_nir: the graph gives no step length (no hm2bp.dt metadata, and tau_mem/r does not tell "
            f"it: r = 1 or layers disagree); assuming dt = {FALLBACK_DT:g} s. Pass dt= if the file was written "
            "with another step", UserWarning, stacklevel=3,
        )
    if dt is None:
        dt = FALLBACK_DT
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise _err(f"dt must be a positive number of seconds, got {dt!r}")
    return float(dt)


# --------------------------------------------------------------------------------------------------
# neurons
# --------------------------------------------------------------------------------------------------
def _steps(name: str, what: str, seconds: float, dt: float) -> float:
    steps = _snap(seconds / dt)
    if not steps >= 1.0:
        raise _err(
            f"node {name!r}: {what} = {seconds:g} s is {steps:g} steps of dt = {dt:g} s; hm2bp needs at least "
            "one step (a smaller constant makes the Euler step overshoot). Pass the dt the file was written "
            "for (Norse 1.1's to_nir writes dt²/τ-style constants)"
        )
    return steps


def _neuron_fields(nir, name: str, node: Any, shape: tuple[int, ...], dt: float) -> tuple[float, ...]:
    """(tau_mem, tau_syn, r, w_in, v_threshold) in NIR units, after the checks hm2bp needs."""
    if isinstance(node, nir.CubaLIF):
        tau_mem, tau_syn = _uniform(name, node, "tau_mem", shape), _uniform(name, node, "tau_syn", shape)
        r, w_in = _uniform(name, node, "r", shape), _uniform(name, node, "w_in", shape)
    else:  # LIF: no synaptic filter; τ_s = 1 step makes x(t) = I(t−1) exactly (x − x/1 = 0)
        tau_mem, tau_syn = _uniform(name, node, "tau", shape), dt
        r, w_in = _uniform(name, node, "r", shape), 1.0
    for f in ("v_leak", "v_reset"):
        value = _uniform(name, node, f, shape)
        if value != 0.0:
            raise _err(f"node {name!r} ({type(node).__name__}): {f} = {value} is not supported "
                       "(hm2bp neurons rest and reset at 0)")
    if tau_mem <= 0 or tau_syn <= 0:
        raise _err(f"node {name!r}: time constants must be positive")
    return tau_mem, tau_syn, r, w_in, _uniform(name, node, "v_threshold", shape)


def _threshold(name: str, v_threshold: float, tau_mem: float, r: float, w_in: float, dt: float) -> float:
    # Forward Euler per step: v ← (1 − dt/τ_mem)·v + (dt/τ_mem)·r·w_in·(filtered input); hm2bp adds x/τ_s,
    # so the NIR potential is g times hm2bp's, g = r·w_in·dt/τ_mem; fold g into the threshold.
    g = r * w_in * dt / tau_mem
    if _close(g, 1.0):
        g = 1.0
    if not (g > 0 and math.isfinite(g)):
        raise _err(f"node {name!r}: r·w_in must be positive (got r = {r}, w_in = {w_in})")
    threshold = v_threshold / g
    if not threshold > 0:
        raise _err(f"node {name!r}: v_threshold = {v_threshold} must be positive")
    return threshold


def _neuron_params(nir, name: str, node: Any, shape: tuple[int, ...], dt: float) -> NeuronParams:
    meta = getattr(node, "metadata", None)
    tau_mem, tau_syn, r, w_in, v_threshold = _neuron_fields(nir, name, node, shape, dt)
    threshold = _threshold(name, v_threshold, tau_mem, r, w_in, dt)
    tau_m = _from_meta(meta, "tau_m", _steps(name, "tau_mem", tau_mem, dt), name)
    tau_s = _from_meta(meta, "tau_s", 1.0 if tau_syn == dt else _steps(name, "tau_syn", tau_syn, dt), name)
    delay = _meta_get(meta, "delay_steps")
    if delay is not None and int(delay) != 1:
        raise _err(f"node {name!r}: hm2bp.delay_steps = {delay}; only a 1-step delay is supported")
    t_ref = _meta_get(meta, "t_ref")
    t_ref = DEFAULT_T_REF if t_ref is None else int(t_ref)
    theta_eps = _meta_get(meta, "theta_eps")
    theta_eps = DEFAULT_THETA_EPS if theta_eps is None else float(theta_eps)
    v_th = _meta_get(meta, "v_th")
    if v_th is not None and _close(float(v_th) - theta_eps, threshold):
        v_th = float(v_th)
    else:
        if v_th is not None:
            warnings.warn(
                f"import_nir: node {name!r}: metadata hm2bp.v_th = {v_th} (θ_eps {theta_eps}) disagrees with "
                f"v_threshold = {v_threshold}; using v_threshold", stacklevel=4,
            )
        v_th = threshold + theta_eps
    window = _meta_get(meta, "window")
    try:
        return NeuronParams(v_th, tau_m, tau_s, t_ref, theta_eps, None if window is None else int(window))
    except ValueError as exc:
        raise _err(f"node {name!r}: {exc}") from exc


def _lateral_strength(name: str, node: Any, n: int, neuron_meta: Any) -> float:
    _zero_bias(name, node)
    w = np.asarray(node.weight, dtype=np.float64)
    if w.shape != (n, n):
        raise _err(f"lateral Linear {name!r}: weight {list(w.shape)}, expected [{n}, {n}]")
    off = ~np.eye(n, dtype=bool)
    if np.any(np.diag(w) != 0) or (n > 1 and np.any(w[off] != w[off][0])):
        raise _err(
            f"recurrent Linear {name!r} is not lateral inhibition −w0·(1 − I) (zero diagonal, equal "
            "off-diagonal weights); general recurrent weights are not supported"
        )
    derived = float(-w[off][0]) if n > 1 else 0.0
    meta_w0 = _meta_get(getattr(node, "metadata", None), "lateral_strength")
    if meta_w0 is None:
        meta_w0 = _meta_get(neuron_meta, "lateral_strength")
    if meta_w0 is not None and (n == 1 or float(np.float32(-float(meta_w0))) == float(np.float32(-derived))):
        return float(meta_w0)
    return derived


# --------------------------------------------------------------------------------------------------
# synapses
# --------------------------------------------------------------------------------------------------
def _fc_synapse(name: str, node: Any, shape: tuple[int, ...]) -> tuple[tuple[str, Any], tuple[int, ...]]:
    kind = type(node).__name__
    _zero_bias(name, node)
    w = np.asarray(node.weight, dtype=np.float32)
    if w.ndim != 2:
        raise _err(f"{kind} {name!r}: weight must be 2-D [out, in], got {list(w.shape)}")
    if len(shape) != 1:
        raise _err(f"{kind} {name!r} receives a {list(shape)} map; insert a Flatten node before it")
    if w.shape[1] != shape[0]:
        raise _err(f"{kind} {name!r}: weight {list(w.shape)} does not take {shape[0]} inputs")
    return ("fc", w), (w.shape[0],)


def _conv_synapse(name: str, node: Any, shape: tuple[int, ...]) -> tuple[tuple[str, Any], tuple[int, ...]]:
    _zero_bias(name, node)
    w = np.asarray(node.weight, dtype=np.float32)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise _err(f"Conv2d {name!r}: need a square kernel [K, C, k, k], got {list(w.shape)}")
    if _pair(name, node.stride, "stride") != (1, 1):
        raise _err(f"Conv2d {name!r}: stride {node.stride} is not supported (only 1)")
    pad, k = node.padding, w.shape[2]
    if isinstance(pad, (str, bytes)):
        pad = pad.decode() if isinstance(pad, bytes) else pad
        if not (pad == "valid" or (pad == "same" and k == 1)):
            raise _err(f"Conv2d {name!r}: padding {pad!r} is not supported (only 0/'valid')")
    elif _pair(name, pad, "padding") != (0, 0):
        raise _err(f"Conv2d {name!r}: padding {pad} is not supported (only 0)")
    if _pair(name, node.dilation, "dilation") != (1, 1):
        raise _err(f"Conv2d {name!r}: dilation {node.dilation} is not supported (only 1)")
    if int(node.groups) != 1:
        raise _err(f"Conv2d {name!r}: groups = {node.groups} is not supported (only 1)")
    if len(shape) != 3 or shape[0] != w.shape[1] or min(shape[1:]) < k:
        raise _err(f"Conv2d {name!r}: weight {list(w.shape)} does not fit the input {list(shape)}")
    return ("conv", w), (w.shape[0], shape[1] - k + 1, shape[2] - k + 1)


def _pool_synapse(name: str, node: Any, shape: tuple[int, ...]) -> tuple[tuple[str, Any], tuple[int, ...]]:
    kh, kw = _pair(name, node.kernel_size, "kernel_size")
    sh, sw = _pair(name, node.stride, "stride")
    if not (kh == kw == sh == sw) or kh < 1:
        raise _err(f"SumPool2d {name!r}: kernel {[kh, kw]} / stride {[sh, sw]} not supported "
                   "(need square non-overlapping windows, kernel = stride)")
    if _pair(name, node.padding, "padding") != (0, 0):
        raise _err(f"SumPool2d {name!r}: padding {node.padding} is not supported (only 0)")
    if len(shape) != 3 or shape[1] % kh or shape[2] % kh:
        raise _err(f"SumPool2d {name!r}: window {kh} must divide the {list(shape)} map")
    return ("pool", kh), (shape[0], shape[1] // kh, shape[2] // kh)


def _synapse(nir, name: str, node: Any, shape: tuple[int, ...]) -> tuple[tuple[str, Any], tuple[int, ...]]:
    if isinstance(node, (nir.Linear, nir.Affine)):
        return _fc_synapse(name, node, shape)
    if isinstance(node, nir.Conv2d):
        return _conv_synapse(name, node, shape)
    if isinstance(node, nir.SumPool2d):
        return _pool_synapse(name, node, shape)
    raise _err(f"node {name!r} has unsupported type {type(node).__name__} (supported: Input, Output, Linear, "
               "Affine with zero bias, Conv2d, SumPool2d, Flatten, CubaLIF, LIF)")


def _make_layer(syn: tuple[str, Any], params: NeuronParams, w0: float | None, meta: Any,
                gen: torch.Generator) -> torch.nn.Module:
    common: dict[str, Any] = {"tau_m": params.tau_m, "tau_s": params.tau_s, "t_ref": params.t_ref, "theta_eps": params.theta_eps}
    kind, value = syn
    layer: torch.nn.Module
    if kind == "fc":
        eff, desired = _meta_get(meta, "effect_ratio"), _meta_get(meta, "desired")
        layer = SpikingLinear(value.shape[1], value.shape[0], params.v_th, lateral_inhibition=w0,
                              effect_ratio=True if eff is None else bool(eff),
                              desired=35 if desired is None else int(desired), generator=gen, **common)
    elif kind == "conv":
        layer = SpikingConv2d(value.shape[1], value.shape[0], value.shape[2], params.v_th, generator=gen, **common)
    else:
        layer = SpikingPool2d(value, params.v_th, **common)
    if kind != "pool":
        weight: torch.Tensor = layer.weight  # type: ignore[assignment]
        with torch.no_grad():
            weight.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    layer.params = params  # carries the window, if any
    return layer


# --------------------------------------------------------------------------------------------------
# the chain
# --------------------------------------------------------------------------------------------------
def _no_batch(shape: np.ndarray) -> tuple[int, ...]:
    """A shape without the leading batch dimension of 1 that nirtorch-based exporters (Norse) write."""
    dims = tuple(int(d) for d in shape.reshape(-1))
    return dims[1:] if len(dims) in (2, 4) and dims[0] == 1 else dims


@dataclass
class _Chain:
    """The graph as successor/predecessor lists, and the walk state."""

    nir: Any
    nodes: dict[str, Any]
    dt: float
    succ: dict[str, list[str]] = field(default_factory=dict)
    pred: dict[str, list[str]] = field(default_factory=dict)
    visited: set[str] = field(default_factory=set)
    gen: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))  # throw-away init

    @classmethod
    def of(cls, nir, graph: nir.NIRGraph, dt: float) -> _Chain:
        chain = cls(nir, dict(graph.nodes), dt)
        chain.succ = {k: [] for k in chain.nodes}
        chain.pred = {k: [] for k in chain.nodes}
        for a, b in graph.edges:
            for end in (a, b):
                if end not in chain.nodes:
                    raise _err(f"edge ({a!r}, {b!r}) names a node {end!r} that is not in the graph")
            chain.succ[a].append(b)
            chain.pred[b].append(a)
        for name, node in chain.nodes.items():
            if isinstance(node, nir.NIRGraph):
                raise _err(f"node {name!r} is a nested NIRGraph, which is not supported")
        return chain

    def only_successor(self, name: str, exclude: tuple[str, ...] = ()) -> str:
        nxt = [s for s in self.succ[name] if s not in exclude]
        if len(nxt) != 1:
            raise _err(f"node {name!r} ({type(self.nodes[name]).__name__}) feeds {nxt}; only a feed-forward chain "
                       "(plus a self-recurrent lateral Linear on a neuron) is supported")
        return nxt[0]

    def ends(self) -> tuple[str, str, tuple[int, ...]]:
        nir = self.nir
        inputs = [k for k, n in self.nodes.items() if isinstance(n, nir.Input)]
        outputs = [k for k, n in self.nodes.items() if isinstance(n, nir.Output)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise _err(f"need exactly one Input and one Output node, found inputs {inputs} and outputs {outputs}")
        in_shape = _no_batch(np.asarray(self.nodes[inputs[0]].input_type["input"]))
        if len(in_shape) not in (1, 3) or min(in_shape) < 1:
            raise _err(f"Input {inputs[0]!r} has shape {list(in_shape)}; hm2bp needs [N] or [C, H, W]")
        return inputs[0], outputs[0], in_shape

    def flatten(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        node = self.nodes[name]
        if len(shape) != 3:
            raise _err(f"Flatten {name!r} on a {list(shape)} input; expected [C, H, W]")
        start, end = int(node.start_dim), int(node.end_dim)
        if not (-3 <= start < 3 and -3 <= end < 3 and start % 3 == 0 and end % 3 == 2):
            raise _err(f"Flatten {name!r} (start_dim {start}, end_dim {end}) on the {list(shape)} map does not "
                       "flatten it to 1-D; NIR types carry no batch dimension, so a full flatten is start_dim=0, "
                       "end_dim=-1")
        return (int(np.prod(shape)),)

    def lateral_of(self, neuron: str, syn_name: str, syn_kind: str) -> str | None:
        others = [p for p in self.pred[neuron] if p != syn_name]
        if not others:
            return None
        lat = others[0]
        if (len(others) != 1 or syn_kind != "fc" or not isinstance(self.nodes[lat], (self.nir.Linear, self.nir.Affine))
                or self.pred[lat] != [neuron] or self.succ[lat] != [neuron]):
            raise _err(f"neuron {neuron!r} has extra inputs {others}; only one self-recurrent lateral Linear "
                       "on a fully connected layer is supported")
        self.visited.add(lat)
        return lat

    def layer(self, syn_name: str, shape: tuple[int, ...]) -> tuple[torch.nn.Module, tuple[int, ...], str]:
        """The engine layer of the synapse ``syn_name`` and its neuron; returns it, its shape, the node after."""
        syn, new_shape = _synapse(self.nir, syn_name, self.nodes[syn_name], shape)
        cur = self.only_successor(syn_name)
        node = self.nodes[cur]
        if not isinstance(node, (self.nir.CubaLIF, self.nir.LIF)):
            raise _err(f"node {cur!r} after synapse {syn_name!r} has unsupported type {type(node).__name__} "
                       "(expected a CubaLIF or LIF neuron)")
        self.visited.add(cur)
        lateral = self.lateral_of(cur, syn_name, syn[0])
        params = _neuron_params(self.nir, cur, node, new_shape, self.dt)
        meta = getattr(node, "metadata", None)
        w0 = None if lateral is None else _lateral_strength(lateral, self.nodes[lateral], new_shape[0], meta)
        layer = _make_layer(syn, params, w0, meta, self.gen)
        return layer, new_shape, self.only_successor(cur, exclude=(lateral,) if lateral else ())

    def output_shape_matches(self, name: str, shape: tuple[int, ...]) -> None:
        node = self.nodes[name]
        out_shape = node.output_type.get("output") if isinstance(node.output_type, dict) else None
        if out_shape is not None and _no_batch(np.asarray(out_shape)) != shape:
            raise _err(f"Output {name!r} has shape {list(np.asarray(out_shape))}, the net gives {list(shape)}")


def _walk(chain: _Chain) -> tuple[list[torch.nn.Module], tuple[int, ...]]:
    first, _, in_shape = chain.ends()
    chain.visited.add(first)
    layers: list[torch.nn.Module] = []
    shape, cur = in_shape, chain.only_successor(first)
    while True:
        if cur in chain.visited:
            raise _err(f"the chain returns to node {cur!r}: unsupported cycle")
        chain.visited.add(cur)
        node = chain.nodes[cur]
        if isinstance(node, chain.nir.Output):
            chain.output_shape_matches(cur, shape)
            return layers, in_shape
        if len(chain.pred[cur]) != 1:
            raise _err(f"node {cur!r} ({type(node).__name__}) has inputs {chain.pred[cur]}; expected exactly one")
        if isinstance(node, chain.nir.Flatten):
            shape = chain.flatten(cur, shape)
            layers.append(Flatten())
            cur = chain.only_successor(cur)
            continue
        layer, shape, cur = chain.layer(cur, shape)
        layers.append(layer)


def import_graph(graph: nir.NIRGraph | str | os.PathLike[str], *, dt: float | None = None) -> SpikingNetwork:
    """Rebuild an hm2bp network from a NIR graph (or a NIR file, read with ``nir.read``).

    Supported: one ``Input`` → a chain of synapse + neuron pairs → one ``Output``, where a synapse is
    ``Linear``/``Affine`` (zero bias), ``Conv2d`` (stride 1, no padding, dilation 1, groups 1, square
    kernel, zero bias) or ``SumPool2d`` (square, kernel = stride, no padding, dividing the map); a
    neuron is ``CubaLIF`` or ``LIF`` (``v_leak = v_reset = 0``, one value per layer); ``Flatten``
    between the 3-D and the 1-D part; optionally, on fully connected layers, a self-recurrent ``Linear``
    of the lateral-inhibition form ``−w0·(1 − I)``. The last layer must be fully connected: it becomes
    the output layer.

    Parameters come from the NIR fields (``τ_m = tau_mem/dt``, ``τ_s = tau_syn/dt``, threshold
    ``v_threshold/(r·w_in·dt/tau_mem)``); the ``hm2bp.*`` metadata written by
    :func:`~hm2bp.nir_io.export_nir` supplies the exact values and what NIR cannot express. Without it:
    ``t_ref = 2``, ``theta_eps = 1e-6`` (with ``ν = threshold + theta_eps``, so the spike test stays
    ``v > v_threshold``), a one-step synaptic delay, and for ``LIF`` nodes ``τ_s = 1`` step.

    Args:
        graph: a ``nir.NIRGraph`` or the path of a NIR (HDF5) file.
        dt: step length in seconds; default: the graph's ``hm2bp.dt`` metadata, else ``tau_mem / r`` of
            its neurons when they agree, else 1e-3 with a warning.

    Raises:
        NIRConversionError: naming the node and the unsupported type, structure or parameter (a time
            constant below one step included).
    """
    nir = _require_nir()
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(os.fspath(graph))
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"import_nir: expected a nir.NIRGraph or a file path, got {type(graph).__name__}")
    chain = _Chain.of(nir, graph, _resolve_dt(graph, dt))
    layers, in_shape = _walk(chain)
    if not layers or not isinstance(layers[-1], SpikingLinear):
        raise _err("the last layer must be fully connected (Linear/Affine + neuron): it is the output layer")
    unvisited = sorted(set(chain.nodes) - chain.visited)
    if unvisited:
        raise _err(f"nodes {unvisited} are not on the Input → Output chain")
    layers[-1].output = True
    net = SpikingNetwork(layers, in_shape, "")
    net.arch = _arch_string(net)
    return net
