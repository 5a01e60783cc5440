"""NIR interop (hm2bp.nir_io): export → (write → read) → import gives the same spikes, the file is valid
NIR, the documented parameter mapping reproduces the dynamics, and unsupported graphs fail clearly."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.nir

nir = pytest.importorskip("nir", reason="the optional 'nir' package is not installed (pip install hm2bp[nir])")
h5py = pytest.importorskip("h5py", reason="nir.write/nir.read need h5py")

from hm2bp.nir_io import NIRConversionError, export_nir, import_nir, load_nir, save_nir  # noqa: E402
from hm2bp.nn.layers import Flatten, SpikingConv2d, SpikingLinear, SpikingPool2d  # noqa: E402
from hm2bp.nn.network import build_network  # noqa: E402

T = 60
FC_ARCH, FC_TH = "20-16-5", [1.5, 1.5]
CONV_ARCH, CONV_TH = "12x12-3c3-p2-8-4", [1.0, 1.0, 1.5, 1.5]


def _net(arch, th, seed, **kw):
    return build_network(arch, th, generator=torch.Generator().manual_seed(seed), **kw)


def _spikes(net, seed, batch=3, rate=0.3, dtype=torch.float32):
    g = torch.Generator().manual_seed(1000 + seed)
    return (torch.rand(T, batch, *net.input_shape, generator=g) < rate).to(dtype)


def _run(net, x):
    with torch.no_grad():
        out = net(x, record=True)
    return out, list(net.hidden_spikes)


def _assert_same_spikes(a, b, x, require_spikes=True):
    out_a, hid_a = _run(a, x)
    out_b, hid_b = _run(b, x)
    assert len(hid_a) == len(hid_b)
    for n, (ha, hb) in enumerate(zip(hid_a, hid_b)):
        if require_spikes:
            assert ha.sum() > 0, f"layer {n} is silent: choose other thresholds"
        assert torch.equal(ha, hb), f"layer {n}: {int((ha != hb).sum())} spikes differ"
    assert torch.equal(out_a, out_b)


def _same_structure(a, b):
    assert a.input_shape == b.input_shape and a.arch == b.arch
    assert [type(l) for l in a.layers] == [type(l) for l in b.layers]
    for la, lb in zip(a.layers, b.layers):
        if hasattr(la, "params"):
            assert la.params == lb.params
        if hasattr(la, "weight"):
            assert torch.equal(la.weight, lb.weight)
        if isinstance(la, SpikingLinear):
            assert la.output == lb.output and la.lateral_strength == lb.lateral_strength
            assert (la.lateral_weight is None) == (lb.lateral_weight is None)
            if la.lateral_weight is not None:
                assert torch.equal(la.lateral_weight, lb.lateral_weight)
        if isinstance(la, SpikingPool2d):
            assert la.pool == lb.pool


# ------------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fc_round_trip_through_file_same_spikes(seed, tmp_path):
    net = _net(FC_ARCH, FC_TH, seed)
    assert net.output_layer.lateral_weight is not None
    path = tmp_path / "fc.nir"
    save_nir(net, path)
    back = load_nir(path)
    _same_structure(net, back)
    _assert_same_spikes(net, back, _spikes(net, seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conv_round_trip_through_file_same_spikes(seed, tmp_path):
    net = _net(CONV_ARCH, CONV_TH, seed)
    path = tmp_path / "conv.nir"
    save_nir(net, path)
    back = import_nir(nir.read(path))
    _same_structure(net, back)
    assert [type(l) for l in back.layers] == [SpikingConv2d, SpikingPool2d, Flatten, SpikingLinear, SpikingLinear]
    assert back.layers[0].params.theta_eps == 0.0 and back.layers[1].params.theta_eps == 1e-6
    _assert_same_spikes(net, back, _spikes(net, seed))


def test_in_memory_round_trip_non_default_constants():
    net = _net("16-12-6", [0.6, 0.8], 7, tau_m=20.0, tau_s=3.0, t_ref=1, lateral_inhibition=0.5)
    back = import_nir(export_nir(net, dt=2.5e-4))
    _same_structure(net, back)
    assert back.output_layer.lateral_strength == 0.5
    assert back.layers[0].params.tau_m == 20.0 and back.layers[0].params.t_ref == 1
    _assert_same_spikes(net, back, _spikes(net, 7))


def test_round_trip_without_lateral_inhibition(tmp_path):
    net = _net(FC_ARCH, FC_TH, 11, lateral_inhibition=None)
    save_nir(net, tmp_path / "n.nir")
    graph = nir.read(tmp_path / "n.nir")
    assert not any(k.startswith("lateral") for k in graph.nodes)
    back = import_nir(graph)
    assert back.output_layer.lateral_weight is None
    _assert_same_spikes(net, back, _spikes(net, 11))


def test_dt_changes_seconds_not_steps(tmp_path):
    net = _net(FC_ARCH, FC_TH, 4)
    save_nir(net, tmp_path / "dt.nir", dt=1e-3)
    graph = nir.read(tmp_path / "dt.nir")
    lif = graph.nodes["l00b_lif"]
    assert np.allclose(lif.tau_mem, 64 * 1e-3) and np.allclose(lif.tau_syn, 8 * 1e-3)
    back = load_nir(tmp_path / "dt.nir")  # dt comes from the graph metadata
    _assert_same_spikes(net, back, _spikes(net, 4))


# ------------------------------------------------------------------------------------------------
# the file and the graph
# ------------------------------------------------------------------------------------------------


def _check_graph(graph):
    names = set(graph.nodes)
    for a, b in graph.edges:
        assert a in names and b in names, (a, b)
    assert len(set(graph.edges)) == len(graph.edges)
    assert [type(n) for n in graph.inputs.values()] == [nir.Input]
    assert [type(n) for n in graph.outputs.values()] == [nir.Output]
    for a, b in graph.edges:  # shapes chain along every edge
        out = np.asarray(graph.nodes[a].output_type["output"])
        inp = np.asarray(graph.nodes[b].input_type["input"])
        assert np.array_equal(out, inp), f"{a} -> {b}: {out} vs {inp}"
    assert graph.check_types()


def test_written_file_is_valid_nir_with_consistent_graph(tmp_path):
    net = _net(CONV_ARCH, CONV_TH, 0)
    path = tmp_path / "conv.nir"
    save_nir(net, path)
    with h5py.File(path, "r") as f:
        assert "version" in f and "node" in f
    graph = nir.read(path)  # nir's own reader, with its type check
    assert isinstance(graph, nir.NIRGraph)
    _check_graph(graph)
    types = {k: type(n).__name__ for k, n in graph.nodes.items()}
    assert types == {
        "input": "Input", "l00a_conv": "Conv2d", "l00b_lif": "CubaLIF", "l01a_pool": "SumPool2d", "l01b_lif": "CubaLIF",
        "l02a_flatten": "Flatten", "l03a_linear": "Linear", "l03b_lif": "CubaLIF", "l04a_linear": "Linear", "l04b_lif": "CubaLIF",
        "l04c_lateral": "Linear", "output": "Output",
    }
    assert list(types) == sorted(types)  # nir.read's (alphabetical) order is the layer order
    # the lateral inhibition is a cycle l04b_lif -> l04c_lateral -> l04b_lif
    assert ("l04b_lif", "l04c_lateral") in graph.edges and ("l04c_lateral", "l04b_lif") in graph.edges
    assert np.array_equal(graph.nodes["input"].input_type["input"], [1, 12, 12])
    assert np.array_equal(graph.nodes["output"].output_type["output"], [4])
    conv = graph.nodes["l00a_conv"]
    assert tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0) and tuple(conv.dilation) == (1, 1)
    assert int(conv.groups) == 1 and not np.any(conv.bias)
    assert np.array_equal(conv.weight, net.layers[0].weight.detach().numpy())
    pool = graph.nodes["l01a_pool"]
    assert list(pool.kernel_size) == [2, 2] and list(pool.stride) == [2, 2] and list(pool.padding) == [0, 0]
    assert np.array_equal(graph.nodes["l04c_lateral"].weight, -(1 - np.eye(4, dtype=np.float32)))
    # the documented mapping
    for name, layer in [(f"l{i:02d}b_lif", net.layers[i]) for i in (0, 1, 3, 4)]:
        lif, p = graph.nodes[name], layer.params
        assert np.allclose(lif.tau_mem, p.tau_m * 1e-4) and np.allclose(lif.tau_syn, p.tau_s * 1e-4)
        assert np.all(lif.r == p.tau_m) and np.all(lif.w_in == p.tau_s) and not np.any(lif.v_leak)
        assert not np.any(lif.v_reset) and np.allclose(lif.r, lif.tau_mem / 1e-4)  # snnTorch's assertion
        assert np.all(lif.v_threshold == p.tau_s * (p.v_th - p.theta_eps))
        meta = lif.metadata
        assert int(meta["hm2bp.t_ref"]) == 2 and int(meta["hm2bp.delay_steps"]) == 1
        assert float(meta["hm2bp.theta_eps"]) == p.theta_eps and float(meta["hm2bp.v_th"]) == p.v_th
        assert float(meta["hm2bp.tau_m"]) == 64.0 and float(meta["hm2bp.tau_s"]) == 8.0
    assert graph.metadata["hm2bp.arch"] == CONV_ARCH and float(graph.metadata["hm2bp.dt"]) == 1e-4


def test_fc_graph_consistent_in_memory():
    graph = export_nir(_net(FC_ARCH, FC_TH, 0))
    _check_graph(graph)
    assert list(graph.nodes) == ["input", "l00a_linear", "l00b_lif", "l01a_linear", "l01b_lif", "l01c_lateral",
                                 "output"]


# ------------------------------------------------------------------------------------------------
# the mapping: a plain NIR interpreter (forward Euler over dt on the NIR fields) reproduces the spikes
# ------------------------------------------------------------------------------------------------


def _interpret(graph, x, dt, *, t_ref=None):
    """Simulate a NIR chain in float64 from its NIR fields only, with a one-step synaptic delay:
    I ← I + dt/τ_syn·(w_in·S(t−1) − I), then v ← v + dt/τ_mem·(v_leak − v + r·I) (CubaLIF) or
    v ← v + dt/τ·(v_leak − v + r·S(t−1)) (LIF); refractory clamp; spike on v > v_threshold; reset to
    v_reset. ``t_ref``: the clamp in steps (None: the node's hm2bp.t_ref metadata, else 0)."""
    nodes, edges = graph.nodes, graph.edges
    preds = {k: [a for a, b in edges if b == k] for k in nodes}
    neurons = [k for k, n in nodes.items() if isinstance(n, (nir.CubaLIF, nir.LIF))]
    (inp,) = graph.inputs
    (outp,) = graph.outputs
    B = x.shape[1]

    def signal(name, spikes):  # what a node emits, given the spikes of the input and of every neuron
        node = nodes[name]
        if name == inp or name in neurons:
            return spikes[name]
        (src,) = preds[name]
        s = signal(src, spikes)
        if isinstance(node, (nir.Linear, nir.Affine)):
            return s @ torch.as_tensor(np.asarray(node.weight, dtype=np.float64)).t()
        if isinstance(node, nir.Conv2d):
            return torch.nn.functional.conv2d(s, torch.as_tensor(np.asarray(node.weight, dtype=np.float64)))
        if isinstance(node, nir.SumPool2d):
            k = int(np.asarray(node.kernel_size).reshape(-1)[0])
            return torch.nn.functional.avg_pool2d(s, k) * (k * k)
        if isinstance(node, nir.Flatten):
            return s.reshape(B, -1)
        raise AssertionError(type(node))

    def f64(node, field):
        return torch.as_tensor(np.asarray(getattr(node, field), dtype=np.float64))

    state = {}
    for k in neurons:
        shape = (B, *np.asarray(nodes[k].output_type["output"]).astype(int))
        state[k] = dict(I=torch.zeros(shape, dtype=torch.float64), v=torch.zeros(shape, dtype=torch.float64),
                        r=torch.zeros(shape, dtype=torch.int64))
    prev = {inp: torch.zeros_like(x[0]), **{k: torch.zeros_like(state[k]["v"]) for k in neurons}}
    rec = {k: [] for k in neurons}
    for t in range(T):
        now = {inp: x[t]}
        for k in neurons:
            n, st = nodes[k], state[k]
            S = sum(signal(p, prev) for p in preds[k])  # drive of step t−1
            if isinstance(n, nir.CubaLIF):
                st["I"] = st["I"] + dt / f64(n, "tau_syn") * (f64(n, "w_in") * S - st["I"])
                st["v"] = st["v"] + dt / f64(n, "tau_mem") * (f64(n, "v_leak") - st["v"] + f64(n, "r") * st["I"])
            else:
                st["v"] = st["v"] + dt / f64(n, "tau") * (f64(n, "v_leak") - st["v"] + f64(n, "r") * S)
            tr = int(n.metadata.get("hm2bp.t_ref", 0)) if t_ref is None else t_ref
            clamped = st["r"] > 0
            st["v"] = torch.where(clamped, torch.zeros_like(st["v"]), st["v"])
            st["r"] = st["r"] - clamped.long()
            spiked = st["v"] > f64(n, "v_threshold")
            st["r"] = torch.where(spiked, torch.full_like(st["r"], tr), st["r"])
            st["v"] = torch.where(spiked, f64(n, "v_reset").expand_as(st["v"]), st["v"])
            now[k] = spiked.double()
            rec[k].append(now[k])
        prev = now
    (last,) = preds[outp]
    return {k: torch.stack(v) for k, v in rec.items()}, torch.stack(rec[last])


@pytest.mark.parametrize("arch,th,seed", [(FC_ARCH, FC_TH, 0), (FC_ARCH, FC_TH, 1), (CONV_ARCH, CONV_TH, 2)])
def test_nir_parameters_reproduce_the_dynamics(arch, th, seed):
    """Forward Euler on the exported NIR fields (+ the 1-step delay and T_ref from metadata) gives the
    engine's spikes (both in float64); without the refractory clamp (a metadata-blind simulator) they
    differ."""
    net = _net(arch, th, seed).double()
    graph = export_nir(net, dt=1e-3)
    x = _spikes(net, seed, dtype=torch.float64)
    out, hidden = _run(net, x)
    per_node, nir_out = _interpret(graph, x, 1e-3)
    lifs = [k for k in graph.nodes if k.endswith("_lif")]
    for k, h in zip(lifs, hidden):
        assert torch.equal(per_node[k], h), f"{k}: {int((per_node[k] != h).sum())} spikes differ"
    assert torch.equal(nir_out, out)
    blind, _ = _interpret(graph, x, 1e-3, t_ref=0)  # without the refractory clamp (metadata ignored)
    assert not torch.equal(blind[lifs[0]], hidden[0])


# ------------------------------------------------------------------------------------------------
# graphs written by other tools
# ------------------------------------------------------------------------------------------------


def _foreign_chain(seed, n_in=12, n_hid=10, n_out=4, dt=1e-4):
    rng = np.random.default_rng(seed)
    w1 = rng.uniform(-1, 1, (n_hid, n_in))
    w2 = rng.uniform(-1, 1, (n_out, n_hid))
    tau_mem, tau_syn = 5e-3, 1e-3  # 50 and 10 steps of dt
    cuba = nir.CubaLIF(
        tau_syn=np.full(n_hid, tau_syn), tau_mem=np.full(n_hid, tau_mem), r=np.full(n_hid, 2.0 * tau_mem / dt),
        v_leak=np.zeros(n_hid), v_threshold=np.full(n_hid, 0.3), v_reset=np.zeros(n_hid), w_in=np.full(n_hid, 1.5),
    )
    lif = nir.LIF(tau=np.full(n_out, 2e-3), r=np.full(n_out, 10.0), v_leak=np.zeros(n_out),
                  v_threshold=np.full(n_out, 0.5), v_reset=np.zeros(n_out))
    graph = nir.NIRGraph.from_list(nir.Affine(weight=w1, bias=np.zeros(n_hid)), cuba, nir.Linear(weight=w2), lif)
    return graph, w1, w2


def test_import_foreign_feed_forward_chain(tmp_path):
    graph, w1, w2 = _foreign_chain(3)
    nir.write(tmp_path / "foreign.nir", graph)
    net = import_nir(tmp_path / "foreign.nir", dt=1e-4)
    assert net.arch == "12-10-4" and net.input_shape == (12,)
    hid, out = net.layers
    assert isinstance(hid, SpikingLinear) and isinstance(out, SpikingLinear) and out.output and not hid.output
    assert out.lateral_weight is None
    assert hid.params.tau_m == 50.0 and hid.params.tau_s == 10.0 and hid.params.t_ref == 0  # NIR has no clamp
    assert hid.params.theta_eps == 1e-6 and out.params.tau_s == 1.0 and out.params.tau_m == 20.0
    # v_nir = g·v_hm2bp with g = r·w_in·dt/tau_mem = 3 (CubaLIF) and r·dt/tau = 0.5 (LIF)
    assert hid.params.v_th == pytest.approx(0.3 / 3 + 1e-6, rel=1e-12)
    assert out.params.v_th == pytest.approx(0.5 / 0.5 + 1e-6, rel=1e-12)
    assert torch.equal(hid.weight, torch.as_tensor(w1, dtype=torch.float32))
    assert torch.equal(out.weight, torch.as_tensor(w2, dtype=torch.float32))
    # and it simulates what the NIR fields say (forward Euler, the default 1-step delay, no refractory clamp)
    graph64 = nir.NIRGraph.from_list(
        nir.Linear(weight=w1.astype(np.float32).astype(np.float64)), graph.nodes["cubalif"],
        nir.Linear(weight=w2.astype(np.float32).astype(np.float64)), graph.nodes["lif"],
    )
    for node in (graph64.nodes["cubalif"], graph64.nodes["lif"]):
        node.metadata = {"hm2bp.t_ref": 0}
    x = (torch.rand(T, 4, 12, generator=torch.Generator().manual_seed(5)) < 0.3).double()
    per_node, nir_out = _interpret(graph64, x, 1e-4)
    out64, hidden = _run(net.double(), x)
    assert hidden[0].sum() > 0 and out64.sum() > 0
    assert torch.equal(per_node["cubalif"], hidden[0]) and torch.equal(nir_out, out64)


# ------------------------------------------------------------------------------------------------
# unsupported graphs and networks
# ------------------------------------------------------------------------------------------------


def _cuba(n, **over):
    kw = dict(tau_syn=np.full(n, 8e-3), tau_mem=np.full(n, 64e-3), r=np.full(n, 64.0), v_leak=np.zeros(n),
              v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.ones(n))
    kw.update(over)
    return nir.CubaLIF(**kw)


def _expect(graph, *fragments):
    with pytest.raises(NIRConversionError) as info:
        import_nir(graph)
    for frag in fragments:
        assert frag in str(info.value), str(info.value)


def test_unsupported_bias():
    g = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((3, 4)), bias=np.array([0.0, 0.1, 0.0])), _cuba(3))
    _expect(g, "affine", "bias")


