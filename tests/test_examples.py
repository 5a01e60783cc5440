"""The scripts in examples/ run (as a user would start them, in a subprocess) and write their outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args, "--threads", "1"], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_build_and_train(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    proc = _run("01_build_and_train.py", "--out", str(tmp_path), "--epochs", "2", "--n-train", "200",
                "--n-test", "60", "--T", "60", "--batch-size", "8")
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ") and last.endswith("%"), proc.stdout
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[-1]["test_acc"] > 0.3  # 10 classes: chance is 0.1 (this run: ~0.7)
    import torch

    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state["layers.0.weight"].shape == (100, 64) and state["layers.1.weight"].shape == (10, 100)


def test_raster_plot(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    proc = _run("02_raster_plot.py", "--out", str(tmp_path), "--arch", "8x8-4c3-p2-10", "--thresholds", "2,1,3",
                "--T", "40")
    png = tmp_path / "raster.png"
    assert proc.stdout.strip().splitlines()[-1] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_export_nir(tmp_path: Path) -> None:
    pytest.importorskip("nir", reason="NIR export needs pip install hm2bp[nir]")
    pytest.importorskip("h5py", reason="nir.write needs h5py")
    proc = _run("03_export_nir.py", "--out", str(tmp_path), "--T", "40", "--batch", "4")
    assert "spikes identical after the NIR round trip" in proc.stdout
    assert (tmp_path / "network.nir").stat().st_size > 0
