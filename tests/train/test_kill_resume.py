"""Kill or interrupt a real ``python -m hm2bp train`` run at many points, resume it, compare with a clean run.

The run: scikit-learn digits, 300 training / 100 test samples, 64-40-10, T = 30, mini-batch 20 (15 updates
per epoch), Adam, boosting, a fresh permutation per epoch, 3 epochs, 1 thread (test accuracy 0.15, 0.26,
0.48: every epoch improves, so every epoch writes best.pt too).

Kill points (every kill is a real SIGKILL of the child process):

* ``test_random_sigkills``: three kills of one run, each followed by ``--resume`` (or a fresh start when no
  ``last.pt`` exists yet): (1) after a random delay, (2) as soon as a ``.last.pt.*.tmp`` temporary file is
  seen (the parent polls the folder every millisecond, so the kill lands during or just after a checkpoint
  write), (3) after a random delay. Delays are drawn from ``random.Random(SEED)`` as a fraction of the
  remaining training time of the reference run, counted from the moment the child has written config.json
  (i.e. finished loading); what code the kill interrupts still depends on the machine's speed.
* ``test_sigkill_at_injected_points``: the child runs the same CLI (``hm2bp.cli.main``) with hooks that
  SIGKILL the process itself at exact places, one per process, three in a row on one run:
  1. inside the write of epoch 1's ``last.pt`` (bytes written to the temp file, before fsync/rename);
  2. inside the resumed run's atomic rewrite of ``metrics.jsonl`` (temp written, not renamed);
  3. right after epoch 1's line was appended to ``metrics.jsonl``, before its ``last.pt`` (the line is
     then logged again by the resumed run: it must not appear twice).
* ``test_sigkill_between_last_and_best_checkpoint``: a kill right after the final improving epoch's
  ``last.pt`` was renamed into place, before its ``best.pt`` (``save_run_checkpoints`` writes last.pt
  first; the resumed run completes best.pt from it, ``repair_best``).

Mid-epoch points (``progress`` in ``last.pt``; the resumed run continues at the next update):

* ``test_sigint_mid_epoch``: a real SIGINT, raised in the child during update 7 of epoch 2: the handler
  lets the update finish, writes ``last.pt`` there, exits 130 and says exactly that on stderr.
* ``test_sigterm_during_evaluation``: a real SIGTERM between epoch 2's training pass and its evaluation:
  the evaluation stops, ``last.pt`` holds the finished pass (before the boost update), exit 143.
* ``test_signals_from_outside_at_random_points``: the parent sends SIGINT, SIGTERM, SIGINT after random
  delays (whatever the child is doing: loading, training, evaluating, writing, or already done).
* ``test_periodic_checkpoint_then_sigkill``: ``train.checkpoint_every_steps=4``, SIGKILL right after the
  second periodic ``last.pt`` (update 8 of epoch 1); resumed without the key (it may change on resume).

After every kill, every file under its final name must parse (``load_checkpoint``, ``read_metrics``, JSON)
and hold a prefix of the reference run; after the last resume the weights, optimizer state, boost weights,
data order, RNG state and metrics (except the wall-clock fields) of ``last.pt`` and ``best.pt`` and the lines
of ``metrics.jsonl`` must equal those of one uninterrupted run, with no temporary file left.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from hm2bp.train.checkpoint import load_checkpoint
from hm2bp.train.metrics import read_metrics

pytestmark = [
    pytest.mark.reliability,
    pytest.mark.requires("sklearn"),  # every test trains on scikit-learn's digits
    pytest.mark.slow,  # minutes of repeated training runs: .ci/run runs them in its own step (-m slow)
    pytest.mark.skipif(not hasattr(signal, "SIGKILL") or os.name == "nt", reason="needs POSIX SIGKILL"),
]

SEED = 20240611  # seed of the random kill delays
EPOCHS = 3
OVERRIDES = ["model.arch=64-40-10", "model.thresholds=1.5,4", "model.T=30", "model.desired=8", "model.undesired=1",
             "model.margin=1", "data.n_train=300", "data.n_val=0", "data.val_fraction=0", "data.n_test=100",
             "train.batch_size=20", "train.lr=0.02",
             "train.tensorboard=false"]
FINAL_FILES = {"config.json", "metrics.jsonl", "last.pt", "best.pt"}
LOCK = ".hm2bp-train.lock"  # left by a killed run (taken over by the next one), removed by a finished one
N_BATCHES = 15
TIME_KEYS = {"epoch_time_s", "train_time_s", "wall_time_s"}
TEMP = re.compile(r"^\..+\.tmp$")
PROC_TIMEOUT = 300.0

# Run in the child before hm2bp's CLI: SIGKILL this process at the n-th occurrence of an event.
# Events: "<file>-fsync" (inside atomic_write_bytes of <file>: temp file written, before fsync and rename),
# "<file>-replaced" (right after the rename onto <file>), "metrics-line" (right after a metrics.jsonl append).
# HM2BP_TEST_SIGNAL="step:N:SIG" sends SIG to this process during its N-th update, "boost:N:SIG" between
# the N-th training pass and its evaluation.
KILL_HOOK = r"""
import os, signal, sys, tempfile
event, nth = os.environ.get("HM2BP_TEST_KILL", "none:0").rsplit(":", 1)
nth = int(nth)
counts = {}
def hit(ev):
    counts[ev] = counts.get(ev, 0) + 1
    if ev == event and counts[ev] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