@pytest.mark.parametrize("field", ["v_leak", "v_reset"])
def test_unsupported_leak_or_reset(field):
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((3, 4))), _cuba(3, **{field: np.full(3, 0.2)}))
    _expect(g, "cubalif", field)


def test_unsupported_per_neuron_parameters():
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((3, 4))), _cuba(3, tau_mem=np.array([0.064, 0.064, 0.03])))
    _expect(g, "tau_mem", "varies")


@pytest.mark.parametrize("over,frag", [(dict(stride=2), "stride"), (dict(padding=1), "padding"),
                                       (dict(dilation=2), "dilation")])
def test_unsupported_conv(over, frag):
    kw = dict(input_shape=(8, 8), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=1, groups=1,
              bias=np.zeros(2))
    kw.update(over)
    conv = nir.Conv2d(**kw)
    shape = tuple(conv.output_type["output"])
    g = nir.NIRGraph.from_list(conv, _cuba(shape), nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0),
                               nir.Linear(weight=np.ones((3, int(np.prod(shape))))), _cuba(3))
    _expect(g, "Conv2d", frag)


@pytest.mark.parametrize("node,name", [
    (lambda: nir.IF(r=np.ones(3), v_threshold=np.ones(3)), "IF"),
    (lambda: nir.Delay(delay=np.ones(3)), "Delay"),
    (lambda: nir.Scale(scale=np.ones(3)), "Scale"),
])
def test_unsupported_node_type_is_named(node, name):
    g = nir.NIRGraph.from_list(nir.Linear(weight=np.ones((3, 4))), node())
    _expect(g, name)


