"""Command line: train / resume / eval / plot through ``main([...])`` on tiny digits runs, and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import shared_paths
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


# --------------------------------------------------------------------------------------------------
# Finding options: config show, key docs, --help, aliases, --dry-run, subcommand usage
# --------------------------------------------------------------------------------------------------
def test_config_show_gives_every_key_with_meaning_type_default_and_range(capsys: pytest.CaptureFixture[str]) -> None:
    from hm2bp.config_doc import key_docs

    assert main(["config", "show", "mnist_fc", "--batch-size", "64", "--train.lr=5e-4"]) == 0
    out = capsys.readouterr().out
    assert '* batch_size = 64' in out and '* mode = "minibatch"' in out  # --batch-size > 1 selects minibatch
    assert "* lr = 0.0005" in out and "  max_steps = 0" in out
    assert "stop each epoch after this many updates" in out and "int; default 0; allowed: >= 0" in out
    for key in key_docs():
        assert f" {key.split('.')[1]} = " in out, key
    assert main(["config", "show", "digits", "--json", "--n-train", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["n_train"] == 7
    assert main(["config", "show", "digits", "--train.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_every_config_key_is_documented() -> None:
    from hm2bp.config_doc import RANGES, key_docs

    docs = key_docs()
    # a new key needs its line in the config.py docstring and, unless it is a bool or a choice, in RANGES
    assert [k for k, d in docs.items() if not d.meaning] == []
    assert [k for k, d in docs.items() if not d.allowed] == [], "add the allowed range to config_doc.RANGES"
    assert set(RANGES) <= set(docs)  # no stale range entries
    assert docs["train.lr_schedule"].allowed == "code | sqrt | constant | cosine"  # read from the validation
    assert docs["model.tau_s"].meaning.startswith("synaptic time constant")  # grouped entries split
    assert docs["train.batch_size"].type == "int" and docs["model.thresholds"].default == (20.0, 8.0)


def test_train_help_lists_every_key_and_the_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    from hm2bp.config_doc import key_docs

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in key_docs():
        assert f"--{key}=" in out, key
    for flag in ("--batch-size", "--lr", "--n-train", "--n-test", "--epochs", "--max-steps", "--dry-run"):
        assert flag in out, flag


def test_wrong_flag_shows_the_subcommand_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["train", "digits"], ["eval", "x.pt"], ["config", "show"], ["download", "mnist", "d"]):
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--bogus"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"usage: hm2bp {cmd[0]}" in err and "unrecognized arguments: --bogus" in err, cmd


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    have_sklearn: None) -> None:
    out_dir = tmp_path / "run"
    assert main(["train", "digits", "--out", str(out_dir), "--epochs", "3", "--dry-run", *TINY]) == 0
    out = capsys.readouterr().out
    # the digits preset holds 10 % of the 20 training images out for validation
    assert "18 train, 12 test, 2 validation" in out and "4 per epoch x 3 epochs = 12 (batch 5)" in out
    assert "one epoch:" in out and "memory per step:" in out and "nothing written" in out
    assert not out_dir.exists()


def _tiny_mnist(out: Path) -> list[str]:
    return ["train", "mnist_fc", "--arch", "784-16-10", "--T", "20", "--model.thresholds=3,5", "--model.desired=6",
            "--model.undesired=1", "--model.margin=1", "--n-train", "10", "--n-test", "8", "--batch-size", "5",
            "--epochs", "1", "--train.tensorboard=false", "--no-plots", "--threads", "1", "--quiet", "--out", str(out)]


def test_run_folder_works_from_anywhere_and_eval_takes_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    shared = shared_paths.DATA / "mnist"
    if not shared.is_dir():
        pytest.skip("no local MNIST copy")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    relative = os.path.relpath(shared, work)
    assert main([*_tiny_mnist(Path("run")), "--data-dir", relative]) == 0
    capsys.readouterr()
    cfg = json.loads((work / "run" / "config.json").read_text())
    assert cfg["data"]["data_dir"] == str(shared)  # stored absolute
    monkeypatch.chdir(tmp_path)  # elsewhere: the run folder still evaluates, and on more test samples
    assert main(["eval", "work/run/last.pt", "--data.n_test=30"]) == 0
    assert "/30 correct" in capsys.readouterr().out
    assert main(["eval", "work/run/last.pt", "--n-test", "20", "--train.eval_batch_size=7"]) == 0
    assert "/20 correct" in capsys.readouterr().out
    assert main(["eval", "work/run/last.pt", "--model.arch=784-10"]) == 2
    assert "the network is the checkpoint's" in capsys.readouterr().err


def test_all_extra_does_not_pull_tonic() -> None:
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert extras["tonic"] == ["tonic>=1.4"] and not any("tonic" in r for r in extras["data"])
    assert extras["all"] == ["hm2bp[data,train,nir]"]
