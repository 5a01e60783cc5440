"""The backend seam: one function decides, from the device and HM2BP_BACKEND, and says why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from hm2bp.kernels import backend as seam
from hm2bp.kernels import cpu

SRC = Path(__file__).resolve().parents[2] / "src" / "hm2bp"
HAVE_C = cpu.library() is not None


@pytest.fixture(autouse=True)
def _fresh_decisions():  # type: ignore[no-untyped-def]
    seam.reset()
    yield
    seam.reset()


def test_default_on_cpu_is_the_compiled_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HM2BP_BACKEND", raising=False)
    chosen = seam.backend_for(torch.zeros(2))
    assert chosen.name == ("cpu" if HAVE_C else "torch")
    assert "cpu:" in seam.describe(("cpu",))


@pytest.mark.parametrize("name", ["torch", "cpu"])
def test_forced_backend(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    if name == "cpu" and not HAVE_C:
        pytest.skip("no C compiler")
    monkeypatch.setenv("HM2BP_BACKEND", name)
    assert seam.backend_for(torch.zeros(2), torch.ones(3)).name == name
    assert f"HM2BP_BACKEND={name}" in seam.describe(("cpu",))


def test_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HM2BP_BACKEND", "cuda-graphs")
    with pytest.raises(ValueError, match="HM2BP_BACKEND='cuda-graphs' names no backend"):
        seam.backend_for(torch.zeros(2))
    with pytest.raises(ValueError, match="unknown hm2bp backend"):
        seam.get_backend("fpga")


def test_forced_triton_on_cpu_falls_back_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HM2BP_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.warns(RuntimeWarning, match="cannot serve cpu tensors.*TRITON_INTERPRET"):
        chosen = seam.backend_for(torch.zeros(2))
    assert chosen.name == "torch"


def test_tensors_on_different_devices_get_the_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HM2BP_BACKEND", raising=False)
    assert seam.backend_for(torch.zeros(1), torch.device("meta")).name == "torch"


def test_every_backend_serves_the_whole_protocol() -> None:
    methods = {n for n in vars(seam.Backend) if not n.startswith("_")} - {"name"}
    names = ["torch"] + (["cpu"] if HAVE_C else [])
    for name in names:
        backend = seam.get_backend(name)
        assert all(callable(getattr(backend, m, None)) for m in methods), name


def test_the_event_path_estimate_follows_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """nn/memory.py asks the seam whether FC layers run event-driven (a different memory model)."""
    if not HAVE_C:
        pytest.skip("no C compiler")
    from hm2bp.nn.memory import training_step_bytes
    from hm2bp.nn.network import build_network

    net = build_network("784-100-10", [5.0, 5.0])
    monkeypatch.delenv("HM2BP_BACKEND", raising=False)
    events = training_step_bytes(net, 100, 8)
    monkeypatch.setenv("HM2BP_BACKEND", "torch")
    dense = training_step_bytes(net, 100, 8)
    assert events < dense


_BACKEND_TESTS = re.compile(r"kernels import cpu|kernels\.cpu|cpu\.(usable|library)|device\.type|HM2BP_BACKEND|"
                            r"is_cuda|cuda\.is_available|import triton")


# Free memory is a property of the device, not a choice of implementation.
_ALLOWED = {("memory.py", 'if device.type == "cuda":  # free memory: a device property, not a backend choice')}


@pytest.mark.parametrize("package", ["functional", "nn"])
def test_no_backend_decision_outside_the_seam(package: str) -> None:
    """functional/ and nn/ ask backend_for; they test no device, compiler or backend variable themselves."""
    hits = [f"{path.name}:{i}: {line.strip()}" for path in sorted((SRC / package).glob("*.py"))
            for i, line in enumerate(path.read_text().splitlines(), 1)
            if _BACKEND_TESTS.search(line) and (path.name, line.strip()) not in _ALLOWED]
    assert not hits, "backend decisions outside hm2bp.kernels:\n" + "\n".join(hits)
