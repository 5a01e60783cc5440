"""#18 items 8 (CLI), 17: failures that were raw tracebacks name the file or the key, and runs that learn
nothing exit non-zero."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from hm2bp.cli import main
from hm2bp.io.files import WriteError
from hm2bp.train.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.reliability
S = ["--data.n_train=300", "--data.digits_n_test=100", "--model.T=30", "--model.arch=64-40-10", "--model.desired=20",
     "--model.undesired=3", "--train.batch_size=20", "--no-plots", "--threads", "1", "--epochs", "1", "--quiet"]


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["train", "digits", *S, "--out", str(tmp_path / "run"), *extra])


def test_disk_full_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    real = os.fsync

    def full(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", full)
    assert _run(tmp_path) == 1
    err = capsys.readouterr().err
    assert "run/last.pt: cannot write: No space left on device (ENOSPC); free some space" in err, err
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert issubclass(WriteError, OSError)


def test_config_values_are_refused_by_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra, key in [("--device=cuda:99999999999999999999", "train.device"), ("--model.tau_m=1e308", "model.tau_m"),
                       ("--model.fc_init=1e39", "model.fc_init"), ("--model.thresholds=1e-45,5", "model.thresholds")]:
        assert _run(tmp_path, extra) == 2
        err = capsys.readouterr().err
        assert f"config error: {key}" in err, err
        assert "theta_eps" not in err.split(":")[1]  # the threshold is blamed, not theta_eps


def test_crafted_checkpoint_config_and_weights_disagree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path) == 0
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    ck["config"]["model"]["arch"] = "64-99999999-10"
    save_checkpoint({k: v for k, v in ck.items() if k != "sha256"}, tmp_path / "crafted.pt")
    assert main(["eval", str(tmp_path / "crafted.pt")]) == 1
    err = capsys.readouterr().err
    assert "crafted.pt: its config's architecture '64-99999999-10' has 7,399,999,926 weights, the checkpoint " \
           "holds 2,960" in err, err
    # an architecture the parser refuses outright is reported against the file too
    ck["config"]["model"]["arch"] = "64-99999999999-10"
    save_checkpoint({k: v for k, v in ck.items() if k != "sha256"}, tmp_path / "crafted2.pt")
    assert main(["eval", str(tmp_path / "crafted2.pt")]) == 1
    err = capsys.readouterr().err
    assert "crafted2.pt: its config is not valid: model.arch" in err, err


def test_every_update_skipped_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "--model.fc_init=1e30") == 1
    err = capsys.readouterr().err
    assert "epoch 1: all 14 update(s) were skipped" in err and "model.fc_init" in err, err
    assert "lateral loop gain" not in err


def test_huge_learning_rate_warns_that_weights_diverge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hm2bp.train.update_checks import DivergenceWarning

    with pytest.warns(DivergenceWarning, match=r"the weights diverge: .* train.lr = 1e\+10 is too large"):
        rc = _run(tmp_path, "--train.lr=1e10")
    assert rc in (0, 1)  # it may also end in non-finite weights, which is an error naming train.lr
    if rc == 1:
        assert "train.lr" in capsys.readouterr().err


def test_skip_cause_names_the_real_cause() -> None:
    from hm2bp.config import load_config
    from hm2bp.train.loop import build_model
    from hm2bp.train.update_checks import skip_cause

    cfg = load_config("digits", ["model.arch=64-40-10"])
    model = build_model(cfg)
    assert "lateral loop gain" in skip_cause(cfg, model)
    with torch.no_grad():
        model.layers[0].weight.mul_(1e7)
    assert "weights diverged" in skip_cause(cfg, model) and "train.lr" in skip_cause(cfg, model)
    cfg0 = load_config("digits", ["model.arch=64-40-10", "model.lateral_inhibition=0"])
    assert "overflow" in skip_cause(cfg0, build_model(cfg0))


def test_export_nir_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("nir")
    from hm2bp.nir_io import load_nir
    from hm2bp.train.loop import model_from_checkpoint

    assert _run(tmp_path) == 0
    out = tmp_path / "net.nir"
    assert main(["export-nir", str(tmp_path / "run" / "last.pt"), str(out)]) == 0
    assert "net.nir: digits (64-40-10) after epoch 1, dt = 0.0001 s" in capsys.readouterr().out
    model, _, _ = model_from_checkpoint(tmp_path / "run" / "last.pt")
    back = load_nir(out)
    x = (torch.rand(30, 4, 64, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    assert main(["export-nir", str(tmp_path / "missing.pt"), str(out)]) == 1


def test_resume_with_other_thread_count_warns(tmp_path: Path) -> None:
    from hm2bp.config import load_config
    from hm2bp.train.loop import train
    from hm2bp.train.preflight import ThreadsChangedWarning

    over = ["data.n_train=60", "data.digits_n_test=20", "model.T=20", "model.arch=64-12-10", "model.desired=10",
            "model.undesired=2", "train.batch_size=20", "train.plots=false", "train.tensorboard=false",
            f"train.out_dir={tmp_path / 'r'}"]
    train(load_config("digits", over + ["train.epochs=1", "train.threads=1"]), quiet=True)
    with pytest.warns(ThreadsChangedWarning, match="train.threads changes from 1 to 2; .* bit for bit"):
        train(load_config("digits", over + ["train.epochs=2", "train.threads=2"]), resume=True, quiet=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ThreadsChangedWarning)
        train(load_config("digits", over + ["train.epochs=3", "train.threads=2"]), resume=True, quiet=True)