TARGETS = ("last.pt", "best.pt", "metrics.jsonl", "config.json")
temp_fd = {}
_mkstemp, _fsync, _replace = tempfile.mkstemp, os.fsync, os.replace
def mkstemp(*a, **k):
    fd, path = _mkstemp(*a, **k)
    base = os.path.basename(path)
    for t in TARGETS:
        if base.startswith("." + t + "."):
            temp_fd[fd] = t
    return fd, path
def fsync(fd):
    t = temp_fd.pop(fd, None)
    if t is not None:
        hit(t + "-fsync")
    return _fsync(fd)
def replace(src, dst, *a, **k):
    out = _replace(src, dst, *a, **k)
    base = os.path.basename(os.fspath(dst))
    if base in TARGETS:
        hit(base + "-replaced")
    return out
tempfile.mkstemp, os.fsync, os.replace = mkstemp, fsync, replace
import hm2bp.train.metrics as _m
_log = _m.MetricsLog.log
def log(self, record):
    _log(self, record)
    hit("metrics-line")
_m.MetricsLog.log = log
spec = os.environ.get("HM2BP_TEST_SIGNAL")
if spec:
    import hm2bp.train.loop as _L
    where, n_sig, sig_name = spec.split(":")
    meth = {"step": "train_step", "boost": "_boosted"}[where]
    orig = getattr(_L.Trainer, meth)
    calls = [0]
    def wrapped(self, *a, **k):
        calls[0] += 1
        if calls[0] == int(n_sig):
            os.kill(os.getpid(), getattr(signal, sig_name))
        return orig(self, *a, **k)
    setattr(_L.Trainer, meth, wrapped)
