"""Side-by-side speed and memory of hm2bp and the peer SNN libraries, in one run.

Same network (784-800-10, or the paper's spiking CNN 28x28-15c5-p2-40c5-p2-300-10 with ``--arch cnn``), same
input spikes, same weights, same time steps and batch sizes for every library (see ``peers.py`` for the shared
workload and the peer models). Each configuration runs in its own processes,
threads pinned: one child measures training (so that its peak RSS is the training peak), another inference.

    bash benchmarks/setup_peer_envs.sh          # once: the peer virtual environments
    python benchmarks/harness.py                # full grid -> benchmarks/results/latest.csv + latest.png
    python benchmarks/harness.py --quick        # a handful of small configurations (smoke run)
    python benchmarks/harness.py --threads 1
    python benchmarks/harness.py --arch cnn     # the CNN part alone (its rows replace the CNN rows of latest.csv)

Configurations (library / rule):
- hm2bp / hm2bp: the fast path, mini-batch (``build_network`` + ``rate_loss`` + Adam), batch 1, 64, 256;
- hm2bp / hm2bp-exact: the online mode of ``hm2bp train`` (batch 1, rate loss + weight regulariser,
  non-finite check, Adam: the authors' procedure);
- hm2bp / hm2bp-reference: the float64 pair-loop reference (``hm2bp.reference.hm2bp_ref``), batch 1,
  small T only: a correctness oracle, not a training path;
- snntorch / bptt, spikingjelly / bptt: surrogate-gradient BPTT of the same network (``peers.py``);
  SpikingJelly also at one point each with its own x_seq[t] loop (neuron ``cubalif-index``) and with its
  fused LIF operator (neuron ``lif``, not the same neuron model).
T ∈ {25, 100, 400} × batch ∈ {1, 64, 256} (exact: batch 1; reference: batch 1, T ∈ {100, 400}, since its
spike insertion needs T ≥ 35). The CNN (``--arch cnn``, or both with the default ``--arch all``): T = 400 ×
batch ∈ {1, 16, 64} for hm2bp, snnTorch and SpikingJelly (CUBALIF), hm2bp exact at batch 1; its weights are the
authors' trained checkpoint when the golden data is there (every layer active, as in training). A configuration whose training step is predicted (from the fastest step of
the same library's previous, smaller configuration, scaled by T·batch) to take longer than --budget
seconds, or to need more memory than the machine has free, is recorded as skipped with the reason.

See benchmarks/README.md for the columns of the CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENVS = HERE / ".envs"
RESULTS = HERE / "results"
# The hm2bp sources the benchmark exercises (a dirty tree here means the numbers are of uncommitted code).
USED_SRC = ["src/hm2bp/nn", "src/hm2bp/functional", "src/hm2bp/kernels", "src/hm2bp/reference", "src/hm2bp/loss.py"]

COLUMNS = [
    "arch", "library", "rule", "neuron", "T", "batch", "n_hidden", "status",
    "train_samples_per_s", "infer_samples_per_s", "peak_rss_mb", "train_mem_mb",
    "infer_peak_rss_mb", "infer_mem_mb", "baseline_rss_mb",
    "train_step_s", "train_step_min_s", "train_fwd_s", "train_bwd_s", "train_opt_s", "train_steps_timed",
    "infer_step_s", "infer_step_min_s", "infer_steps_timed",
    "train_step_tail_s", "infer_trained_s", "step_over_infer_same_weights", "hidden_rate_trained",
    "train_cpu_s", "infer_cpu_s", "train_samples_per_cpu_s", "infer_samples_per_cpu_s",
    "train_gflops", "train_frac_of_peak", "infer_gflops", "infer_frac_of_peak", "gemm_gflops",
    "input_density", "hidden_rate", "out_count_mean", "synops_per_sample",
    "ratio_to_fastest_peer_train", "ratio_to_fastest_peer_infer",
    "threads", "device", "cpu", "loadavg_1m", "torch_version", "library_version", "python_version", "commit", "src_dirty",
    "date", "note",
]


# =============================================================================================== child
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


MIN_TIMED_S = 3.0
"""Short steps are repeated beyond ``--repeats`` until this many seconds are timed: the median of three
millisecond-long steps on a shared machine is mostly noise."""


def _timed_loop(step, repeats: int, budget_s: float) -> tuple[list[float], list[tuple[float, ...]], list[float]]:  # type: ignore[no-untyped-def]
    """One warm-up call, then timed calls until there are ``repeats`` of them and MIN_TIMED_S seconds of
    timed steps (at most 1000 calls), while the budget lasts (at least one).

    Returns the wall seconds, the (forward, backward, optimizer update) parts and the process CPU seconds
    (all threads) of each timed call.
    """
    start = time.perf_counter()
    step()  # warm-up: one-time set-up (kernel build/loading, allocator, Adam state)
    totals, parts, cpu = [], [], []
    while (len(totals) < repeats or sum(totals) < MIN_TIMED_S) and len(totals) < 1000:
        c0, t0 = time.process_time(), time.perf_counter()
        part = step()
        totals.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        parts.append(part if part is not None else (float("nan"),) * 3)
        spent = time.perf_counter() - start
        if spent + statistics.median(totals) > budget_s:
            break
    return totals, parts, cpu


def _hm2bp_setup(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    import torch

    import hm2bp
    from hm2bp.loss import rate_loss, weight_regularizer
    from hm2bp.nn.network import build_network
    from hm2bp.train.loop import _grads_finite as grads_finite  # the trainer's own check
    from peers import WEIGHT_SEED, make_inputs

    x, labels = make_inputs(a.T, a.batch)
    if a.arch == "cnn":
        from peers import CNN_ARCH, CNN_THRESHOLDS, make_cnn_weights

        net = build_network(CNN_ARCH, list(CNN_THRESHOLDS))
        trainable = [layer for layer in net.layers if hasattr(layer, "weight")]
        with torch.no_grad():
            for layer, w in zip(trainable, make_cnn_weights(a.weights or None)):
                layer.weight.copy_(w)
        reg = 0.0  # mnist_cnn.toml: the authors' CNN config has no regulariser
        description = "SpikingConv2d/SpikingPool2d/SpikingLinear(tau_m=64,tau_s=8,t_ref=2,lateral=-1)"
    else:
        net = build_network(f"784-{a.n_hidden}-10", [20.0, 8.0], generator=torch.Generator().manual_seed(WEIGHT_SEED))
        reg = 10.0
        description = "SpikingLinear(tau_m=64,tau_s=8,t_ref=2,lateral=-1)"
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, fused=True)
    exact = a.rule == "hm2bp-exact"

    def train_step():  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        counts = net(x, labels).sum(0)
        if exact:  # the per-step work of `hm2bp train` in online mode (train/loop.py)
            loss = rate_loss(counts, labels, sample_weight=torch.ones(a.batch))
            if reg:
                loss = loss + weight_regularizer(net, reg, 0.04, 8.0)
        else:
            loss = rate_loss(counts, labels)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        if not exact or grads_finite(opt):
            opt.step()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    def infer():  # type: ignore[no-untyped-def]
        with torch.no_grad():
            return None, net(x)  # hm2bp's inference never forms the float hidden spikes: not asked for here

    def recorded():  # type: ignore[no-untyped-def]
        with torch.no_grad():  # for the spike statistics only, after the measurement
            out = net(x, record=True)
        return (net.hidden_spikes[:-1] if a.arch == "cnn" else net.hidden_spikes[0]), out

    infer.recorded = recorded  # type: ignore[attr-defined]
    return x, train_step, infer, hm2bp.__version__, description


def _reference_setup(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    import hm2bp
    from hm2bp.reference import hm2bp_ref as ref
    from peers import make_inputs, make_weights

    x, labels = make_inputs(a.T, a.batch)
    xs = [x[:, b].numpy() for b in range(a.batch)]
    w1, w2 = (w.numpy().copy() for w in make_weights(a.n_hidden))
    lateral = -(1.0 - np.eye(10, dtype=np.float32))
    params = [w1, w2]
    adam = [(np.zeros_like(p, dtype=np.float64), np.zeros_like(p, dtype=np.float64)) for p in params]
    state = {"t": 0}

    def forward(xb):  # type: ignore[no-untyped-def]
        hidden = ref.fc_forward_ref(xb, w1, 20.0, 1e-6)
        return hidden, ref.fc_forward_ref(hidden, w2, 8.0, 1e-6, lateral=lateral)

    def train_step():  # type: ignore[no-untyped-def]
        fwd = bwd = upd = 0.0
        for b in range(a.batch):  # online: one update per sample
            t0 = time.perf_counter()
            hidden, out = forward(xs[b])
            t1 = time.perf_counter()
            g2, d_below = ref.output_backward_ref(out, hidden, w2, 8.0, int(labels[b]), lateral=True)
            g1, _ = ref.fc_backward_ref(d_below, xs[b], hidden, w1, 20.0)
            t2 = time.perf_counter()
            state["t"] += 1
            for p, g, (m, v) in zip(params, (g1, g2), adam):  # plain numpy Adam (lr 1e-3)
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                mh, vh = m / (1 - 0.9 ** state["t"]), v / (1 - 0.999 ** state["t"])
                p -= (1e-3 * mh / (np.sqrt(vh) + 1e-8)).astype(p.dtype)
            fwd += t1 - t0
            bwd += t2 - t1
            upd += time.perf_counter() - t2
        return fwd, bwd, upd

    def infer():  # type: ignore[no-untyped-def]
        hs, outs = zip(*(forward(xb) for xb in xs))
        return torch.from_numpy(np.stack(hs, 1)), torch.from_numpy(np.stack(outs, 1))

    return x, train_step, infer, hm2bp.__version__, "float64 pair-loop reference (docs/algorithm.md §2-§3), numpy"


def _peer_setup(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    import torch

    from peers import build_peer, library_version, make_inputs, neuron_description, peer_infer, peer_train_step

    x, labels = make_inputs(a.T, a.batch)
    net = build_peer(a.library, a.neuron, a.arch, a.weights or None)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, fused=True)
    return (x, lambda: peer_train_step(net, opt, x, labels), lambda: peer_infer(net, x),
            library_version(a.library), neuron_description(a.library, a.neuron))


def _spike_stats(x, box: dict[str, object], infer) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Input density, hidden rate, mean output count and synaptic operations per sample of the last
    inference pass (``box["out"]``; hm2bp's untimed recorded pass when the timed one kept no hidden spikes)."""
    hidden, out = box["out"]  # type: ignore[misc]
    if hidden is None:
        hidden, out = infer.recorded()
    in_spikes = float(x.sum())
    if isinstance(hidden, (list, tuple)):  # the CNN: every layer's spikes; hidden_rate is conv1's
        from peers import CNN_FANOUT

        layers = [x, *hidden[:5]]
        synops = sum(float(s.sum()) * fan for s, fan in zip(layers, CNN_FANOUT))
        return {"input_density": in_spikes / x.numel(), "hidden_rate": float(hidden[0].sum()) / hidden[0].numel(),
                "out_count_mean": float(out.sum()) / (out.shape[1] * out.shape[2]), "synops_per_sample": synops / x.shape[1]}
    hid_spikes = float(hidden.sum())
    return {"input_density": in_spikes / x.numel(), "hidden_rate": hid_spikes / hidden.numel(),
            "out_count_mean": float(out.sum()) / (out.shape[1] * out.shape[2]),
            "synops_per_sample": (in_spikes * hidden.shape[2] + hid_spikes * out.shape[2]) / x.shape[1]}


