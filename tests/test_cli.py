"""Command line: train / resume / eval / plot through ``main([...])`` on tiny digits runs, and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hm2bp.cli import main
from hm2bp.config import list_presets

TINY = ["--model.arch=64-16-10", "--model.T=20", "--model.thresholds=3,5", "--model.desired=6",
        "--model.undesired=1", "--model.margin=1", "--data.n_train=20", "--data.n_test=12",
        "--train.mode", "minibatch", "--train.batch_size=5", "--train.tensorboard=false", "--threads=1", "--quiet"]


def _last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.fixture()
def have_sklearn() -> None:
    pytest.importorskip("sklearn")


def test_train_resume_eval_plot_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           have_sklearn: None) -> None:
    run = tmp_path / "run"
    assert main(["train", "digits", "--epochs", "1", "--out", str(run), "--no-plots", *TINY]) == 0
    line = _last_line(capsys.readouterr().out)
    assert line.startswith("test accuracy: ") and line.endswith("%")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["arch"] == "64-16-10" and cfg["train"]["epochs"] == 1 and cfg["train"]["batch_size"] == 5

    assert main(["train", "digits", "--epochs", "2", "--out", str(run), "--resume", "--no-plots", *TINY]) == 0
    acc_train = _last_line(capsys.readouterr().out)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]

    assert main(["eval", str(run / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert _last_line(out) == acc_train  # eval of last.pt reproduces the final test accuracy
    assert main(["eval", str(run / "last.pt"), "--n", "5"]) == 0
    assert "/5 correct" in capsys.readouterr().out

    pytest.importorskip("matplotlib")
    assert main(["plot", str(run)]) == 0
    capsys.readouterr()
    for name in ("curves.png", "raster.png", "counts_hist.png", "confusion.png"):
        assert (run / name).stat().st_size > 1000, name


def test_plots_are_written_at_the_end_of_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  have_sklearn: None) -> None:
    pytest.importorskip("matplotlib")
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), *TINY]) == 0
    assert {"curves.png", "raster.png", "counts_hist.png", "confusion.png"} <= {p.name for p in tmp_path.iterdir()}


def test_train_help_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in list_presets():
        assert name in out
    assert "--resume" in out and "--data-dir" in out and "--train.lr" in out


def test_config_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "digits", "--train.nope=1", "--out", str(tmp_path)]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["train", "digits", "--train.lr=abc", "--out", str(tmp_path)]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main(["train", "nosuchpreset"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["train", "digits", "--train.lr"]) == 2
    assert "needs a value" in capsys.readouterr().err


def test_missing_dataset_says_what_to_put_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "mnist_fc", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "mnist_fc", "--data-dir", str(empty), "--out", str(tmp_path / "r"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert str(empty) in err and "train-images-idx3-ubyte" in err


def test_cuda_unavailable_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert main(["train", "digits", "--device", "cuda", "--out", str(tmp_path), "--quiet"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_eval_refuses_a_malicious_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "hm2bp-checkpoint", "version": 1, "x": Evil()}, tmp_path / "evil.pt")
    assert main(["eval", str(tmp_path / "evil.pt")]) == 1
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                have_sklearn: None) -> None:
    """A job script that always passes --resume works on its first start (nothing to resume yet)."""
    run = tmp_path / "run"
    assert main(["train", "digits", "--epochs", "1", "--out", str(run), "--resume", "--no-plots", *TINY]) == 0
    assert _last_line(capsys.readouterr().out).startswith("test accuracy: ")
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert any(run.rglob("last.pt"))
    # ... and a second --resume continues from that checkpoint
    assert main(["train", "digits", "--epochs", "2", "--out", str(run), "--resume", "--no-plots", *TINY]) == 0
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_python_dash_m_runs_the_same_main() -> None:
    r = subprocess.run([sys.executable, "-m", "hm2bp", "train", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "bundled presets" in r.stdout and "digits" in r.stdout
