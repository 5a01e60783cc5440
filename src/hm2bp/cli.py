"""Command line: ``hm2bp train | eval | plot``. Parses arguments and calls one library function each.

Examples::

    hm2bp train                                   # the offline digits preset (scikit-learn's 8x8 digits)
    hm2bp train mnist_fc --data-dir /data/mnist   # a bundled preset
    hm2bp train my.toml --train.lr=5e-4 --model.thresholds=20,8 --epochs 10
    hm2bp train mnist_fc --data-dir /data/mnist --resume
    hm2bp eval runs/digits/best.pt
    hm2bp plot runs/digits
    torchrun --nproc-per-node 2 -m hm2bp train digits --threads 1   # data-parallel (docs/distributed.md)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import RunConfig, list_presets, load_config
from .errors import ConfigError, HM2BPError

__all__ = ["build_parser", "main"]

_SECTIONS = ("model.", "data.", "train.")


def _split_dotted(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate dotted overrides (``--train.lr=1e-3``, ``--train.lr 1e-3``, ``train.lr=1e-3``) from the rest."""
    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        bare = tok[2:] if tok.startswith("--") else tok
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


def _train_epilog() -> str:
    presets = ", ".join(list_presets())
    return (
        f"bundled presets: {presets}\n"
        "  (without CONFIG: 'digits', scikit-learn's 8x8 handwritten digits, no download needed)\n\n"
        "dotted overrides, cast to the field's type, e.g.:\n"
        "  --train.lr=1e-3 --train.mode=minibatch --train.batch_size=32 --model.T=200\n"
        "  --model.thresholds=20,8 --data.n_train=1000 --train.boosting=false\n"
        "sections and keys: see hm2bp/config.py (ModelConfig, DataConfig, TrainConfig); the resolved\n"
        "config is written to <out>/config.json"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hm2bp", description="Train and evaluate spiking networks with HM2-BP.")
    parser.add_argument("--version", action="version", version=f"hm2bp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,eval,plot,export-nir}")

    p = sub.add_parser("train", help="train a network from a preset or TOML config",
                       description="Train a spiking network with HM2-BP.", epilog=_train_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                   help="a preset name, a TOML file or a run's config.json (default: digits)")
    p.add_argument("--data-dir", help="dataset folder (data.data_dir)")
    p.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    p.add_argument("--out", help="run folder (train.out_dir; default runs/<name>)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (train.device)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (train.threads)")
    p.add_argument("--resume", action="store_true", help="continue from <checkpoint_dir>/last.pt (a fresh start when there is none yet)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in the run folder (refused without it)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no per-epoch lines")
    p.add_argument("--no-plots", action="store_true", help="do not write plots at the end (train.plots=false)")
    p.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on its test set",
                       description="Evaluate a checkpoint (best.pt / last.pt) on the test set of its config.")
    e.add_argument("checkpoint", metavar="CHECKPOINT")
    e.add_argument("--data-dir", help="dataset folder, if it moved since training")
    e.add_argument("--n", type=int, default=0, help="evaluate only the first N test samples")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    e.add_argument("--batch-size", type=int, default=0, help="evaluation batch size (default: the run's)")
    e.set_defaults(func=_cmd_eval)

    q = sub.add_parser("plot", help="write PNG plots of a run folder",
                       description="Training curves, spike raster, firing-count histograms and confusion matrix "
                                   "of a run folder (needs matplotlib).")
    q.add_argument("run_dir", metavar="RUN_DIR")
    q.add_argument("--checkpoint", help="checkpoint to plot (default: RUN_DIR/best.pt, else last.pt)")
    q.add_argument("--data-dir", help="dataset folder, if it moved since training")
    q.add_argument("--n", type=int, default=0, help="use only the first N test samples")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_cmd_plot)
    _add_export_nir(sub)
    return parser


def _add_export_nir(sub: Any) -> None:
    """``hm2bp export-nir CHECKPOINT OUT.nir``: a checkpoint's network as a NIR file (docs/nir.md)."""
    x = sub.add_parser("export-nir", help="write a checkpoint's network as a NIR file",
                       description="Export the network of a checkpoint to NIR (HDF5), in the form snnTorch, "
                                   "SpikingJelly and Norse load (docs/nir.md); needs pip install hm2bp[nir].")
    x.add_argument("checkpoint", metavar="CHECKPOINT")
    x.add_argument("out", metavar="OUT.nir")
    x.add_argument("--dt", type=float, default=1e-4, help="seconds per step (default 1e-4, snnTorch's)")
    x.add_argument("--unit-w-in", action="store_true", help="write w_in = 1 (hm2bp's own potential scale)")
    x.set_defaults(func=_cmd_export_nir)


def _cmd_export_nir(args: argparse.Namespace, overrides: list[str]) -> int:
    from .nir_io import save_nir
    from .train.loop import model_from_checkpoint

    if overrides:
        raise ConfigError(f"export-nir takes no config overrides; got {' '.join(overrides)}")
    model, cfg, ck = model_from_checkpoint(args.checkpoint)
    save_nir(model, args.out, dt=args.dt, unit_w_in=args.unit_w_in)
    print(f"{args.out}: {cfg.name} ({model.arch}) after epoch {ck['epoch']}, dt = {args.dt:g} s")
    return 0


def _resolve_train_config(args: argparse.Namespace, overrides: list[str]) -> RunConfig:
    flags = list(overrides)
    for opt, key in (("data_dir", "data.data_dir"), ("epochs", "train.epochs"), ("out", "train.out_dir"),
                     ("device", "train.device"), ("seed", "train.seed"), ("threads", "train.threads")):
        v = getattr(args, opt)
        if v is not None:
            flags.append(f"{key}={v}")
    if args.no_plots:
        flags.append("train.plots=false")
    return load_config(args.config, flags)


def _cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from .train import train
    from .train.callbacks import plural
    from .train.distributed import env_world_size, is_main_process

    cfg = _resolve_train_config(args, overrides)
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


def _cmd_eval(args: argparse.Namespace, overrides: list[str]) -> int:
    from .train import evaluate_checkpoint

    if overrides:
        raise ConfigError(f"eval takes no config overrides; got {' '.join(overrides)}")
    if args.n < 0 or args.batch_size < 0:
        raise ConfigError("--n and --batch-size must be >= 0")
    res, cfg, ck = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, n=args.n or None,
                                       device=args.device, batch_size=args.batch_size or None)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hm2bp`` and ``python -m hm2bp``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        rest, overrides = _split_dotted(args_list)
    except ConfigError as e:
        print(f"hm2bp: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(rest)
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
