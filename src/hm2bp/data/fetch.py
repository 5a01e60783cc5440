"""``hm2bp download DATASET ROOT``: :func:`~hm2bp.data.download.fetch_dataset` with a progress bar and
messages a user can act on (what was fetched, where it went, what to do offline).

Progress follows the size of the ``.part`` file that :func:`~hm2bp.data.download.download` is writing
(polled from a thread; a bar on a terminal, periodic lines in a log), so the download code itself stays
free of display concerns.
"""

from __future__ import annotations

import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from ..errors import DataFormatError
from .download import DATASETS, DownloadError, RemoteFile, fetch_dataset

__all__ = ["PartFileProgress", "run_download"]

#: What the loaders need after the download, per dataset (the --data-dir to pass).
_NEXT = {
    "mnist": "hm2bp train mnist_fc --data-dir {root}",
    "emnist": "hm2bp train emnist_fc --data-dir {root}",
    "nmnist": "hm2bp train nmnist_fc --data-dir {root}",
    "fsdd": "hm2bp train fsdd --data-dir {root}",
}


class PartFileProgress:
    """Progress of each downloaded file, read from the size of its ``.part`` file: a tqdm bar on a
    terminal, a log line every ``log_every`` seconds otherwise (default: ``HM2BP_PROGRESS_INTERVAL``, 30 s,
    as :mod:`hm2bp.progress`), nothing when ``quiet``."""

    def __init__(self, quiet: bool = False, interval: float = 0.2, log_every: float | None = None,
                 stream: Any = None) -> None:
        from ..progress import default_interval

        self.quiet = quiet
        self.interval = interval
        self.log_every = default_interval() if log_every is None else log_every
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._parts: list[Path] = []
        self._name = ""
        self._total: int | None = None
        self._lock = threading.Lock()

    def start(self, url: str, dest: Path, f: RemoteFile) -> None:
        """Called by fetch_dataset before each download: follow ``dest``'s part file from now on."""
        self.close()
        if self.quiet:
            return
        self._parts = [dest.with_name(dest.name + ".gz.part"), dest.with_name(dest.name + ".part")]
        self._name = dest.name
        self._total = None if f.gzip else f.size  # a .gz source's compressed size is not registered
        if getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is in the 'train' extra
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=self._total, desc=dest.name, unit="B", unit_scale=True, unit_divisor=1024,
                                 leave=False, dynamic_ncols=True, file=self.stream)
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _size(self) -> int:
        size = 0
        for p in self._parts:
            try:
                size = max(size, p.stat().st_size)
            except OSError:
                pass
        return size

    def _poll(self) -> None:
        import time

        last_log = time.monotonic()
        while not self._stop.wait(self.interval):
            size = self._size()
            with self._lock:
                if self._bar is not None:
                    if size > self._bar.n:
                        self._bar.update(size - self._bar.n)
                elif time.monotonic() - last_log >= self.log_every:
                    last_log = time.monotonic()
                    of = f" of {self._total / 2**20:.1f} MiB ({100 * size / self._total:.0f} %)" if self._total else ""
                    print(f"{self._name}: {size / 2**20:.1f} MiB{of} received", file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def _offline_help(name: str, root: Path, error: Exception) -> str:
    spec = DATASETS[name]
    hosts = sorted({urllib.parse.urlsplit(m).netloc for m in spec.mirrors})
    urls = [m.rstrip("/") + "/" + f.source for m in spec.mirrors[:1] for f in spec.files]
    names = ", ".join(f.name for f in spec.files)
    return (f"hm2bp: cannot download {name}: {error}\n"
            f"  no connection to {', '.join(hosts)}: is this machine offline (or behind a proxy: set https_proxy)?\n"
            f"  on a machine with network access fetch\n    " + "\n    ".join(urls) + "\n"
            f"  and put them into {root} as {names}; then rerun 'hm2bp download {name} {root}': it verifies "
            f"{'and unpacks ' if any(f.unpack for f in spec.files) else ''}them without downloading. "
            f"Partial downloads (*.part) are kept and resumed.")


def run_download(name: str, root: str | Path, *, mirrors: list[str] | None = None, timeout: float = 60.0,
                 retries: int = 3, quiet: bool = False) -> int:
    """Fetch dataset ``name`` into ``root`` for the command line; returns the exit status (0 = done)."""
    from ..errors import ConfigError

    key = name.strip().lower()
    if key not in DATASETS:
        raise ConfigError(f"no download for dataset {name!r}; available: {', '.join(sorted(DATASETS))} "
                          "(TI46 is licensed by the LDC and cannot be downloaded)")
    root = Path(root).expanduser().resolve()
    progress = PartFileProgress(quiet=quiet)
    say = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    say(f"{key}: {DATASETS[key].note}")
    try:
        fetch_dataset(key, root, mirrors=mirrors, timeout=timeout, retries=retries, echo=say, on_file=progress.start)
    except DownloadError as e:
        progress.close()
        print(_offline_help(key, root, e), file=sys.stderr)
        return 1
    except DataFormatError as e:
        progress.close()
        print(f"hm2bp: {key}: the downloaded files failed verification and were deleted: {e}", file=sys.stderr)
        return 1
    finally:
        progress.close()
    print(f"{key}: verified files in {root}")
    print(f"next: {_NEXT[key].format(root=root)}")
    return 0
