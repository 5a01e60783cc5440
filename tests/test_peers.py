"""benchmarks/peers.py: the SpikingJelly peer is set up as a working BPTT peer, on snnTorch's gradient scale.

SpikingJelly is not installed in the main environment; the test that trains through it runs in the peer
venv that ``benchmarks/setup_peer_envs.sh`` creates and skips (with the reason) when that venv is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SJ_PYTHON = BENCH / ".envs" / "spikingjelly" / "bin" / "python"

# First-batch gradient norms of both layers (T 100, batch 32, the harness's inputs and weights), as JSON.
_GRAD_NORMS = """
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
import peers
torch.set_num_threads(1)
x, y = peers.make_inputs(100, 32)
net = peers.build_peer(sys.argv[2])
_, out = net(x)
peers.count_loss(out.sum(0), y).backward()
print("NORMS " + json.dumps([float(p.grad.norm()) for p in net.parameters()]))
"""


def _peers():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("peers_bench", BENCH / "peers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spikingjelly_neurons_detach_the_reset() -> None:
    """Every SpikingJelly neuron of the peers is multi-step with ``detach_reset`` (snnTorch's reset is detached
    too); with the library's default the hard reset's surrogate gradient explodes over the T steps."""
    made = _peers()._sj_neurons(lambda th: types.SimpleNamespace(th=th), (20.0, 8.0))  # type: ignore[arg-type]
    assert [(m.th, m.step_mode, m.detach_reset) for m in made] == [(20.0, "m", True), (8.0, "m", True)]


def _grad_norms(python: str, library: str) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if python != sys.executable:  # a peer venv: nothing of the user's site either (as accuracy.py runs it)
        env["PYTHONNOUSERSITE"] = "1"
    done = subprocess.run([python, "-c", _GRAD_NORMS, str(BENCH), library], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("NORMS ")), None)
    assert line is not None, done.stderr[-2000:]
    return [float(v) for v in json.loads(line[6:])]


def test_spikingjelly_gradients_on_the_scale_of_snntorch() -> None:
    """Same network, weights, inputs and loss: SpikingJelly's BPTT gradients within 3× of snnTorch's
    (they were 1e8× larger, and the peer learned nothing, while its reset was differentiated)."""
    pytest.importorskip("snntorch")
    if not SJ_PYTHON.exists():
        pytest.skip(f"no SpikingJelly peer venv at {SJ_PYTHON} (bash benchmarks/setup_peer_envs.sh spikingjelly)")
    snn = _grad_norms(sys.executable, "snntorch")
    sj = _grad_norms(str(SJ_PYTHON), "spikingjelly")
    for layer, (a, b) in enumerate(zip(snn, sj)):
        assert 1 / 3 < b / a < 3, (layer, a, b)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