from hm2bp.cli import main
sys.exit(main(sys.argv[1:]))
"""


# --------------------------------------------------------------------------------------------------
# Running the CLI
# --------------------------------------------------------------------------------------------------
def _argv(out: Path, resume: bool, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["train", "digits", "--out", str(out), "--threads", "1", "--epochs", str(EPOCHS), "-q", "--no-plots"]
    return args + [f"--{o}" for o in OVERRIDES] + list(extra) + (["--resume"] if resume else [])


def _env(kill_at: str | None = None, signal_at: str | None = None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("HM2BP_TEST_KILL", None)
    env.pop("HM2BP_TEST_SIGNAL", None)
    if kill_at:
        env["HM2BP_TEST_KILL"] = kill_at
    if signal_at:
        env["HM2BP_TEST_SIGNAL"] = signal_at
    return env


def _launch(out: Path, *, kill_at: str | None = None, signal_at: str | None = None,
            extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], bool, Path]:
    """Start a run in ``out``: ``--resume`` when ``last.pt`` exists, else a fresh start (nothing to resume)."""
    resume = (out / "last.pt").exists()
    n = len(list(out.parent.glob(f"{out.name}.*.log")))
    log = out.parent / f"{out.name}.{n}.log"
    hooked = kill_at is not None or signal_at is not None
    cmd = [sys.executable, "-c", KILL_HOOK] if hooked else [sys.executable, "-m", "hm2bp"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd + _argv(out, resume, extra), stdout=f, stderr=subprocess.STDOUT,
                                env=_env(kill_at, signal_at))
    return proc, resume, log


def _finish(proc: subprocess.Popen[bytes], log: Path) -> str:
    rc = proc.wait(timeout=PROC_TIMEOUT)
    text = log.read_text(errors="replace")
    assert rc == 0, f"training exited with {rc}:\n{text[-3000:]}"
    return text


def _kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the child if it still runs; True when it was killed (False: it had already exited)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=PROC_TIMEOUT)
    return rc == -signal.SIGKILL


def _died_by_own_sigkill(proc: subprocess.Popen[bytes]) -> bool:
    return proc.wait(timeout=PROC_TIMEOUT) == -signal.SIGKILL


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _wait_for_training(proc: subprocess.Popen[bytes], out: Path, before: tuple[int, int] | None) -> None:
    """Wait until the child rewrote config.json (data loaded, training about to start) or exited."""
    deadline = time.monotonic() + PROC_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        now = _stat(out / "config.json")
        if now is not None and now != before:
            return
        time.sleep(0.005)


# --------------------------------------------------------------------------------------------------
# Comparing runs
# --------------------------------------------------------------------------------------------------
def _strip(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k not in TIME_KEYS} for m in metrics]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _checkpoint_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Keys of two checkpoints whose content differs (metrics compared without wall-clock fields)."""
    diff = []
    for k in sorted(set(a) | set(b)):
        if k == "torch_version":
            continue
        va, vb = a.get(k), b.get(k)
        if k == "metrics":
            va, vb = _strip(va or []), _strip(vb or [])
        if k == "config":
            va, vb = ({**c, "train": {**c["train"], "out_dir": ""}} for c in (va, vb))
        if not _same(va, vb):
            diff.append(k)
    return diff


class Reference:
    def __init__(self, out: Path, stdout: str) -> None:
        self.out = out
        self.last = load_checkpoint(out / "last.pt")
        self.best = load_checkpoint(out / "best.pt")
        self.metrics = read_metrics(out)
        self.config = _config(out / "config.json")
        self.train_time = float(self.metrics[-1]["wall_time_s"])
        self.result_line = _result_line(stdout)
        accs = [m["test_acc"] for m in self.metrics]
        self.improving = [e for e, acc in enumerate(accs) if acc > max(accs[:e], default=-1.0)]


def _config(path: Path) -> dict[str, Any]:
    """config.json without the run folder (which differs between the runs compared) and the checkpoint
    cadence (which may change on resume)."""
    d = json.loads(path.read_text())
    for key in ("out_dir", "checkpoint_every_steps", "checkpoint_every_minutes"):
        d["train"].pop(key)
    return d


