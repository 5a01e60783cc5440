"""Command line: ``hm2bp train | eval | plot | config show | download``. Parses arguments and calls one
library function each.

Examples::

    hm2bp train                                   # the offline digits preset (scikit-learn's 8x8 digits)
    hm2bp download mnist data/mnist               # official files, verified
    hm2bp train mnist_fc --data-dir data/mnist    # a bundled preset
    hm2bp train mnist_fc --data-dir data/mnist --dry-run          # sizes, steps, time and memory only
    hm2bp train my.toml --train.lr=5e-4 --model.thresholds=20,8 --epochs 10
    hm2bp train mnist_fc --data-dir data/mnist --batch-size 64 --lr 5e-4 --n-train 1000
    hm2bp train mnist_fc --data-dir data/mnist --resume
    hm2bp config show mnist_fc --batch-size 64    # every key: value, meaning, type, default, range
    hm2bp eval runs/digits/best.pt --data.n_test=0                # e.g. the full test set
    hm2bp plot runs/digits
    torchrun --nproc-per-node 2 -m hm2bp train digits --threads 1   # data-parallel (docs/distributed.md)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig, apply_overrides, list_presets, load_config
from .errors import ConfigError, HM2BPError

__all__ = ["build_parser", "main"]

_SECTIONS = ("model.", "data.", "train.")

#: Short options for common keys: (flag, dotted key, type). Their help is the key's meaning (config_doc).
ALIASES: tuple[tuple[str, str, type], ...] = (
    ("--data-dir", "data.data_dir", str),
    ("--epochs", "train.epochs", int),
    ("--batch-size", "train.batch_size", int),
    ("--lr", "train.lr", float),
    ("--n-train", "data.n_train", int),
    ("--n-test", "data.n_test", int),
    ("--max-steps", "train.max_steps", int),
    ("--mode", "train.mode", str),
    ("--T", "model.T", int),
    ("--arch", "model.arch", str),
    ("--seed", "train.seed", int),
    ("--threads", "train.threads", int),
    ("--device", "train.device", str),
    ("--out", "train.out_dir", str),
)
#: Keys ``hm2bp eval`` may override: the data, and how the evaluation runs; the network is the checkpoint's.
EVAL_KEYS = ("data.", "train.eval_batch_size", "train.threads", "train.device", "model.T", "name")


def _split_dotted(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate dotted overrides (``--train.lr=1e-3``, ``--train.lr 1e-3``, ``train.lr=1e-3``) from the rest."""
    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        bare = tok.removeprefix("--")
        key = bare.split("=", 1)[0]
        if key.startswith(_SECTIONS) and (tok.startswith("--") or "=" in tok):
            if "=" in bare:
                overrides.append(bare)
            elif i + 1 < len(argv):
                overrides.append(f"{bare}={argv[i + 1]}")
                i += 1
            else:
                raise ConfigError(f"override {tok!r} needs a value, e.g. {tok}=VALUE")
        else:
            rest.append(tok)
        i += 1
    return rest, overrides


def _key_help(key: str) -> str:
    from .config_doc import key_docs

    doc = key_docs()[key]
    return f"{doc.meaning} ({key})".replace("%", "%%")


