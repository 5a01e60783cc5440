"""NIR (Neuromorphic Intermediate Representation) export and import of hm2bp networks.

``export_nir(net)`` describes a :class:`~hm2bp.nn.network.SpikingNetwork` with NIR primitives
(``Linear``, ``Conv2d``, ``SumPool2d``, ``Flatten``, ``CubaLIF``, a recurrent ``Linear`` for the
output lateral inhibition, ``Input``/``Output``); ``import_nir(graph_or_path)`` rebuilds a network;
``save_nir``/``load_nir`` go through ``nir.write``/``nir.read`` (HDF5). See ``docs/nir.md`` for the
parameter mapping and for what a simulator that ignores the ``hm2bp.*`` metadata gets differently.

The ``nir`` package is optional (``pip install hm2bp[nir]``); it is imported only inside these
functions, so ``import hm2bp`` stays light.

Mapping of one layer's neuron (spec §1.1; a = 1 − 1/τ_m, b = 1 − 1/τ_s per step, step = ``dt`` seconds)
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
import warnings
from collections.abc import Mapping
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
#: Step length (seconds) assumed when neither the caller nor the graph metadata gives one.
DEFAULT_DT = 1e-3
DEFAULT_T_REF = 2
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


def _cuba_lif(nir, shape: tuple[int, ...], p: NeuronParams, dt: float, meta: dict[str, Any]):
    def full(value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    return nir.CubaLIF(
        tau_syn=full(float(p.tau_s) * dt),
        tau_mem=full(float(p.tau_m) * dt),
        r=full(float(p.tau_m)),
        v_leak=full(0.0),
        v_threshold=full(float(p.v_th) - float(p.theta_eps)),
        v_reset=full(0.0),
        w_in=full(1.0),
        metadata=meta,
    )


def _weight(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


def export_nir(net: SpikingNetwork, *, dt: float = DEFAULT_DT) -> nir.NIRGraph:
    """Describe ``net`` as a NIR graph.

    Args:
        net: a :class:`SpikingNetwork` of ``SpikingConv2d``/``SpikingPool2d``/``Flatten``/``SpikingLinear``
            layers (e.g. from :func:`~hm2bp.nn.network.build_network`).
        dt: the length in seconds of one simulation step; NIR time constants are in seconds
            (``tau_mem = τ_m·dt``, ``tau_syn = τ_s·dt``).

    Returns:
        a ``nir.NIRGraph`` (cyclic when the output layer has lateral inhibition). Node names:
        ``input``, ``output``, and per engine layer ``i``: ``conv_i``/``pool_i``/``linear_i`` (synapse),
        ``lif_i`` (neuron), ``lateral_i`` (fixed recurrent inhibition), ``flatten_i``. Everything NIR
        cannot express is in each neuron node's ``metadata`` under ``hm2bp.*`` keys (docs/nir.md).

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

    shape = tuple(int(s) for s in net.input_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges: list[tuple[str, str]] = []
    prev = "input"
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Flatten):
            if len(shape) != 3:
                raise NIRConversionError(f"export_nir: layer {i} (Flatten) needs a [C, H, W] input, got {list(shape)}")
            name = f"flatten_{i}"
            nodes[name] = nir.Flatten(
                input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1,
                metadata={_P + "layer_index": i, _P + "layer": "Flatten",
                          _P + "order": "channel-major c*H*W + x*W + y"},
            )
            edges.append((prev, name))
            prev, shape = name, (int(np.prod(shape)),)
            continue
        if isinstance(layer, SpikingConv2d):
            if len(shape) != 3 or shape[0] != layer.in_channels:
                raise NIRConversionError(f"export_nir: layer {i} (SpikingConv2d) got input shape {list(shape)}")
            k = layer.kernel_size
            syn = f"conv_{i}"
            nodes[syn] = nir.Conv2d(
                input_shape=(shape[1], shape[2]), weight=_weight(layer.weight), stride=1, padding=0,
                dilation=1, groups=1, bias=np.zeros(layer.out_channels, dtype=np.float32),
                metadata={_P + "layer_index": i, _P + "correlation": "cross-correlation (no kernel flip), valid"},
            )
            shape = (layer.out_channels, shape[1] - k + 1, shape[2] - k + 1)
            kind = "SpikingConv2d"
        elif isinstance(layer, SpikingPool2d):
            p = int(layer.pool)
            if len(shape) != 3 or shape[1] % p or shape[2] % p:
                raise NIRConversionError(
                    f"export_nir: layer {i} (SpikingPool2d, pool {p}) on a {list(shape)} map: the window does not "
                    "divide the map, and NIR SumPool2d cannot express hm2bp's clipped edge windows (ceil output size)"
                )
            syn = f"pool_{i}"
            nodes[syn] = nir.SumPool2d(
                kernel_size=np.array([p, p]), stride=np.array([p, p]), padding=np.array([0, 0]),
                metadata={_P + "layer_index": i, _P + "pool": p},
            )
            shape = (shape[0], shape[1] // p, shape[2] // p)
            kind = "SpikingPool2d"
        elif isinstance(layer, SpikingLinear):
            if shape != (layer.in_features,):
                raise NIRConversionError(f"export_nir: layer {i} (SpikingLinear) got input shape {list(shape)}")
            syn = f"linear_{i}"
            nodes[syn] = nir.Linear(weight=_weight(layer.weight), metadata={_P + "layer_index": i})
            shape = (layer.out_features,)
            kind = "SpikingLinear"
        else:
            raise NIRConversionError(
                f"export_nir: layer {i} of type {type(layer).__name__} has no NIR mapping "
                "(supported: SpikingConv2d, SpikingPool2d, Flatten, SpikingLinear)"
            )
        lif = f"lif_{i}"
        meta = _neuron_metadata(i, kind, layer.params)
        if isinstance(layer, SpikingLinear):
            meta[_P + "output"] = bool(layer.output)
            meta[_P + "effect_ratio"] = bool(layer.effect_ratio)
            meta[_P + "desired"] = int(layer.desired)
            if layer.lateral_weight is not None:
                meta[_P + "lateral_strength"] = float(layer.lateral_strength or 0.0)
        nodes[lif] = _cuba_lif(nir, shape, layer.params, dt, meta)
        edges += [(prev, syn), (syn, lif)]
        if isinstance(layer, SpikingLinear) and layer.lateral_weight is not None:
            lat = f"lateral_{i}"
            nodes[lat] = nir.Linear(
                weight=_weight(layer.lateral_weight),
                metadata={_P + "layer_index": i, _P + "lateral_strength": float(layer.lateral_strength or 0.0),
                          _P + "fixed": True, _P + "delay_steps": 1},
            )
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
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_meta, type_check=True)