def _result_line(stdout: str) -> str:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("test accuracy:")]
    assert lines, stdout[-2000:]
    return lines[-1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    out = tmp_path_factory.mktemp("kill") / "reference"
    proc, _, log = _launch(out)
    ref = Reference(out, _finish(proc, log))
    assert [m["epoch"] for m in ref.metrics] == list(range(1, EPOCHS + 1))
    assert ref.improving == list(range(EPOCHS)), "the tiny run should improve in every epoch"
    assert {p.name for p in out.iterdir()} == FINAL_FILES
    return ref


def _check_after_kill(out: Path, ref: Reference) -> dict[str, Any]:
    """Every file under a final name parses and holds a prefix of the reference run; returns the state."""
    names = {p.name for p in out.iterdir()} if out.exists() else set()
    temps = sorted(n for n in names if TEMP.match(n))
    assert names - set(temps) <= FINAL_FILES | {LOCK}, names
    state: dict[str, Any] = {"last_epoch": None, "best_epoch": None, "metrics_lines": None, "temps": temps,
                             "last_batch": None}
    for name in ("last.pt", "best.pt"):
        if name in names:
            ck = load_checkpoint(out / name)  # raises CheckpointError on a partial/corrupt file
            e = int(ck["epoch"])
            prog = ck.get("progress")
            if prog is None:
                assert 1 <= e <= EPOCHS
            else:  # mid-epoch: e epochs done, the next one in progress
                assert name == "last.pt" and 0 <= e < EPOCHS and prog["epoch"] == e
                assert 1 <= prog["batch"] <= N_BATCHES and ck["step"] == e * N_BATCHES + prog["batch"]
                state["last_batch"] = prog["batch"]
            assert _strip(ck["metrics"]) == _strip(ref.metrics[:e])
            state[f"{name[:4]}_epoch"] = e
    if "metrics.jsonl" in names:
        metrics = read_metrics(out)  # raises DataFormatError on a half-written line or a repeated epoch
        assert _strip(metrics) == _strip(ref.metrics[: len(metrics)])
        done = state["last_epoch"] or 0
        assert len(metrics) in (done - 1, done), (len(metrics), done)  # a line follows its checkpoint
        state["metrics_lines"] = len(metrics)
    if "config.json" in names:
        assert _config(out / "config.json") == ref.config
    return state


def _assert_same_run(out: Path, ref: Reference, stdout: str) -> None:
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if TEMP.match(n)], f"temporary files left: {names}"
    assert _checkpoint_diff(load_checkpoint(out / "last.pt"), ref.last) == []
    assert _strip(read_metrics(out)) == _strip(ref.metrics)
    assert _config(out / "config.json") == ref.config
    assert _result_line(stdout) == ref.result_line
    best = load_checkpoint(out / "best.pt") if (out / "best.pt").exists() else None
    if best is not None and _checkpoint_diff(best, ref.best) == []:
        assert names == FINAL_FILES
        return
    raise AssertionError(f"best.pt differs from the uninterrupted run's: {best and _checkpoint_diff(best, ref.best)}")


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------
def test_random_sigkills(tmp_path: Path, reference: Reference) -> None:
    rng = random.Random(SEED)
    out = tmp_path / "run"
    report = []
    for kind in ("random", "temp-file", "random"):
        before = _stat(out / "config.json")
        done = (load_checkpoint(out / "last.pt")["epoch"] if (out / "last.pt").exists() else 0)
        proc, resumed, log = _launch(out)
        _wait_for_training(proc, out, before)
        if kind == "random":
            delay = rng.random() * reference.train_time * (EPOCHS - done) / EPOCHS
            time.sleep(delay)
            what = f"after {delay:.3f} s of training"
        else:
            deadline = time.monotonic() + 10 * reference.train_time + 30
            while proc.poll() is None and time.monotonic() < deadline:
                if out.is_dir() and any(n.startswith(".last.pt.") for n in os.listdir(out)):
                    break
                time.sleep(0.001)
            what = "at the first sight of a last.pt temp file"
        killed = _kill(proc)
        state = _check_after_kill(out, reference)
        report.append((kind, what, "resumed" if resumed else "fresh start", killed, state))
    for r in report:
        print("kill:", *r)
    proc, _, log = _launch(out)
    stdout = _finish(proc, log)
    _assert_same_run(out, reference, stdout)


INJECTED = [  # (event:n in that process, what it interrupts)
    ("last.pt-fsync:2", "write of epoch 2's last.pt: temp file written, not yet fsync'ed or renamed"),
    ("metrics.jsonl-fsync:1", "the resumed run's atomic rewrite of metrics.jsonl: temp written, not renamed"),
    ("metrics-line:1", "right after epoch 2's metrics line (its last.pt and best.pt are written before it)"),
]


def test_sigkill_at_injected_points(tmp_path: Path, reference: Reference) -> None:
    out = tmp_path / "run"
    expected = [  # (resumed?, last.pt epoch, metrics lines, temp files) after each kill
        (False, 1, 1, [".last.pt."]),
        (True, 1, 1, [".metrics.jsonl."]),
        (True, 2, 2, []),
    ]
    for (kill_at, what), (exp_resumed, exp_epoch, exp_lines, exp_temps) in zip(INJECTED, expected):
        proc, resumed, log = _launch(out, kill_at=kill_at)
        killed = _died_by_own_sigkill(proc)
        assert killed, f"{kill_at}: the child was not killed ({what}):\n{log.read_text()[-3000:]}"
        state = _check_after_kill(out, reference)
        print("kill:", kill_at, what, state)
        assert resumed == exp_resumed
        assert (state["last_epoch"], state["metrics_lines"]) == (exp_epoch, exp_lines), (kill_at, state)
        assert [t[: len(p)] for t, p in zip(state["temps"], exp_temps)] == exp_temps, (kill_at, state)
    proc, _, log = _launch(out)
    _assert_same_run(out, reference, _finish(proc, log))


