"""Progress of long phases (#17 item 1): the helper's bar and log lines, and that training, evaluation,
`hm2bp eval` and `hm2bp plot` use it; the start-of-run time estimate (#17 item 5)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from hm2bp.progress import Progress, format_duration


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_off_a_terminal_name_the_phase_and_give_an_eta() -> None:
    out = io.StringIO()
    with Progress(10, "epoch 3/7", stream=out, first_s=0.0, interval_s=0.0) as bar:
        for _ in range(5):
            bar.update(2, loss="0.50")
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2  # the first update's line (due at once), later ones 0.5 s apart at most, the last
    assert re.fullmatch(r"epoch 3/7: 2/10 samples \(20\.0%\), [0-9.]+ samples/s, loss 0\.50, ETA \S+", lines[0])
    assert lines[-1].startswith("epoch 3/7: 10/10 samples (100.0%)") and "done in" in lines[-1]


def test_short_phases_and_disabled_progress_print_nothing() -> None:
    out = io.StringIO()
    with Progress(10, "quick", stream=out, first_s=60.0) as bar:
        bar.update(10)
    with Progress(10, "quiet", stream=out, first_s=0.0, enabled=False) as bar:
        bar.update(10)
    assert out.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar() -> None:
    pytest.importorskip("tqdm")
    out = _Tty()
    with Progress(4, "test evaluation", stream=out) as bar:
        bar.update(4)
    text = out.getvalue()  # tqdm redraws at most every 0.1 s: the opening frame is there
    assert "\rtest evaluation:" in text and "/4 [" in text and "sample/s" in text


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 42, 185, 7620, 3 * 86400 + 4 * 3600)] == \
        ["0.2s", "42s", "3m05s", "2h07m", "3d04h"]
    assert format_duration(float("inf")) == "?"


TINY = ["model.arch=64-12-10", "model.T=16", "model.thresholds=3,3", "model.desired=6", "model.undesired=1",
        "model.margin=1", "data.n_train=24", "data.n_test=12", "train.tensorboard=false", "train.threads=1",
        "train.mode=minibatch", "train.batch_size=8"]


def test_training_eval_and_plot_report_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    from hm2bp.cli import main

    monkeypatch.setenv("HM2BP_PROGRESS_FIRST", "0")  # every phase of the tiny run is "long"
    run = tmp_path / "run"
    assert main(["train", "digits", "--epochs", "2", "--out", str(run), "--no-plots", *[f"--{o}" for o in TINY]]) == 0
    cap = capsys.readouterr()
    # 22 of the 24 training images: the digits preset holds 10 % out for validation, which reports too
    assert re.search(r"^epoch 1/2: \d+/22 samples .*ETA", cap.err, re.M), cap.err
    assert re.search(r"^validation: 2/2 samples .*done in", cap.err, re.M), cap.err
    assert re.search(r"^test evaluation: 12/12 samples .*done in", cap.err, re.M), cap.err
    est = [ln for ln in cap.out.splitlines() if ln.startswith("estimated time: ")]
    assert len(est) == 1 and re.search(r"per epoch \(.* training, .* evaluation\), .* for the 2 epochs to go", est[0])
    assert re.search(r"^epoch 1/2 .*, ~\S+ left$", cap.out, re.M), cap.out
    assert main(["eval", str(run / "best.pt")]) == 0
    assert re.search(r"^evaluating best\.pt: 12/12 samples", capsys.readouterr().err, re.M)
    pytest.importorskip("matplotlib")
    assert main(["plot", str(run)]) == 0
    assert "evaluation for the plots: 12/12 samples" in capsys.readouterr().err
