"""Every integer handed to the compiled kernels is bounded (issue #18 items 5 and 9).

ctypes silently wraps a Python int into a 32-bit argument: ``model.t_ref=4294967298`` ran as T_ref = 2, and
``model.t_ref=2147483648`` became −2³¹, so that t − T_ref indexed far past the coefficient buffers (SIGSEGV).
The config refuses such values, and the kernel wrappers refuse them again with a ValueError naming the
parameter (for callers that bypass the config: layers, NIR import, the backends).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hm2bp.config import load_config
from hm2bp.errors import ConfigError
from hm2bp.kernels import cpu

needs_c = pytest.mark.skipif(cpu.library() is None, reason="no C compiler: compiled kernels unavailable")
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("override,key", [
    ("model.t_ref=4294967298", "model.t_ref"),
    ("model.t_ref=2147483648", "model.t_ref"),
    ("model.t_ref=51", "model.t_ref"),  # longer than the sample (T = 50)
    ("model.T=2147483648", "model.T"),
    ("model.arch=64-4294967296-10", "model.arch"),
    ("train.batch_size=4294967297", "train.batch_size"),
    ("train.eval_batch_size=4294967297", "train.eval_batch_size"),
])
def test_config_refuses_integers_beyond_the_kernels(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("digits", ["model.T=50", "model.desired=20", "model.undesired=3", override])


def test_config_keeps_the_usual_values() -> None:
    cfg = load_config("digits", ["model.T=50", "model.t_ref=50", "model.desired=20", "model.undesired=3"])
    assert cfg.model.t_ref == 50 == cfg.model.T


def _post(T: int = 60, B: int = 2, n: int = 5) -> torch.Tensor:
    return (torch.rand(T, B, n, generator=torch.Generator().manual_seed(0)) < 0.2).to(torch.uint8)


@needs_c
@pytest.mark.parametrize("t_ref", [4294967298, 2.0, "2"])  # those that crash the old code: in a subprocess below
def test_kernel_wrappers_refuse_t_ref_out_of_range(t_ref: object) -> None:
    post = _post()
    T, B, n = post.shape
    x = (torch.rand(T, B, 7, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    index = cpu.spike_index(x.reshape(T * B, 7), B)
    assert index is not None
    rp, cols, cin = index
    w = torch.rand(n, 7)
    calls = {
        "psp_coefficients": lambda: cpu.psp_coefficients(post.reshape(T, -1), 64.0, 8.0, t_ref, 256, torch.float32),
        "lif_scan": lambda: cpu.lif_scan(torch.rand(T, B, n), 64.0, 8.0, t_ref, 1.0, None),
        "fc_forward": lambda: cpu.fc_forward(rp, cols, w, T, B, 64.0, 8.0, t_ref, 0.5, None, 256, True),
        "fc_psp_drive": lambda: cpu.fc_psp_drive(post, rp, cols, w, 64.0, 8.0, t_ref, 256),
        "fc_backward": lambda: cpu.fc_backward(post, rp, cols, cin, w, torch.ones(B, n), torch.zeros(B, n, dtype=torch.float64),
                                               None, 1.0, "effect_ratio", 0.1, 64.0, 8.0, t_ref, 256),
        "output_rules": lambda: cpu.output_rules(post, torch.zeros(B, dtype=torch.int64), 1, 1.0, 1.0, 64.0, 8.0, t_ref, 256),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="t_ref"):
            call()
        assert name


@needs_c
def test_kernel_wrappers_check_sizes_and_the_spike_index() -> None:
    post = _post()
    T, B, n = post.shape
    x = (torch.rand(T, B, 7, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    index = cpu.spike_index(x.reshape(T * B, 7), B)
    assert index is not None
    rp, cols, cin = index
    w = torch.rand(n, 7)
    with pytest.raises(ValueError, match="spike index"):  # one sample fewer than the index holds
        cpu.fc_forward(rp, cols, w, T, B + 1, 64.0, 8.0, 2, 0.5, None, 256, True)
    with pytest.raises(ValueError, match="counts_in"):
        cpu.fc_backward(post, rp, cols, cin[:1], w, torch.ones(B, n), torch.zeros(B, n, dtype=torch.float64), None,
                        1.0, None, 0.1, 64.0, 8.0, 2, 256)
    with pytest.raises(ValueError, match="window"):
        cpu.psp_coefficients(post.reshape(T, -1), 64.0, 8.0, 2, -1, torch.float32)
    with pytest.raises(ValueError, match="batch"):
        cpu.spike_index(x.reshape(T * B, 7), 7)  # 120 rows are not T·7
    with pytest.raises(ValueError, match="lateral"):
        cpu.lif_scan(torch.rand(T, B, n), 64.0, 8.0, 2, 1.0, torch.zeros(n + 1, n + 1))
    # A window beyond T (a huge τ_m) is the same as T: accepted, same coefficients.
    huge = cpu.psp_coefficients(post.reshape(T, -1), 64.0, 8.0, 2, 10**30, torch.float64)
    assert torch.equal(huge, cpu.psp_coefficients(post.reshape(T, -1), 64.0, 8.0, 2, T, torch.float64))


_LAYER = """
import torch
from hm2bp.nn.layers import SpikingLinear
torch.manual_seed(0)
layer = SpikingLinear(20, 6, v_th=0.5, t_ref={t_ref})
x = (torch.rand(80, 2, 20) < 0.3).float()
out = layer(x)
out.sum().backward()
print("fired", int(out.sum()))
"""


_DIRECT = """
import torch
from hm2bp.kernels import cpu
post = (torch.rand(60, 10) < 0.2).to(torch.uint8)
cpu.psp_coefficients(post, 64.0, 8.0, {t_ref}, 256, torch.float32)
"""


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, check=False)


@needs_c
@pytest.mark.parametrize("code,t_ref", [(_LAYER, 2**31), (_DIRECT, 2**31), (_DIRECT, -1)],
                         ids=["layer-2**31", "kernel-2**31", "kernel--1"])
def test_t_ref_that_crashed_the_kernels_is_an_error_not_a_segfault(tmp_path: Path, code: str, t_ref: int) -> None:
    """On the previous code T_ref = 2**31 (wrapped to −2**31) killed these processes with SIGSEGV."""
    run = _run(code.format(t_ref=t_ref), tmp_path)
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
    assert "ValueError" in run.stderr and "t_ref" in run.stderr


@needs_c
def test_the_layer_script_runs_with_a_usual_t_ref(tmp_path: Path) -> None:
    ok = _run(_LAYER.format(t_ref=2), tmp_path)
    assert ok.returncode == 0 and "fired" in ok.stdout, ok.stderr[-2000:]