def _add_aliases(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    for flag, key, tp in ALIASES:
        if flag in skip:
            continue
        extra = "; > 1 also selects train.mode=minibatch unless a mode is given" if key == "train.batch_size" else ""
        p.add_argument(flag, dest=key, type=tp, default=None, metavar=key.split(".")[1].upper(),
                       help=_key_help(key) + extra)


def _train_epilog() -> str:
    from .config_doc import format_key_list

    presets = ", ".join(list_presets())
    return (
        f"bundled presets: {presets}\n"
        "  (without CONFIG: 'digits', scikit-learn's 8x8 handwritten digits, no download needed)\n\n"
        "every key can be set as a dotted override, cast to the key's type, e.g.\n"
        "  --train.lr=1e-3 --train.mode=minibatch --model.thresholds=20,8 --data.n_train=1000\n"
        "keys and defaults (meaning, type and allowed range: hm2bp config show PRESET):\n"
        f"{format_key_list()}\n\n"
        "the resolved config is written to <out>/config.json (with the data folder made absolute)"
    ).replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The ``hm2bp`` argument parser (``parser.subparsers`` maps each command to its own parser)."""
    parser = argparse.ArgumentParser(prog="hm2bp", description="Train and evaluate spiking networks with HM2-BP.")
    parser.add_argument("--version", action="version", version=f"hm2bp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,plot,config,download,export-nir}")
    subs: dict[str, argparse.ArgumentParser] = {}

    p = subs["train"] = sub.add_parser(
        "train", help="train a network from a preset or TOML config", description="Train a spiking network with HM2-BP.",
        epilog=_train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                   help="a preset name, a TOML file or a run's config.json (default: digits)")
    _add_aliases(p)
    p.add_argument("--resume", action="store_true", help="continue from <checkpoint_dir>/last.pt (a fresh start when there is none yet)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in the run folder (refused without it)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (dataset sizes, steps, estimated time and memory) and exit without training")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no per-epoch lines")
    p.add_argument("--no-plots", action="store_true", help="do not write plots at the end (train.plots=false)")
    p.set_defaults(func=_cmd_train)

    e = subs["eval"] = sub.add_parser(
        "eval", help="evaluate a checkpoint on its test set",
        description="Evaluate a checkpoint (best.pt / last.pt) on the test set of its config. Dotted overrides of "
                    "the data (e.g. --data.n_test=0 for the full test set after training on a subset, "
                    "--data.data_dir=DIR) and of train.eval_batch_size/threads/device apply; the network is the "
                    "checkpoint's.")
    e.add_argument("checkpoint", metavar="CHECKPOINT")
    e.add_argument("--data-dir", help="dataset folder, if it moved since training (data.data_dir)")
    e.add_argument("--n-test", dest="data.n_test", type=int, default=None, metavar="N",
                   help="test samples to load (data.n_test; 0 = the whole test set)")
    e.add_argument("--n", type=int, default=0, help="evaluate only the first N test samples")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    e.add_argument("--batch-size", type=int, default=0, help="evaluation batch size (default: the run's)")
    e.set_defaults(func=_cmd_eval)

    q = subs["plot"] = sub.add_parser(
        "plot", help="write PNG plots of a run folder",
        description="Training curves, spike raster, firing-count histograms and confusion matrix of a run folder "
                    "(needs matplotlib).")
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--checkpoint", help="checkpoint to plot (default: RUN_DIR/best.pt, else last.pt)")
    q.add_argument("--data-dir", help="dataset folder, if it moved since training")
    q.add_argument("--n", type=int, default=0, help="use only the first N test samples")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_cmd_plot)

    c = subs["config"] = sub.add_parser(
        "config", help="show a resolved config with every key's meaning, type, default and range",
        description="hm2bp config show [PRESET|FILE] [overrides]: the resolved config, each key with its meaning, "
                    "type, default and allowed range ('*' marks keys that differ from the default).")
    c.add_argument("action", choices=["show"])
    c.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                   help="a preset name, a TOML file or a run's config.json (default: digits)")
    _add_aliases(c)
    c.add_argument("--json", action="store_true", help="print the resolved config as JSON only")
    c.set_defaults(func=_cmd_config)

    d = subs["download"] = sub.add_parser(
        "download", help="download and verify a dataset (mnist, emnist, nmnist, fsdd)",
        description="Download a dataset's official files into ROOT, verify their checksums and unpack them "
                    "into the layout the loaders read (then: --data-dir ROOT). Files already there and verified "
                    "are kept; an interrupted download resumes.")
    d.add_argument("dataset", metavar="DATASET", help="mnist, emnist, nmnist or fsdd")
    d.add_argument("root", metavar="ROOT", help="folder to download into")
    d.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="base URL to download from instead of the registered mirrors (repeatable)")
    d.add_argument("--timeout", type=float, default=60.0, help="seconds without progress before a retry")
    d.add_argument("--retries", type=int, default=3, help="further attempts per file after a failure")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_download)
    subs["export-nir"] = _add_export_nir(sub)
    parser.subparsers = subs  # type: ignore[attr-defined]
    return parser


def _add_export_nir(sub: Any) -> argparse.ArgumentParser:
    """``hm2bp export-nir CHECKPOINT OUT.nir``: a checkpoint's network as a NIR file (docs/nir.md)."""
    x = sub.add_parser("export-nir", help="write a checkpoint's network as a NIR file",
                       description="Export the network of a checkpoint to NIR (HDF5), in the form snnTorch, "
                                   "SpikingJelly and Norse load (docs/nir.md); needs pip install hm2bp[nir].")
    x.add_argument("checkpoint", metavar="CHECKPOINT")
    x.add_argument("out", metavar="OUT.nir")
    x.add_argument("--dt", type=float, default=1e-4, help="seconds per step (default 1e-4, snnTorch's)")
    x.add_argument("--unit-w-in", action="store_true", help="write w_in = 1 (hm2bp's own potential scale)")
    x.set_defaults(func=_cmd_export_nir)
    return x


def _cmd_export_nir(args: argparse.Namespace, overrides: list[str]) -> int:
    from .nir_io import save_nir
    from .train.evaluate import model_from_checkpoint

    if overrides:
        raise ConfigError(f"export-nir takes no config overrides; got {' '.join(overrides)}")
    model, cfg, ck = model_from_checkpoint(args.checkpoint)
    save_nir(model, args.out, dt=args.dt, unit_w_in=args.unit_w_in)
    print(f"{args.out}: {cfg.name} ({model.arch}) after epoch {ck['epoch']}, dt = {args.dt:g} s")
    return 0


def _alias_overrides(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """The dotted overrides given as short options, before the explicit dotted ones (which win)."""
    flags = []
    for _, key, _ in ALIASES:
        v = getattr(args, key, None)
        if v is not None:
            if key == "data.data_dir":
                v = Path(v).expanduser().resolve()
            flags.append(f"{key}={v}")
    bs = getattr(args, "train.batch_size", None)
    if bs is not None and bs > 1 and getattr(args, "train.mode", None) is None \
            and not any(o.startswith("train.mode=") for o in overrides):
        flags.append("train.mode=minibatch")
    return flags + list(overrides)


def _absolute_data_dir(cfg: RunConfig) -> RunConfig:
    """The config with ``data.data_dir`` made absolute, so the run folder works from any directory."""
    if not cfg.data.data_dir:
        return cfg
    absolute = str(Path(cfg.data.data_dir).expanduser().resolve())
    return cfg if absolute == cfg.data.data_dir else apply_overrides(cfg, [f"data.data_dir={absolute}"])


def _resolve_train_config(args: argparse.Namespace, overrides: list[str]) -> RunConfig:
    flags = _alias_overrides(args, overrides)
    if getattr(args, "no_plots", False):
        flags.append("train.plots=false")
    return _absolute_data_dir(load_config(args.config, flags))


def _cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from .train.callbacks import plural
    from .train.distributed import env_world_size, is_main_process

    cfg = _resolve_train_config(args, overrides)
    if args.dry_run:
        from .train.plan import format_plan, make_plan

        print(format_plan(cfg, make_plan(cfg)), end="", flush=True)
        return 0
    from .train import train

    main_proc = is_main_process()  # under torchrun only rank 0 prints
    quiet = args.quiet or not main_proc
    if not quiet:
        world = env_world_size()
        procs = f", {world} processes" if world > 1 else ""
        print(f"run {cfg.name}: {cfg.data.dataset} {cfg.model.arch}, T={cfg.model.T}, {cfg.train.mode} "
              f"(batch {cfg.train.batch_size}{procs}), {plural(cfg.train.epochs, 'epoch')} -> {cfg.out_dir}", flush=True)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, quiet=quiet,
                   echo=lambda s: print(s, flush=True))
    if not quiet:
        print(f"run folder {result.out_dir}")  # the summary line above names the checkpoint chosen on validation
    if main_proc:
        print(f"test accuracy: {100 * result.test_acc:.2f}%", flush=True)
    return 0


def _eval_overrides(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    flags = []
    if args.data_dir:
        flags.append(f"data.data_dir={Path(args.data_dir).expanduser().resolve()}")
    n_test = getattr(args, "data.n_test")
    if n_test is not None:
        flags.append(f"data.n_test={n_test}")
    flags += overrides
    bad = [o for o in flags if not o.split("=", 1)[0].startswith(EVAL_KEYS)]
    if bad:
        raise ConfigError(f"eval cannot override {', '.join(o.split('=', 1)[0] for o in bad)}: the network is the "
                          f"checkpoint's; allowed: data.*, train.eval_batch_size, train.threads, train.device, model.T")
    return flags


def _cmd_eval(args: argparse.Namespace, overrides: list[str]) -> int:
    from .train import evaluate_checkpoint

    if args.n < 0 or args.batch_size < 0:
        raise ConfigError("--n and --batch-size must be >= 0")
    flags = _eval_overrides(args, overrides)
    res, cfg, ck = evaluate_checkpoint(args.checkpoint, n=args.n or None, device=args.device,
                                       batch_size=args.batch_size or None, overrides=flags)
    correct = int((res.predictions == res.labels).sum())
    prog = ck.get("progress")  # a mid-epoch checkpoint (Ctrl-C, periodic)
    when = (f"after epoch {ck['epoch']}" if prog is None else
            f"inside epoch {prog['epoch'] + 1} (after update {prog['batch']}, step {ck['step']})")
    print(f"{args.checkpoint}: {cfg.name} {when}, {cfg.data.dataset} test set, "
          f"{correct}/{res.n} correct")
    print(f"test accuracy: {100 * res.accuracy:.2f}%")
    return 0


def _cmd_plot(args: argparse.Namespace, overrides: list[str]) -> int:
    from .train.plots import plot_run

    if overrides:
        raise ConfigError(f"plot takes no config overrides; got {' '.join(overrides)}")
    paths = plot_run(args.run_dir, checkpoint=args.checkpoint, data_dir=args.data_dir, n_test=args.n or None,
                     device=args.device)
    for p in paths:
        print(p)
    return 0


def _cmd_config(args: argparse.Namespace, overrides: list[str]) -> int:
    import json

    from .config import config_to_dict
    from .config_doc import format_config

    cfg = _absolute_data_dir(load_config(args.config, _alias_overrides(args, overrides)))
    print(json.dumps(config_to_dict(cfg), indent=2) if args.json else format_config(cfg), end="\n" if args.json else "")
    return 0


def _cmd_download(args: argparse.Namespace, overrides: list[str]) -> int:
    from .data.fetch import run_download

    if overrides:
        raise ConfigError(f"download takes no config overrides; got {' '.join(overrides)}")
    return run_download(args.dataset, args.root, mirrors=args.mirror, timeout=args.timeout, retries=args.retries,
                        quiet=args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hm2bp`` and ``python -m hm2bp``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        rest, overrides = _split_dotted(args_list)
    except ConfigError as e:
        print(f"hm2bp: error: {e}", file=sys.stderr)
        return 2
    args, unknown = parser.parse_known_args(rest)
    if unknown:  # report it with the usage of the subcommand it was given to, not the top-level one
        target = parser.subparsers.get(args.command, parser)  # type: ignore[attr-defined]
        target.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args, overrides))
    except ConfigError as e:
        print(f"hm2bp: config error: {e}", file=sys.stderr)
        return 2
    except HM2BPError as e:
        if type(e).__name__ == "TrainingInterrupted":  # says what was saved; exit status 128 + signal
            print(f"hm2bp: {e}", file=sys.stderr)
            return 128 + int(getattr(e, "signum", 2))
        print(f"hm2bp: error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"hm2bp: missing dependency: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hm2bp: interrupted", file=sys.stderr)  # outside training: nothing was being saved
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