def save_nir(net: SpikingNetwork, path: str | os.PathLike[str], *, dt: float = DEFAULT_DT) -> None:
    """Export ``net`` (see :func:`export_nir`) and write it to ``path`` with ``nir.write`` (HDF5)."""
    nir = _require_nir()
    nir.write(os.fspath(path), export_nir(net, dt=dt))


def load_nir(path: str | os.PathLike[str], *, dt: float | None = None) -> SpikingNetwork:
    """Read a NIR file with ``nir.read`` and rebuild the network (see :func:`import_nir`)."""
    return import_nir(path, dt=dt)


# --------------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------------


def _err(message: str) -> NIRConversionError:
    return NIRConversionError("import_nir: " + message)


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


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(1.0, abs(a), abs(b))


def _snap(x: float) -> float:
    """Undo float noise from seconds↔steps conversions (e.g. 0.064/0.001) without changing real values."""
    return float(f"{x:.12g}")


def _uniform(node_name: str, node: Any, field: str, shape: tuple[int, ...]) -> float:
    arr = np.asarray(getattr(node, field), dtype=np.float64)
    if arr.size != 1 and arr.size != int(np.prod(shape)):
        raise _err(
            f"node {node_name!r} ({type(node).__name__}): parameter {field!r} has shape "
            f"{list(arr.shape)}, the layer has {list(shape)} neurons"
        )
    flat = arr.reshape(-1)
    if not np.all(np.isfinite(flat)):
        raise _err(f"node {node_name!r}: parameter {field!r} is not finite")
    if np.any(flat != flat[0]):
        raise _err(
            f"node {node_name!r} ({type(node).__name__}): parameter {field!r} varies across neurons "
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
        stacklevel=3,
    )
    return derived