def child_main(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    sys.path.insert(0, str(HERE))
    if a.library == "hm2bp":
        setup = _reference_setup if a.rule == "hm2bp-reference" else _hm2bp_setup
    else:
        setup = _peer_setup
    x, train_step, infer, lib_version, neuron = setup(a)
    baseline = _rss_mb()  # after imports, data and model set-up
    hm2bp_file = sys.modules["hm2bp"].__file__ if "hm2bp" in sys.modules else ""
    res: dict[str, object] = {"hm2bp_file": hm2bp_file, "library_version": lib_version, "neuron": neuron, "torch_version": torch.__version__,
                              "python_version": platform.python_version(), "baseline_rss_mb": baseline,
                              "threads_seen": torch.get_num_threads()}
    box: dict[str, object] = {}

    def infer_step() -> None:
        box["out"] = infer()

    if a.phase == "train":
        totals, parts, cpu = _timed_loop(train_step, a.repeats, a.budget)
        res.update(step_s=statistics.median(totals), min_s=min(totals), cpu_s=statistics.median(cpu), fwd_s=statistics.median(p[0] for p in parts),
                   bwd_s=statistics.median(p[1] for p in parts), opt_s=statistics.median(p[2] for p in parts),
                   steps=len(totals))
        res["peak_rss_mb"] = _peak_rss_mb()  # before the inference passes below
        # Training on this one batch changes the network's activity (at batch 1 the hidden neurons that fire
        # go from ~7 % to ~50 % within a few hundred steps), and with it the work of an event-driven pass.
        # The step is therefore also compared with inference on the weights it arrived at: the last quarter
        # of the training steps against back-to-back inference passes right after them.
        res["step_tail_s"] = statistics.median(totals[-max(1, len(totals) // 4):])
        inf_totals, _, _ = _timed_loop(infer_step, a.repeats, a.budget)
        res["infer_trained_s"] = statistics.median(inf_totals)
        res["hidden_rate_trained"] = _spike_stats(x, box, infer)["hidden_rate"]
    else:
        totals, _, cpu = _timed_loop(infer_step, a.repeats, a.budget)
        res["peak_rss_mb"] = _peak_rss_mb()  # before any statistics pass
        res.update(step_s=statistics.median(totals), min_s=min(totals), cpu_s=statistics.median(cpu), steps=len(totals),
                   **_spike_stats(x, box, infer))
    res.setdefault("peak_rss_mb", _peak_rss_mb())
    res["mem_mb"] = res["peak_rss_mb"] - baseline  # type: ignore[operator]
    print("RESULT " + json.dumps(res), flush=True)


def gemm_child(a: argparse.Namespace) -> None:
    """The machine's float32 matmul ceiling with the same threads: median GFLOP/s of an n×n×n GEMM."""
    import torch

    torch.set_num_threads(a.threads)
    n = a.gemm_n
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(p, q, out=out)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        torch.mm(p, q, out=out)
        times.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps({"gemm_gflops": 2.0 * n**3 / statistics.median(times) / 1e9, "gemm_n": n}), flush=True)


# ============================================================================================== parent
def _python_for(library: str) -> Path:
    if library == "hm2bp":
        return Path(sys.executable)
    return ENVS / library / "bin" / "python"


def _mem_available_mb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")


_HM2BP_PATH: list[str] = []  # set by --src head: the snapshot's src folder, first on the hm2bp children's path


def _run_child(library: str, extra: list[str], threads: int, timeout: float) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" or library == "hm2bp"}
    if library == "hm2bp" and _HM2BP_PATH:
        env["PYTHONPATH"] = os.pathsep.join([*_HM2BP_PATH, *filter(None, [env.get("PYTHONPATH", "")])])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if library != "hm2bp":
        env["PYTHONNOUSERSITE"] = "1"
    cmd = [str(_python_for(library)), str(Path(__file__).resolve()), *extra, "--threads", str(threads)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {done.returncode}: {tail[:300]}"}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ARCH_NAMES = {"fc": "784-800-10", "cnn": "28x28-15c5-p2-40c5-p2-300-10"}


def build_configs(quick: bool, arch: str = "fc") -> list[dict[str, object]]:
    """(arch, library, rule, neuron, T, batch, n_hidden), ordered by T·batch so that predictions come from
    below; ``arch`` "fc", "cnn" or "all"."""
    variants = [("hm2bp", "hm2bp", ""), ("snntorch", "bptt", ""), ("spikingjelly", "bptt", "cubalif")]
    if arch == "all":
        return build_configs(quick, "fc") + build_configs(quick, "cnn")
    if arch == "cnn":
        grid_cnn = [(50, 2)] if quick else [(400, b) for b in (1, 16, 64)]
        cnn: list[dict[str, object]] = [
            {"arch": ARCH_NAMES["cnn"], "library": lib, "rule": rule, "neuron": neuron, "T": T, "batch": b, "n_hidden": 300}
            for T, b in grid_cnn for lib, rule, neuron in variants]
        cnn.append({"arch": ARCH_NAMES["cnn"], "library": "hm2bp", "rule": "hm2bp-exact", "neuron": "",
                    "T": grid_cnn[0][0], "batch": 1, "n_hidden": 300})
        cnn.sort(key=lambda c: (int(c["T"]) * int(c["batch"]), int(c["T"])))  # type: ignore[call-overload]
        return cnn

    def cfg(lib: str, rule: str, neuron: str, T: int, batch: int) -> dict[str, object]:
        return dict(arch=ARCH_NAMES["fc"], library=lib, rule=rule, neuron=neuron, T=T, batch=batch, n_hidden=800)

    # The reference's spike insertion (docs/algorithm.md §3.2) needs T >= desired (35): its smallest T is 100 here.
    if quick:
        grid = [(25, 16)]
        cfgs = [cfg("hm2bp", "hm2bp-exact", "", 25, 1), cfg("hm2bp", "hm2bp-reference", "", 100, 1)]
    else:
        grid = [(T, b) for T in (25, 100, 400) for b in (1, 64, 256)]
        cfgs = [cfg("hm2bp", "hm2bp-exact", "", T, 1) for T in (25, 100, 400)]
        cfgs += [cfg("hm2bp", "hm2bp-reference", "", T, 1) for T in (100, 400)]
        # Single points: SpikingJelly's own CUBALIFNode loop (x_seq[t] indexing, O(T²) backward) and its
        # fused LIF operator (no synaptic current: not the same neuron model).
        cfgs += [cfg("spikingjelly", "bptt", "cubalif-index", 100, 64), cfg("spikingjelly", "bptt", "lif", 400, 64)]
    cfgs += [cfg(lib, rule, neuron, T, b) for T, b in grid for lib, rule, neuron in variants]
    cfgs.sort(key=lambda c: (int(c["T"]) * int(c["batch"]), int(c["T"])))  # type: ignore[call-overload]
    return cfgs


def _key(c: dict[str, object]) -> tuple[object, ...]:
    return (c.get("arch", ARCH_NAMES["fc"]), c["library"], c["rule"], c["neuron"], c["n_hidden"])


def _predict(history: dict[tuple[object, ...], dict[str, float]], c: dict[str, object]) -> tuple[float, float] | None:
    """(train step seconds, train memory MB) extrapolated from the largest measured config of the same kind.

    The step time is its fastest timed step (the least disturbed by other load on a shared machine)."""
    h = history.get(_key(c))
    if not h:
        return None
    scale = (int(c["T"]) * int(c["batch"])) / (h["T"] * h["batch"])  # type: ignore[call-overload]
    return h["step_s"] * scale, h["mem_mb"] * scale


def run_all(args: argparse.Namespace) -> list[dict[str, object]]:
    commit = _git("rev-parse", "--short", "HEAD")
    if args.src == "head":
        snap = Path(tempfile.mkdtemp(prefix="hm2bp-bench-src-"))
        archive = subprocess.run(["git", "archive", commit, "src/hm2bp"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(snap)], input=archive, check=True)
        _HM2BP_PATH[:] = [str(snap / "src")]
        src_dirty = "no (HEAD snapshot)"
        print(f"hm2bp from a snapshot of commit {commit} in {snap}", flush=True)
    else:
        dirty = _git("status", "--porcelain", "--", *USED_SRC)
        src_dirty = ";".join(line.split(maxsplit=1)[-1] for line in dirty.splitlines()) if dirty else "no"
        if dirty:
            print(f"note: uncommitted changes in the benchmarked sources: {src_dirty}", flush=True)
    common = dict(threads=args.threads, device="cpu", cpu=_cpu_name(), commit=commit, src_dirty=src_dirty,
                  date=time.strftime("%Y-%m-%d %H:%M"))

    gemm = _run_child("hm2bp", ["--child-gemm", "--gemm-n", str(args.gemm_n)], args.threads, 300)
    peak = float(gemm.get("gemm_gflops", float("nan")))  # type: ignore[arg-type]
    print(f"float32 GEMM {args.gemm_n}³, {args.threads} threads: {peak:.1f} GFLOP/s", flush=True)

    from_peers: set[str] = set()
    for lib in ("snntorch", "spikingjelly"):
        if not _python_for(lib).exists():
            print(f"warning: {_python_for(lib)} missing: run benchmarks/setup_peer_envs.sh ({lib} skipped)", flush=True)
        else:
            from_peers.add(lib)

    rows: list[dict[str, object]] = []
    history: dict[tuple[object, ...], dict[str, float]] = {}
    failed: set[tuple[object, ...]] = set()
    weights = _cnn_weights_file() if args.arch in ("cnn", "all") else ""
    for c in build_configs(args.quick, args.arch):
        if args.only and c["library"] not in args.only:
            continue
        row: dict[str, object] = dict.fromkeys(COLUMNS, "")
        row.update(c)
        row.update(common)
        row["gemm_gflops"] = round(peak, 2)
        arch = "cnn" if c["arch"] == ARCH_NAMES["cnn"] else "fc"
        label = f"{arch:4s} {c['library']:12s} {c['rule']:15s} {c['neuron'] or '-'!s:13s} T={c['T']:<3} batch={c['batch']:<3}"
        skip = ""
        if c["library"] != "hm2bp" and c["library"] not in from_peers:
            skip = "peer environment missing (run benchmarks/setup_peer_envs.sh)"
        elif _key(c) in failed:
            skip = "a smaller configuration of the same kind failed"
        else:
            pred = _predict(history, c)
            if pred is not None:
                step_s, mem = pred
                if step_s > args.budget:
                    skip = f"predicted {step_s:.0f} s per training step (> budget {args.budget:.0f} s)"
                elif mem > 0.7 * _mem_available_mb():
                    skip = f"predicted {mem:.0f} MB of training memory (> 70 % of the {_mem_available_mb():.0f} MB free)"
        if skip:
            row.update(status="skipped", note=skip)
            rows.append(row)
            print(f"{label}  skipped: {skip}", flush=True)
            continue
        short = "cnn" if c["arch"] == ARCH_NAMES["cnn"] else "fc"
        base = ["--child", "--arch", short, "--weights", weights if short == "cnn" else "",
                "--library", str(c["library"]), "--rule", str(c["rule"]), "--neuron", str(c["neuron"]),
                "--T", str(c["T"]), "--batch", str(c["batch"]), "--n-hidden", str(c["n_hidden"]),
                "--repeats", str(args.repeats), "--budget", str(args.budget)]
        row["loadavg_1m"] = round(os.getloadavg()[0], 2)
        tr = _run_child(str(c["library"]), [*base, "--phase", "train"], args.threads, args.timeout)
        inf = _run_child(str(c["library"]), [*base, "--phase", "infer"], args.threads, args.timeout)
        for r in (tr, inf):
            if _HM2BP_PATH and r.get("hm2bp_file") and not str(r["hm2bp_file"]).startswith(_HM2BP_PATH[0]):
                r["error"] = f"hm2bp imported from {r['hm2bp_file']}, not from the snapshot"
        if "error" in tr or "error" in inf:
            msg = "; ".join(f"{p}: {r['error']}" for p, r in (("train", tr), ("infer", inf)) if "error" in r)
            row.update(status="error", note=msg)
            failed.add(_key(c))
            rows.append(row)
            print(f"{label}  ERROR {msg}", flush=True)
            continue
        batch, T = int(c["batch"]), int(c["T"])  # type: ignore[call-overload]
        train_sps = batch / float(tr["step_s"])  # type: ignore[arg-type]
        infer_sps = batch / float(inf["step_s"])  # type: ignore[arg-type]
        sys.path.insert(0, str(HERE))
        from peers import dense_flops_per_sample

        flops = dense_flops_per_sample(T, int(c["n_hidden"]), short)  # type: ignore[call-overload]
        row.update(
            status="ok", neuron=tr["neuron"] if not c["neuron"] else f"{c['neuron']}: {tr['neuron']}",
            train_samples_per_s=round(train_sps, 3), infer_samples_per_s=round(infer_sps, 3),
            peak_rss_mb=round(float(tr["peak_rss_mb"]), 1), train_mem_mb=round(float(tr["mem_mb"]), 1),  # type: ignore[arg-type]
            infer_peak_rss_mb=round(float(inf["peak_rss_mb"]), 1), infer_mem_mb=round(float(inf["mem_mb"]), 1),  # type: ignore[arg-type]
            baseline_rss_mb=round(float(tr["baseline_rss_mb"]), 1),  # type: ignore[arg-type]
            train_step_s=round(float(tr["step_s"]), 5), train_step_min_s=round(float(tr["min_s"]), 5),  # type: ignore[arg-type]
            infer_step_min_s=round(float(inf["min_s"]), 5),  # type: ignore[arg-type]
            train_cpu_s=round(float(tr["cpu_s"]), 5), infer_cpu_s=round(float(inf["cpu_s"]), 5),  # type: ignore[arg-type]
            train_samples_per_cpu_s=round(batch / float(tr["cpu_s"]), 3),  # type: ignore[arg-type]
            infer_samples_per_cpu_s=round(batch / float(inf["cpu_s"]), 3),  # type: ignore[arg-type]
            train_fwd_s=round(float(tr["fwd_s"]), 5),  # type: ignore[arg-type]
            train_bwd_s=round(float(tr["bwd_s"]), 5), train_opt_s=round(float(tr["opt_s"]), 5),  # type: ignore[arg-type]
            train_steps_timed=tr["steps"],
            infer_step_s=round(float(inf["step_s"]), 5), infer_steps_timed=inf["steps"],  # type: ignore[arg-type]
            train_step_tail_s=round(float(tr["step_tail_s"]), 5), infer_trained_s=round(float(tr["infer_trained_s"]), 5),  # type: ignore[arg-type]
            step_over_infer_same_weights=round(float(tr["step_tail_s"]) / float(tr["infer_trained_s"]), 3),  # type: ignore[arg-type]
            hidden_rate_trained=round(float(tr["hidden_rate_trained"]), 5),  # type: ignore[arg-type]
            train_gflops=round(3 * flops * train_sps / 1e9, 3), infer_gflops=round(flops * infer_sps / 1e9, 3),
            train_frac_of_peak=round(3 * flops * train_sps / 1e9 / peak, 5),
            infer_frac_of_peak=round(flops * infer_sps / 1e9 / peak, 5),
            input_density=round(float(inf["input_density"]), 5), hidden_rate=round(float(inf["hidden_rate"]), 5),  # type: ignore[arg-type]
            out_count_mean=round(float(inf["out_count_mean"]), 3),  # type: ignore[arg-type]
            synops_per_sample=round(float(inf["synops_per_sample"])),  # type: ignore[arg-type]
            torch_version=tr["torch_version"], library_version=tr["library_version"],
            python_version=tr["python_version"],
        )
        history[_key(c)] = {"T": T, "batch": batch, "step_s": float(tr["min_s"]), "mem_mb": max(float(tr["mem_mb"]), 1.0)}  # type: ignore[arg-type]
        rows.append(row)
        print(f"{label}  train {train_sps:9.2f}/s ({float(tr['fwd_s']):.3f}+{float(tr['bwd_s']):.3f}+{float(tr['opt_s']):.3f} s)  "  # type: ignore[arg-type]
              f"infer {infer_sps:9.2f}/s  train_mem {float(tr['mem_mb']):8.1f} MB  peak {float(tr['peak_rss_mb']):8.1f} MB",  # type: ignore[arg-type]
              flush=True)
    _add_ratios(rows)
    return rows


def _add_ratios(rows: list[dict[str, object]]) -> None:
    """hm2bp rows: samples/s divided by the faster BPTT peer's at the same (T, batch), same neuron model
    (the SpikingJelly ``lif`` variant, a different neuron model, is left out of 'the faster peer')."""
    for what in ("train", "infer"):
        best: dict[tuple[object, object], float] = {}
        for r in rows:
            if r["status"] == "ok" and r["rule"] == "bptt" and not str(r["neuron"]).startswith(("lif", "cubalif-index")):
                k = (r["arch"], r["T"], r["batch"])
                best[k] = max(best.get(k, 0.0), float(r[f"{what}_samples_per_s"]))  # type: ignore[arg-type]
        for r in rows:
            k = (r["arch"], r["T"], r["batch"])
            if r["status"] == "ok" and r["library"] == "hm2bp" and k in best:
                r[f"ratio_to_fastest_peer_{what}"] = round(float(r[f"{what}_samples_per_s"]) / best[k], 4)  # type: ignore[arg-type]


def _cnn_weights_file() -> str:
    """The authors' trained CNN (Result/checkPoint_cnn_best.txt) as a torch file of the four weight tensors that
    every child (hm2bp and the peers' environments) loads, or "" without the golden data (the children then
    draw build_network's initial weights)."""
    result = ROOT.parent / "shared" / "golden" / "mm-bp-snn" / "Result"
    ckpt = next((p for p in (result / "checkPoint_cnn_best.txt", result / "checkPoint_cnn_best.txt.gz") if p.exists()),
                result / "checkPoint_cnn_best.txt")
    if not ckpt.exists():
        print(f"note: {ckpt} not found: the CNN runs on its initial weights (little activity past conv2)", flush=True)
        return ""
    import torch

    from hm2bp.io.import_authors import load_authors_cnn_checkpoint

    net = load_authors_cnn_checkpoint(ckpt)
    path = Path(tempfile.mkdtemp(prefix="hm2bp-bench-cnn-")) / "cnn_weights.pt"
    torch.save([layer.weight.detach().clone() for layer in net.layers if hasattr(layer, "weight")], path)
    return str(path)


def _kept_rows(path: Path, archs: set[object]) -> list[dict[str, object]]:
    """The rows of an existing CSV whose arch is not in ``archs`` (a CSV without the column is 784-800-10)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        old = list(csv.DictReader(f))
    for r in old:
        r["arch"] = r.get("arch") or ARCH_NAMES["fc"]
    return [dict(r) for r in old if r["arch"] not in archs]


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})
    tmp.replace(path)


def plot(rows: list[dict[str, object]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return False
    ok = [r for r in rows if r["status"] == "ok" and r.get("arch", ARCH_NAMES["fc"]) == ARCH_NAMES["fc"]]  # the FC grid
    batches = sorted({int(r["batch"]) for r in ok})  # type: ignore[call-overload]
    if not ok:
        return False
    series = sorted({(str(r["library"]), str(r["rule"]), str(r["neuron"]).split(":")[0] if r["library"] == "spikingjelly" else "") for r in ok})
    metrics = [("train_samples_per_s", "training samples/s"), ("infer_samples_per_s", "inference samples/s"),
               ("train_mem_mb", "training memory (MB above set-up)")]
    fig, axes = plt.subplots(len(metrics), len(batches), figsize=(4.2 * len(batches), 3.4 * len(metrics)), squeeze=False)
    styles = {"hm2bp": ("C0", "o"), "hm2bp-exact": ("C0", "s"), "hm2bp-reference": ("C7", "x"),
              "snntorch": ("C1", "^"), "spikingjelly": ("C2", "v"), "spikingjelly-lif": ("C2", "d")}
    for j, b in enumerate(batches):
        for i, (col, ylabel) in enumerate(metrics):
            ax = axes[i][j]
            for lib, rule, neuron in series:
                pts = sorted((int(r["T"]), float(r[col])) for r in ok  # type: ignore[arg-type]
                             if r["library"] == lib and r["rule"] == rule and int(r["batch"]) == b  # type: ignore[call-overload]
                             and (lib != "spikingjelly" or str(r["neuron"]).split(":")[0] == neuron))
                if not pts:
                    continue
                name = rule if lib == "hm2bp" else (f"{lib}-{neuron}" if neuron not in ("", "cubalif") else lib)
                if neuron == "cubalif-index":
                    continue
                color, marker = styles.get(name, ("k", "."))
                label = {"hm2bp": "hm2bp (fast, mini-batch)", "hm2bp-exact": "hm2bp exact (online)",
                         "hm2bp-reference": "hm2bp float64 reference", "snntorch": "snnTorch BPTT (Synaptic)",
                         "spikingjelly": "SpikingJelly BPTT (CUBALIF)",
                         "spikingjelly-lif": "SpikingJelly BPTT (LIF, no syn.)"}.get(name, name)
                xs, ys = zip(*pts)
                ax.plot(xs, [max(y, 1e-3) for y in ys], color=color, marker=marker, ls="--" if "reference" in name or "lif" in name else "-",
                        label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(18, 550)
            ax.set_xticks([25, 100, 400])
            ax.set_xticklabels(["25", "100", "400"])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("time steps T")
            ax.set_ylabel(ylabel)
            ax.set_title(f"batch {b}")
            ax.grid(True, which="both", alpha=0.3)
    handles: dict[str, object] = {}
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=3, frameon=False)
    r0 = ok[0]
    fig.suptitle(f"784-800-10 on {r0['cpu']}, {r0['threads']} threads, torch {r0['torch_version']}, commit {r0['commit']} "
                 f"(GEMM ceiling {r0['gemm_gflops']} GFLOP/s)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def summary(rows: list[dict[str, object]]) -> None:
    print("\narch  library      rule             neuron         T    batch  train/s    infer/s  train_MB  ratio(train)")
    for r in rows:
        if r["status"] != "ok":
            continue
        print(f"{'cnn' if r['arch'] == ARCH_NAMES['cnn'] else 'fc':5s} {r['library']:12s} {r['rule']:16s} {str(r['neuron']).split(':')[0][:14]:14s} {r['T']:<4} {r['batch']:<6} "
              f"{float(r['train_samples_per_s']):9.2f} {float(r['infer_samples_per_s']):10.2f} "  # type: ignore[arg-type]
              f"{float(r['train_mem_mb']):9.1f}  {r['ratio_to_fastest_peer_train']}")  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a handful of small configurations (smoke run)")
    ap.add_argument("--threads", type=int, default=2, help="threads of every child (torch + OMP/MKL), default 2")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps after the warm-up step (median), default 3")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds per configuration and phase (after one warm-up step, at least one timed step); "
                         "a config whose step is predicted to take longer is skipped. Default 60")
    ap.add_argument("--timeout", type=float, default=300.0, help="hard limit per child process (s)")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--src", choices=("worktree", "head"), default="worktree",
                    help="hm2bp from the working tree (default) or from a snapshot of the committed HEAD "
                         "(use when others edit src/ during the run)")
    ap.add_argument("--only", nargs="*", default=[], help="only these libraries (hm2bp snntorch spikingjelly)")
    ap.add_argument("--arch", choices=("fc", "cnn", "all"), default="all",
                    help="784-800-10 (fc), the spiking CNN (cnn) or both (all, default); a run of one of them keeps "
                         "the other's rows of an existing CSV")
    ap.add_argument("--out", type=Path, default=None, help="CSV path (default results/latest.csv; --quick: results/quick.csv)")
    ap.add_argument("--no-plot", action="store_true")
    # child-process options
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-gemm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--phase", default="train", help=argparse.SUPPRESS)
    ap.add_argument("--library", default="hm2bp", help=argparse.SUPPRESS)
    ap.add_argument("--rule", default="hm2bp", help=argparse.SUPPRESS)
    ap.add_argument("--neuron", default="", help=argparse.SUPPRESS)
    ap.add_argument("--T", type=int, default=100, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--n-hidden", type=int, default=800, help=argparse.SUPPRESS)
    ap.add_argument("--weights", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    if args.child_gemm:
        gemm_child(args)
        return 0
    out = args.out or RESULTS / ("quick.csv" if args.quick else "latest.csv")
    try:
        rows = run_all(args)
    finally:
        if _HM2BP_PATH:
            import shutil

            shutil.rmtree(Path(_HM2BP_PATH[0]).parent, ignore_errors=True)
    if args.arch != "all":
        rows = _kept_rows(out, {r["arch"] for r in rows} or {ARCH_NAMES[args.arch]}) + rows
    write_csv(rows, out)
    print(f"\nwrote {out}")
    if not args.no_plot and plot(rows, out.with_suffix(".png")):
        print(f"wrote {out.with_suffix('.png')}")
    summary(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
