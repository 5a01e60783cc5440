"""NIR (Neuromorphic Intermediate Representation) export and import of hm2bp networks.

``export_nir(net)`` describes a :class:`~hm2bp.nn.network.SpikingNetwork` with NIR primitives
(``Linear``, ``Conv2d``, ``SumPool2d``, ``Flatten``, ``CubaLIF``, a recurrent ``Linear`` for the
output lateral inhibition, ``Input``/``Output``); ``import_nir(graph_or_path)`` rebuilds a network;
``save_nir``/``load_nir`` go through ``nir.write``/``nir.read`` (HDF5). See ``docs/nir.md`` for the
parameter mapping and for what a simulator that ignores the ``hm2bp.*`` metadata gets differently.

The ``nir`` package is optional (``pip install hm2bp[nir]``); it is imported only inside these
functions, so ``import hm2bp`` stays light.

Mapping of one layer's neuron (docs/algorithm.md §1.1; a = 1 − 1/τ_m, b = 1 − 1/τ_s per step, step = ``dt`` seconds)
onto NIR's ``CubaLIF`` ODE ``τ_syn·İ = −I + w_in·S``, ``τ_mem·v̇ = (v_leak − v) + r·I``, integrated with
forward Euler over ``dt`` with per-step spikes S ∈ {0, 1}:

    tau_syn = τ_s·dt,  tau_mem = τ_m·dt,  r = τ_m,  w_in = 1,  v_leak = 0,  v_reset = 0,
    v_threshold = ν − θ_eps  (the test is the strict ``v > v_threshold`` in both)

Then I ← (1 − dt/τ_syn)·I + (dt/τ_syn)·S = b·I + S/τ_s, i.e. I = x/τ_s with hm2bp's synaptic state x, and
v ← (1 − dt/τ_mem)·v + (dt/τ_mem)·r·I = a·v + x/τ_s: the same leak constants a, b and the same drive.
"""

from __future__ import annotations

import math
import os
import typing
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import HM2BPError
from .functional.params import NeuronParams
from .nn.layers import Flatten, SpikingConv2d, SpikingLinear, SpikingPool2d
from .nn.network import SpikingNetwork

if TYPE_CHECKING:  # pragma: no cover
    import nir

__all__ = ["NIRConversionError", "export_nir", "import_nir", "load_nir", "save_nir"]

#: Version of the hm2bp ↔ NIR conventions written into the graph metadata.
FORMAT = "hm2bp-nir/1"
_P = "hm2bp."
#: Step length (seconds) of an export: snnTorch's fixed step (its importer asserts r = tau_mem/1e-4).
DEFAULT_DT = 1e-4
#: Step length assumed on import when neither the caller, the metadata nor τ_mem/r gives one.
FALLBACK_DT = 1e-3
#: Refractory steps of a neuron without hm2bp metadata: NIR neurons have no refractory clamp.
DEFAULT_T_REF = 0
DEFAULT_THETA_EPS = 1e-6
_REL_TOL = 1e-9  # metadata values are used only when they agree with the NIR parameters to this tolerance


class NIRConversionError(HM2BPError, ValueError):
    """A network or NIR graph cannot be converted: names the node/layer and the unsupported feature."""


def _require_nir():
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "hm2bp NIR support needs the optional 'nir' package (and h5py): pip install hm2bp[nir]"
        ) from exc
    return nir


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------


def _neuron_metadata(layer_index: int, kind: str, p: NeuronParams) -> dict[str, Any]:
    meta: dict[str, Any] = {
        _P + "layer_index": int(layer_index),
        _P + "layer": kind,
        _P + "v_th": float(p.v_th),
        _P + "theta_eps": float(p.theta_eps),
        _P + "tau_m": float(p.tau_m),
        _P + "tau_s": float(p.tau_s),
        _P + "t_ref": int(p.t_ref),
        _P + "delay_steps": 1,
        _P + "strict_threshold": True,
        _P + "reset": "zero",
        _P + "update_order": (
            "v-=v/tau_m; x-=x/tau_s; x+=I(t-1); v+=x/tau_s; refractory clamp; spike if v>v_th-theta_eps"
        ),
        _P + "dtype": "float32",
    }
    if p.window is not None:
        meta[_P + "window"] = int(p.window)
    return meta