def test_sigkill_between_last_and_best_checkpoint(tmp_path: Path, reference: Reference) -> None:
    """Kill right after the final improving epoch's last.pt is in place, before its best.pt is written.

    (A kill during that best.pt write has the same outcome: random kill 1 of ``test_random_sigkills``
    often lands there.)
    """
    out = tmp_path / "run"
    e = reference.improving[-1]  # index of the last improving epoch
    kill_at = "last.pt-replaced"
    proc, _, log = _launch(out, kill_at=f"{kill_at}:{e + 1}")
    assert _died_by_own_sigkill(proc), log.read_text()[-3000:]
    state = _check_after_kill(out, reference)
    print("kill:", kill_at, "epoch", e + 1, state)
    assert (state["last_epoch"], state["best_epoch"]) == (e + 1, e or None)  # best.pt one epoch behind
    proc, _, log = _launch(out)
    _assert_same_run(out, reference, _finish(proc, log))


# --------------------------------------------------------------------------------------------------
# Mid-epoch checkpoints: signals and periodic saves
# --------------------------------------------------------------------------------------------------
def _interrupted(proc: subprocess.Popen[bytes], log: Path, signum: int) -> str:
    rc = proc.wait(timeout=PROC_TIMEOUT)
    text = log.read_text(errors="replace")
    assert rc == 128 + signum, f"expected exit {128 + signum}, got {rc}:\n{text[-3000:]}"
    return text


def test_sigint_mid_epoch(tmp_path: Path, reference: Reference) -> None:
    out = tmp_path / "run"
    step = N_BATCHES + 7  # update 7 of epoch 2
    proc, _, log = _launch(out, signal_at=f"step:{step}:SIGINT")
    text = _interrupted(proc, log, signal.SIGINT)
    state = _check_after_kill(out, reference)
    assert (state["last_epoch"], state["last_batch"], state["metrics_lines"]) == (1, 7, 1), state
    assert f"{out / 'last.pt'} holds epoch 2 after update 7 of {N_BATCHES} (step {step}); continue with --resume" \
        in text, text[-2000:]
    assert not (out / LOCK).exists()  # a handled interrupt releases the folder
    proc, resumed, log = _launch(out)
    assert resumed
    _assert_same_run(out, reference, _finish(proc, log))


def test_sigterm_during_evaluation(tmp_path: Path, reference: Reference) -> None:
    out = tmp_path / "run"
    proc, _, log = _launch(out, signal_at="boost:2:SIGTERM")  # after epoch 2's pass, before its evaluation
    text = _interrupted(proc, log, signal.SIGTERM)
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 1 and ck["progress"]["batch"] == N_BATCHES
    assert torch.equal(ck["boost"], load_checkpoint(out / "best.pt")["boost"])  # boost update not yet applied
    assert f"holds epoch 2 after update {N_BATCHES} of {N_BATCHES}" in text
    _check_after_kill(out, reference)
    proc, _, log = _launch(out)
    _assert_same_run(out, reference, _finish(proc, log))


def test_signals_from_outside_at_random_points(tmp_path: Path, reference: Reference) -> None:
    rng = random.Random(SEED + 1)
    out = tmp_path / "run"
    report = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        before = _stat(out / "config.json")
        proc, resumed, log = _launch(out)
        _wait_for_training(proc, out, before)
        delay = rng.random() * reference.train_time * 0.6
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
        rc = proc.wait(timeout=PROC_TIMEOUT)
        # handled (128 + sig), before the handler was installed (-SIGTERM / 130 from KeyboardInterrupt), or done
        assert rc in (0, 128 + sig, -sig, 130), (rc, log.read_text()[-3000:])
        state = _check_after_kill(out, reference)
        report.append((sig.name, f"{delay:.3f} s", "resumed" if resumed else "fresh", rc, state))
    for r in report:
        print("signal:", *r)
    proc, _, log = _launch(out)
    _assert_same_run(out, reference, _finish(proc, log))


def test_periodic_checkpoint_then_sigkill(tmp_path: Path, reference: Reference) -> None:
    out = tmp_path / "run"
    proc, _, log = _launch(out, kill_at="last.pt-replaced:2", extra=("--train.checkpoint_every_steps=4",))
    assert _died_by_own_sigkill(proc), log.read_text()[-3000:]
    state = _check_after_kill(out, reference)
    assert (state["last_epoch"], state["last_batch"], state["metrics_lines"]) == (0, 8, 0), state
    proc, resumed, log = _launch(out)
    assert resumed
    _assert_same_run(out, reference, _finish(proc, log))