def _neuron_params(nir, name: str, node: Any, shape: tuple[int, ...], dt: float) -> NeuronParams:
    meta = getattr(node, "metadata", None)
    if isinstance(node, nir.CubaLIF):
        tau_mem = _uniform(name, node, "tau_mem", shape)
        tau_syn = _uniform(name, node, "tau_syn", shape)
        r = _uniform(name, node, "r", shape)
        w_in = _uniform(name, node, "w_in", shape)
    elif isinstance(node, nir.LIF):
        # No synaptic filter: τ_s = 1 step makes x(t) = I(t−1) exactly (x − x/1 = 0).
        tau_mem = _uniform(name, node, "tau", shape)
        tau_syn = dt
        r = _uniform(name, node, "r", shape)
        w_in = 1.0
    else:  # pragma: no cover - filtered by the caller
        raise _err(f"node {name!r}: unsupported neuron type {type(node).__name__}")
    for field in ("v_leak", "v_reset"):
        value = _uniform(name, node, field, shape)
        if value != 0.0:
            raise _err(
                f"node {name!r} ({type(node).__name__}): {field} = {value} is not supported "
                "(hm2bp neurons rest and reset at 0)"
            )
    v_threshold = _uniform(name, node, "v_threshold", shape)
    if tau_mem <= 0 or tau_syn <= 0:
        raise _err(f"node {name!r}: time constants must be positive")
    # Forward Euler per step: v ← (1 − dt/τ_mem)·v + (dt/τ_mem)·r·w_in·(filtered input); hm2bp adds x/τ_s,
    # so the NIR potential is g times hm2bp's, g = r·w_in·dt/τ_mem; fold g into the threshold.
    g = r * w_in * dt / tau_mem
    if _close(g, 1.0):
        g = 1.0
    if not (g > 0 and math.isfinite(g)):
        raise _err(
            f"node {name!r}: r·w_in must be positive (got r = {r}, w_in = {w_in})"
        )
    threshold = v_threshold / g
    if not threshold > 0:
        raise _err(f"node {name!r}: v_threshold = {v_threshold} must be positive")
    tau_m = _from_meta(meta, "tau_m", _snap(tau_mem / dt), name)
    tau_s = _from_meta(meta, "tau_s", _snap(tau_syn / dt), name)
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
                f"v_threshold = {v_threshold}; using v_threshold", stacklevel=3,
            )
        v_th = threshold + theta_eps
    window = _meta_get(meta, "window")
    try:
        return NeuronParams(v_th, tau_m, tau_s, t_ref, theta_eps, None if window is None else int(window))
    except ValueError as exc:
        raise _err(f"node {name!r}: {exc}") from exc


def _zero_bias(name: str, node: Any) -> None:
    bias = getattr(node, "bias", None)
    if bias is not None and np.any(np.asarray(bias) != 0):
        raise _err(
            f"node {name!r} ({type(node).__name__}) has a non-zero bias; hm2bp neurons have no bias"
        )


def _pair(name: str, value: Any, what: str) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(value)).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2:
        raise _err(f"node {name!r}: cannot read {what} = {value!r}")
    return int(arr[0]), int(arr[1])