def test_unsupported_avgpool_and_non_fc_output():
    conv = nir.Conv2d(input_shape=(8, 8), weight=np.ones((2, 1, 3, 3)), stride=1, padding=0, dilation=1, groups=1,
                      bias=np.zeros(2))
    g = nir.NIRGraph.from_list(conv, _cuba((2, 6, 6)), nir.AvgPool2d(kernel_size=np.array([2, 2]),
                               stride=np.array([2, 2]), padding=np.array([0, 0])), _cuba((2, 3, 3)))
    _expect(g, "AvgPool2d")
    g = nir.NIRGraph.from_list(conv, _cuba((2, 6, 6)))
    _expect(g, "last layer must be fully connected")
    # a Flatten that keeps the channel axis (batch-dimension confusion) is refused, not misread
    g = nir.NIRGraph.from_list(conv, _cuba((2, 6, 6)), nir.Flatten(input_type={"input": np.array([2, 6, 6])},
                               start_dim=1), nir.Linear(weight=np.ones((3, 72))), _cuba(3), type_check=False)
    _expect(g, "Flatten", "start_dim 1")


def test_unsupported_structure():
    lin, lif = nir.Linear(weight=np.ones((3, 4))), _cuba(3)
    rec = nir.Linear(weight=np.full((3, 3), 0.5))  # general recurrence, not −w0·(1 − I)
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type=np.array([4])), "lin": lin, "lif": lif, "rec": rec,
                            "out": nir.Output(output_type=np.array([3]))},
                     edges=[("in", "lin"), ("lin", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")])
    _expect(g, "rec", "general recurrent")
    # a branch
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type=np.array([4])), "a": nir.Linear(weight=np.ones((3, 4))),
                            "b": nir.Linear(weight=np.ones((3, 4))), "lif": _cuba(3),
                            "out": nir.Output(output_type=np.array([3]))},
                     edges=[("in", "a"), ("in", "b"), ("a", "lif"), ("b", "lif"), ("lif", "out")])
    _expect(g, "feed-forward chain")
    # a neuron without a synapse in front
    _expect(nir.NIRGraph.from_list(_cuba(4), nir.Linear(weight=np.ones((3, 4))), _cuba(3)), "CubaLIF")
    # an edge to a missing node (no type check)
    g = nir.NIRGraph(nodes={"in": nir.Input(input_type=np.array([4]))}, edges=[("in", "ghost")], type_check=False)
    _expect(g, "ghost")