def _cuba_lif(nir, shape: tuple[int, ...], p: NeuronParams, dt: float, meta: dict[str, Any], unit_w_in: bool):
    """The neuron node. Default (``unit_w_in=False``): ``w_in = tau_syn/dt = τs`` and the threshold scaled by
    τs, the form snnTorch, SpikingJelly and Norse load; ``unit_w_in=True``: ``w_in = 1`` (NIR potential =
    hm2bp's). Both simulate the same spikes (docs/nir.md)."""
    def full(value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    gain = 1.0 if unit_w_in else float(p.tau_s)
    return nir.CubaLIF(
        tau_syn=full(float(p.tau_s) * dt),
        tau_mem=full(float(p.tau_m) * dt),
        r=full(float(p.tau_m)),
        v_leak=full(0.0),
        v_threshold=full(gain * (float(p.v_th) - float(p.theta_eps))),
        v_reset=full(0.0),
        w_in=full(gain),
        metadata=meta,
    )


def _weight(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


class _Names:
    """Node names whose alphabetical order is the layer order (``nir.read`` returns nodes sorted by
    name, and nirtorch executes them in that order): ``l03a_linear`` < ``l03b_lif`` < ``l03c_lateral``."""

    def __init__(self, n_layers: int) -> None:
        self.width = max(2, len(str(max(n_layers - 1, 0))))

    def __call__(self, i: int, role: str, kind: str) -> str:
        return f"l{i:0{self.width}d}{role}_{kind}"


def _flatten_node(nir, i: int, shape: tuple[int, ...]):
    if len(shape) != 3:
        raise NIRConversionError(f"export_nir: layer {i} (Flatten) needs a [C, H, W] input, got {list(shape)}")
    node = nir.Flatten(
        input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1,
        metadata={_P + "layer_index": i, _P + "layer": "Flatten", _P + "order": "channel-major c*H*W + x*W + y"},
    )
    return node, (int(np.prod(shape)),)


def _synapse_node(nir, i: int, layer: torch.nn.Module, shape: tuple[int, ...]):
    """(kind, NIR synapse node, output shape) of a spiking layer."""
    if isinstance(layer, SpikingConv2d):
        if len(shape) != 3 or shape[0] != layer.in_channels:
            raise NIRConversionError(f"export_nir: layer {i} (SpikingConv2d) got input shape {list(shape)}")
        k = layer.kernel_size
        node = nir.Conv2d(
            input_shape=(shape[1], shape[2]), weight=_weight(layer.weight), stride=1, padding=0,
            dilation=1, groups=1, bias=np.zeros(layer.out_channels, dtype=np.float32),
            metadata={_P + "layer_index": i, _P + "correlation": "cross-correlation (no kernel flip), valid"},
        )
        return "conv", node, (layer.out_channels, shape[1] - k + 1, shape[2] - k + 1)
    if isinstance(layer, SpikingPool2d):
        p = int(layer.pool)
        if len(shape) != 3 or shape[1] % p or shape[2] % p:
            raise NIRConversionError(
                f"export_nir: layer {i} (SpikingPool2d, pool {p}) on a {list(shape)} map: the window does not "
                "divide the map, and NIR SumPool2d cannot express hm2bp's clipped edge windows (ceil output size)"
            )
        node = nir.SumPool2d(kernel_size=np.array([p, p]), stride=np.array([p, p]), padding=np.array([0, 0]),
                             metadata={_P + "layer_index": i, _P + "pool": p})
        return "pool", node, (shape[0], shape[1] // p, shape[2] // p)
    if isinstance(layer, SpikingLinear):
        if shape != (layer.in_features,):
            raise NIRConversionError(f"export_nir: layer {i} (SpikingLinear) got input shape {list(shape)}")
        return "linear", nir.Linear(weight=_weight(layer.weight), metadata={_P + "layer_index": i}), (layer.out_features,)
    raise NIRConversionError(
        f"export_nir: layer {i} of type {type(layer).__name__} has no NIR mapping "
        "(supported: SpikingConv2d, SpikingPool2d, Flatten, SpikingLinear)"
    )


def _layer_metadata(i: int, layer: torch.nn.Module) -> dict[str, Any]:
    params = typing.cast(NeuronParams, layer.params)  # every spiking layer carries its NeuronParams
    meta = _neuron_metadata(i, type(layer).__name__, params)
    if isinstance(layer, SpikingLinear):
        meta[_P + "output"] = bool(layer.output)
        meta[_P + "effect_ratio"] = bool(layer.effect_ratio)
        meta[_P + "desired"] = int(layer.desired)
        if layer.lateral_weight is not None:
            meta[_P + "lateral_strength"] = float(layer.lateral_strength or 0.0)
    return meta


def _lateral(layer: SpikingLinear) -> torch.Tensor:
    assert layer.lateral_weight is not None
    return layer.lateral_weight


def _lateral_node(nir, i: int, layer: SpikingLinear):
    return nir.Linear(
        weight=_weight(_lateral(layer)),
        metadata={_P + "layer_index": i, _P + "lateral_strength": float(layer.lateral_strength or 0.0),
                  _P + "fixed": True, _P + "delay_steps": 1},
    )


def export_nir(net: SpikingNetwork, *, dt: float = DEFAULT_DT, unit_w_in: bool = False) -> nir.NIRGraph:
    """Describe ``net`` as a NIR graph.

    Args:
        net: a :class:`SpikingNetwork` of ``SpikingConv2d``/``SpikingPool2d``/``Flatten``/``SpikingLinear``
            layers (e.g. from :func:`~hm2bp.nn.network.build_network`).
        dt: the length in seconds of one simulation step; NIR time constants are in seconds
            (``tau_mem = τ_m·dt``, ``tau_syn = τ_s·dt``). The default 1e-4 is the step snnTorch assumes.
        unit_w_in: write ``w_in = 1`` and ``v_threshold = ν − θ_eps`` (hm2bp's own potential) instead of
            ``w_in = tau_syn/dt`` with the threshold scaled by ``τ_s`` (what other libraries load).

    Returns:
        a ``nir.NIRGraph`` (cyclic when the output layer has lateral inhibition). Node names: ``input``,
        ``output`` and per engine layer ``i`` (zero-padded, so that sorting by name gives the layer order):
        ``l{i}a_conv``/``l{i}a_pool``/``l{i}a_linear`` (synapse), ``l{i}b_lif`` (neuron), ``l{i}c_lateral``
        (fixed recurrent inhibition), ``l{i}a_flatten``. Everything NIR cannot express is in each neuron
        node's ``metadata`` under ``hm2bp.*`` keys (docs/nir.md).

    Raises:
        NIRConversionError: a layer type or configuration NIR cannot describe (e.g. a pooling window
            that does not divide the map, whose clipped edge windows ``SumPool2d`` cannot express).
    """
    nir = _require_nir()
    if not isinstance(net, SpikingNetwork):
        raise TypeError(f"export_nir: expected a SpikingNetwork, got {type(net).__name__}")
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NIRConversionError(f"export_nir: dt must be a positive number of seconds, got {dt!r}")
    dt = float(dt)
    name = _Names(len(net.layers))
    shape = tuple(int(s) for s in net.input_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges: list[tuple[str, str]] = []
    prev = "input"
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Flatten):
            flat = name(i, "a", "flatten")
            nodes[flat], shape = _flatten_node(nir, i, shape)
            edges.append((prev, flat))
            prev = flat
            continue
        kind, node, shape = _synapse_node(nir, i, layer, shape)
        syn, lif = name(i, "a", kind), name(i, "b", "lif")
        nodes[syn] = node
        params = typing.cast(NeuronParams, layer.params)
        nodes[lif] = _cuba_lif(nir, shape, params, dt, _layer_metadata(i, layer), unit_w_in)
        edges += [(prev, syn), (syn, lif)]
        if isinstance(layer, SpikingLinear) and layer.lateral_weight is not None:
            lat = name(i, "c", "lateral")
            nodes[lat] = _lateral_node(nir, i, layer)
            edges += [(lif, lat), (lat, lif)]
        prev = lif
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    graph_meta = {
        _P + "format": FORMAT,
        _P + "arch": str(net.arch or _arch_string(net)),
        _P + "dt": dt,
        _P + "input_shape": np.array(net.input_shape, dtype=np.int64),
        _P + "time_major": True,
        _P + "w_in": "1" if unit_w_in else "tau_syn/dt",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_meta, type_check=True)


def save_nir(net: SpikingNetwork, path: str | os.PathLike[str], *, dt: float = DEFAULT_DT,
             unit_w_in: bool = False) -> None:
    """Export ``net`` (see :func:`export_nir`) and write it to ``path`` with ``nir.write`` (HDF5)."""
    nir = _require_nir()
    nir.write(os.fspath(path), export_nir(net, dt=dt, unit_w_in=unit_w_in))


def load_nir(path: str | os.PathLike[str], *, dt: float | None = None) -> SpikingNetwork:
    """Read a NIR file with ``nir.read`` and rebuild the network (see :func:`import_nir`)."""
    return import_nir(path, dt=dt)


def import_nir(graph: nir.NIRGraph | str | os.PathLike[str], *, dt: float | None = None) -> SpikingNetwork:
    """Rebuild an hm2bp network from a NIR graph or file; see :func:`hm2bp.nir_import.import_graph`."""
    from .nir_import import import_graph

    return import_graph(graph, dt=dt)


def _arch_string(net: SpikingNetwork) -> str:
    shape = tuple(net.input_shape)
    if len(shape) == 1:
        tokens = [str(shape[0])]
    else:
        c, h, w = shape
        tokens = [f"{h}x{w}" if c == 1 else f"{h}x{w}x{c}"]
    for layer in net.layers:
        if isinstance(layer, SpikingConv2d):
            tokens.append(f"{layer.out_channels}c{layer.kernel_size}")
        elif isinstance(layer, SpikingPool2d):
            tokens.append(f"p{layer.pool}")
        elif isinstance(layer, SpikingLinear):
            tokens.append(str(layer.out_features))
    return "-".join(tokens)