def import_nir(graph: nir.NIRGraph | str | os.PathLike[str], *, dt: float | None = None) -> SpikingNetwork:
    """Rebuild an hm2bp network from a NIR graph (or a NIR file, read with ``nir.read``).

    Supported: one ``Input`` → a chain of synapse + neuron pairs → one ``Output``, where a synapse is
    ``Linear``/``Affine`` (zero bias), ``Conv2d`` (stride 1, no padding, dilation 1, groups 1, square
    kernel, zero bias) or ``SumPool2d`` (square, kernel = stride, no padding, dividing the map); a
    neuron is ``CubaLIF`` or ``LIF`` (``v_leak = v_reset = 0``, one value per layer); ``Flatten``
    between the 3-D and the 1-D part; optionally, on fully connected layers, a self-recurrent ``Linear``
    of the lateral-inhibition form ``−w0·(1 − I)``. The last layer must be fully connected: it becomes
    the output layer.

    Parameters come from the NIR fields (``τ_m = tau_mem/dt``, ``τ_s = tau_syn/dt``, threshold
    ``v_threshold/(r·w_in·dt/tau_mem)``); the ``hm2bp.*`` metadata written by :func:`export_nir`
    supplies the exact values and what NIR cannot express. Without it: ``t_ref = 2``,
    ``theta_eps = 1e-6`` (with ``ν = threshold + theta_eps``, so the spike test stays
    ``v > v_threshold``), a one-step synaptic delay, and for ``LIF`` nodes ``τ_s = 1`` step.

    Args:
        graph: a ``nir.NIRGraph`` or the path of a NIR (HDF5) file.
        dt: step length in seconds; default: the graph's ``hm2bp.dt`` metadata, else 1e-3.

    Raises:
        NIRConversionError: naming the node and the unsupported type, structure or parameter.
    """
    nir = _require_nir()
    if isinstance(graph, (str, os.PathLike)):
        graph = nir.read(os.fspath(graph))
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"import_nir: expected a nir.NIRGraph or a file path, got {type(graph).__name__}")
    gdt = _meta_get(graph.metadata, "dt")
    if dt is None:
        dt = float(gdt) if gdt is not None else DEFAULT_DT
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise _err(f"dt must be a positive number of seconds, got {dt!r}")
    dt = float(dt)

    nodes = dict(graph.nodes)
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    pred: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in graph.edges:
        for end in (a, b):
            if end not in nodes:
                raise _err(f"edge ({a!r}, {b!r}) names a node {end!r} that is not in the graph")
        succ[a].append(b)
        pred[b].append(a)

    for name, node in nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise _err(f"node {name!r} is a nested NIRGraph, which is not supported")
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise _err(
            f"need exactly one Input and one Output node, found inputs {inputs} and outputs {outputs}"
        )

    def only_successor(name: str, exclude: tuple[str, ...] = ()) -> str:
        nxt = [s for s in succ[name] if s not in exclude]
        if len(nxt) != 1:
            raise _err(
                f"node {name!r} ({type(nodes[name]).__name__}) feeds {nxt}; only a feed-forward chain "
                "(plus a self-recurrent lateral Linear on a neuron) is supported"
            )
        return nxt[0]

    in_node = nodes[inputs[0]]
    in_shape = tuple(int(s) for s in np.asarray(in_node.input_type["input"]).reshape(-1))
    if len(in_shape) not in (1, 3) or min(in_shape) < 1:
        raise _err(
            f"Input {inputs[0]!r} has shape {list(in_shape)}; hm2bp needs [N] or [C, H, W]"
        )

    gen = torch.Generator().manual_seed(0)  # throw-away init; keeps the global RNG untouched
    layers: list[torch.nn.Module] = []
    visited: set[str] = {inputs[0]}
    shape = in_shape
    cur = only_successor(inputs[0])
    while True:
        if cur in visited:
            raise _err(f"the chain returns to node {cur!r}: unsupported cycle")
        visited.add(cur)
        node = nodes[cur]
        kind = type(node).__name__
        if isinstance(node, nir.Output):
            out_shape = node.output_type.get("output") if isinstance(node.output_type, dict) else None
            if out_shape is not None and tuple(int(s) for s in np.asarray(out_shape).reshape(-1)) != shape:
                raise _err(f"Output {cur!r} has shape {list(np.asarray(out_shape))}, the net gives {list(shape)}")
            break
        if len(pred[cur]) != 1:
            raise _err(f"node {cur!r} ({kind}) has inputs {pred[cur]}; expected exactly one")
        if isinstance(node, nir.Flatten):
            if len(shape) != 3:
                raise _err(f"Flatten {cur!r} on a {list(shape)} input; expected [C, H, W]")
            start, end = int(node.start_dim), int(node.end_dim)
            if not (-3 <= start < 3 and -3 <= end < 3 and start % 3 == 0 and end % 3 == 2):
                raise _err(
                    f"Flatten {cur!r} (start_dim {start}, end_dim {end}) on the {list(shape)} map does not flatten "
                    "it to 1-D; NIR types carry no batch dimension, so a full flatten is start_dim=0, end_dim=-1"
                )
            flat = (int(np.prod(shape)),)
            layers.append(Flatten())
            shape = flat
            cur = only_successor(cur)
            continue

        # synapse
        if isinstance(node, (nir.Linear, nir.Affine)):
            _zero_bias(cur, node)
            w = np.asarray(node.weight, dtype=np.float32)
            if w.ndim != 2:
                raise _err(f"{kind} {cur!r}: weight must be 2-D [out, in], got {list(w.shape)}")
            if len(shape) != 1:
                raise _err(
                    f"{kind} {cur!r} receives a {list(shape)} map; insert a Flatten node before it"
                )
            if w.shape[1] != shape[0]:
                raise _err(f"{kind} {cur!r}: weight {list(w.shape)} does not take {shape[0]} inputs")
            syn = ("fc", w)
            new_shape: tuple[int, ...] = (w.shape[0],)
        elif isinstance(node, nir.Conv2d):
            _zero_bias(cur, node)
            w = np.asarray(node.weight, dtype=np.float32)
            if w.ndim != 4 or w.shape[2] != w.shape[3]:
                raise _err(f"Conv2d {cur!r}: need a square kernel [K, C, k, k], got {list(w.shape)}")
            if _pair(cur, node.stride, "stride") != (1, 1):
                raise _err(f"Conv2d {cur!r}: stride {node.stride} is not supported (only 1)")
            pad = node.padding
            k = w.shape[2]
            if isinstance(pad, (str, bytes)):
                pad = pad.decode() if isinstance(pad, bytes) else pad
                if not (pad == "valid" or (pad == "same" and k == 1)):
                    raise _err(f"Conv2d {cur!r}: padding {pad!r} is not supported (only 0/'valid')")
            elif _pair(cur, pad, "padding") != (0, 0):
                raise _err(f"Conv2d {cur!r}: padding {pad} is not supported (only 0)")
            if _pair(cur, node.dilation, "dilation") != (1, 1):
                raise _err(f"Conv2d {cur!r}: dilation {node.dilation} is not supported (only 1)")
            if int(node.groups) != 1:
                raise _err(f"Conv2d {cur!r}: groups = {node.groups} is not supported (only 1)")
            if len(shape) != 3 or shape[0] != w.shape[1] or min(shape[1:]) < k:
                raise _err(f"Conv2d {cur!r}: weight {list(w.shape)} does not fit the input {list(shape)}")
            syn = ("conv", w)
            new_shape = (w.shape[0], shape[1] - k + 1, shape[2] - k + 1)
        elif isinstance(node, nir.SumPool2d):
            kh, kw = _pair(cur, node.kernel_size, "kernel_size")
            sh, sw = _pair(cur, node.stride, "stride")
            if not (kh == kw == sh == sw) or kh < 1:
                raise _err(
                    f"SumPool2d {cur!r}: kernel {[kh, kw]} / stride {[sh, sw]} not supported "
                    "(need square non-overlapping windows, kernel = stride)"
                )
            if _pair(cur, node.padding, "padding") != (0, 0):
                raise _err(f"SumPool2d {cur!r}: padding {node.padding} is not supported (only 0)")
            if len(shape) != 3 or shape[1] % kh or shape[2] % kh:
                raise _err(
                    f"SumPool2d {cur!r}: window {kh} must divide the {list(shape)} map"
                )
            syn = ("pool", kh)
            new_shape = (shape[0], shape[1] // kh, shape[2] // kh)
        else:
            raise _err(
                f"node {cur!r} has unsupported type {kind} (supported: Input, Output, Linear, Affine "
                "with zero bias, Conv2d, SumPool2d, Flatten, CubaLIF, LIF)"
            )

        # neuron
        syn_name = cur
        cur = only_successor(syn_name)
        node = nodes[cur]
        kind = type(node).__name__
        if not isinstance(node, (nir.CubaLIF, nir.LIF)):
            raise _err(
                f"node {cur!r} after synapse {syn_name!r} has unsupported type {kind} "
                "(expected a CubaLIF or LIF neuron)"
            )
        visited.add(cur)
        lateral_name = None
        others = [p for p in pred[cur] if p != syn_name]
        if others:
            lat = others[0]
            lat_node = nodes[lat]
            if (
                len(others) != 1 or syn[0] != "fc"
                or not isinstance(lat_node, (nir.Linear, nir.Affine))
                or pred[lat] != [cur] or succ[lat] != [cur]
            ):
                raise _err(
                    f"neuron {cur!r} has extra inputs {others}; only one self-recurrent lateral Linear "
                    "on a fully connected layer is supported"
                )
            lateral_name = lat
            visited.add(lat)
        params = _neuron_params(nir, cur, node, new_shape, dt)
        meta = getattr(node, "metadata", None)
        if syn[0] == "fc":
            w = syn[1]
            w0 = None
            if lateral_name is not None:
                w0 = _lateral_strength(nir, lateral_name, nodes[lateral_name], w.shape[0], meta)
            eff = _meta_get(meta, "effect_ratio")
            desired = _meta_get(meta, "desired")
            layer: torch.nn.Module = SpikingLinear(
                w.shape[1], w.shape[0], params, lateral_inhibition=w0,
                effect_ratio=True if eff is None else bool(eff), desired=35 if desired is None else int(desired),
                generator=gen,
            )
        elif syn[0] == "conv":
            w = syn[1]
            layer = SpikingConv2d(
                w.shape[1], w.shape[0], w.shape[2], params, generator=gen,
            )
        else:
            layer = SpikingPool2d(syn[1], params)
        if syn[0] != "pool":
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(syn[1])))
        layers.append(layer)
        shape = new_shape
        cur = only_successor(cur, exclude=(lateral_name,) if lateral_name else ())

    if not layers or not isinstance(layers[-1], SpikingLinear):
        raise _err("the last layer must be fully connected (Linear/Affine + neuron): it is the output layer")
    unvisited = sorted(set(nodes) - visited)
    if unvisited:
        raise _err(f"nodes {unvisited} are not on the Input → Output chain")
    last = layers[-1]
    last.output = True
    net = SpikingNetwork(layers, in_shape, "")
    net.arch = _arch_string(net)
    return net


def _lateral_strength(nir, name: str, node: Any, n: int, neuron_meta: Any) -> float:
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