def test_export_errors():
    net = build_network("9x9-2c2-p3-4", [1.0, 1.0, 1.0])  # 8x8 map, pool 3: clipped edge windows
    with pytest.raises(NIRConversionError, match="SumPool2d"):
        export_nir(net)
    with pytest.raises(TypeError):
        export_nir(torch.nn.Linear(2, 2))
    with pytest.raises(NIRConversionError, match="dt"):
        export_nir(_net(FC_ARCH, FC_TH, 0), dt=0.0)


def test_edited_threshold_wins_over_stale_metadata():
    net = _net(FC_ARCH, FC_TH, 0)
    graph = export_nir(net)
    graph.nodes["l00b_lif"].v_threshold = graph.nodes["l00b_lif"].v_threshold * 2
    with pytest.warns(UserWarning, match="v_th"):
        back = import_nir(graph)
    assert back.layers[0].params.v_th == pytest.approx(2 * (1.5 - 1e-6) + 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import_nir(export_nir(net))  # a fresh export is consistent: no warning


# ------------------------------------------------------------------------------------------------
# optional dependency
# ------------------------------------------------------------------------------------------------


def test_import_hm2bp_does_not_import_nir():
    code = "import sys, hm2bp, hm2bp.nir_io; assert 'nir' not in sys.modules and 'h5py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_nir_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    with pytest.raises(ImportError, match=r"pip install hm2bp\[nir\]"):
        export_nir(_net(FC_ARCH, FC_TH, 0))
