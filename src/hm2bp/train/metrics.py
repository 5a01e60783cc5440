"""Per-epoch metrics: a JSON-lines log (``metrics.jsonl``) and an optional TensorBoard writer.

Crash safety: a record is appended with a single ``write`` of the whole line to a file opened with
``O_APPEND``, then fsync'ed, so a killed process leaves whole lines only (at worst without its last
record). A resumed run replaces the log atomically with the records of its checkpoint, so epochs that
an interrupted run logged after its last checkpoint do not appear twice and a kill during the rewrite
leaves the previous log intact. :func:`read_metrics` rejects a damaged log with a
:class:`~hm2bp.errors.DataFormatError` naming the file and line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import DataFormatError
from ..io.files import write_error

__all__ = ["MetricsLog", "read_metrics"]

_TB_KEYS = ("lr", "train_loss", "train_cost_as_logged", "train_acc", "val_acc", "test_acc", "best_test_acc", "mean_output_count", "boost_max")


class MetricsLog:
    """Appends one JSON object per epoch to ``<out>/metrics.jsonl``; mirrors scalars to TensorBoard.

    Keys of a record: ``epoch`` (counted from 1, as on the console), ``lr``, ``train_loss``, ``train_acc``, ``test_acc``,
    ``best_test_acc``, ``epoch_time_s``, ``wall_time_s`` (since the start of the run, resumes included),
    ``step``, ``mean_output_count``, ``boost_mean``, ``boost_max``, ``skipped_steps`` (updates skipped
    because of non-finite gradients), ``train_cost_as_logged``. Accuracies are fractions in [0, 1].
    ``train_loss`` is the mean per-sample data loss of the training pass, the quantity training lowers,
    without boost weights or regulariser (rate loss: Σ_i ½(o_i − y_i)² outside the dead zone; softmax:
    cross-entropy). ``train_cost_as_logged`` is the cost as the authors' code logs it (docs/algorithm.md §3.1), to
    compare with their logs: no ½, and read after the spike insertion of §3.2 (a silent label neuron counts
    its inserted spikes).
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, tensorboard: bool = False, fresh: bool = True,
                 keep: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or keep is not None:
            # a fresh run starts an empty log; a resumed run rewrites the log from the checkpoint's records,
            # so epochs logged after the checkpoint (by the interrupted run) do not appear twice
            from .checkpoint import atomic_write_bytes

            atomic_write_bytes(self.path, "".join(_line(rec) for rec in keep or []).encode("utf-8"))
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard not installed (or broken): skip silently
                self._tb = None
            else:
                self._tb = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        data = _line(record).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # one write() for a regular file; loop only in case of a short write
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            raise write_error(self.path, e) from e  # a full disk names the file (#18 item 17)
        finally:
            os.close(fd)
        if self._tb is not None:
            for k in _TB_KEYS:
                if isinstance(record.get(k), (int, float)):
                    self._tb.add_scalar(k, record[k], record["epoch"])
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``metrics.jsonl`` (a file, or a run folder holding one).

    Raises:
        DataFormatError: the file is missing or unreadable, a line is not a complete JSON object (e.g. cut
            short), or the epochs are not 1, 2, 3, … in order (e.g. an epoch logged twice; logs written
            before epochs were counted from 1 read as 0, 1, 2, …).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(p, "metrics log not found") from None
    except OSError as e:
        raise DataFormatError(p, f"cannot read: {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(p, f"not UTF-8 text ({e})") from None
    if text and not text.endswith("\n"):
        raise DataFormatError(p, "the last line is incomplete (no line end): the log was cut short")
    records: list[dict[str, Any]] = []
    first = 1
    for n, line in enumerate(text.split("\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError) as e:
            raise DataFormatError(p, f"line {n} is not valid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise DataFormatError(p, f"line {n}: expected a JSON object, got {type(rec).__name__}")
        epoch = rec.get("epoch")
        if not records and epoch == 0:
            first = 0  # a log of an older version
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch != len(records) + first:
            raise DataFormatError(p, f"line {n}: expected epoch {len(records) + first}, got {epoch!r}")
        records.append(rec)
    return records
