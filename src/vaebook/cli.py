"""The command line: ``python -m vaebook list | train NAME | figures | reproduce``.

Problems a user can fix (missing data, a damaged checkpoint, an unknown experiment)
are reported as one message, never a traceback: exit code 1 for a `VaebookError`,
2 for a usage error (unknown experiment, bad flag), 130 after Ctrl-C (the last
finished epoch is kept; the same command resumes from it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import VaebookError


def _common(p: argparse.ArgumentParser, out_default: str, out_help: str) -> None:
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default: the best available)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder holding the data set (default: $VAEBOOK_DATA, the Debian package, then download)")
    p.add_argument("--no-download", action="store_true", help="never download data; fail if it is not on disk")
    p.add_argument("--out", default=out_default, metavar="DIR", help=out_help)
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--weights", default=None, metavar="DIR",
                   help="pretrained weights folder with manifest.json (default: the one inside the package)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaebook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list the experiments, with the test loss and time of their shipped weights")
    p.add_argument("--weights", default=None, metavar="DIR",
                   help="pretrained weights folder with manifest.json (default: the one inside the package)")

    p = sub.add_parser("train", help="train one experiment (resumes if interrupted)")
    p.add_argument("name", help="experiment name (see `list`)")
    p.add_argument("--epochs", type=int, default=None, help="override the experiment's number of epochs")
    p.add_argument("--lr", type=float, default=None, help="override the experiment's learning rate")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start again")
    p.add_argument("--publish", action="store_true",
                   help="copy the trained model into the package's pretrained weights and manifest")
    _common(p, "runs", "folder for run directories (default: runs)")

    p = sub.add_parser("figures", help="draw the book's figures from the pretrained weights")
    _common(p, "images", "folder for the PNG files (default: images)")

    p = sub.add_parser("reproduce", help="train every book experiment, ship its weights, redraw the figures")
    p.add_argument("--epochs", type=int, default=None, help="override every experiment's number of epochs")
    p.add_argument("--images", default="images", metavar="DIR", help="folder for the figures (default: images)")
    _common(p, "runs", "folder for run directories (default: runs)")
    return parser


def _positive(parser: argparse.ArgumentParser, value: int | float | None, flag: str) -> None:
    if value is not None and value <= 0:
        parser.error(f"{flag} must be positive, got {value}")


def _train_one(name: str, args: argparse.Namespace, publish: bool) -> None:
    from dataclasses import replace

    from . import checkpoints, experiments
    from .train import train

    exp = experiments.get(name).with_epochs(args.epochs)
    if getattr(args, "lr", None) is not None:
        exp = replace(exp, train=replace(exp.train, lr=args.lr))
    train_set, test_set = exp.load_data(args.data_root, download=not args.no_download)
    run_dir = Path(args.out) / name
    t0 = time.perf_counter()
    result = train(exp.model, exp.train, train_set, test_set, run_dir, device=args.device,
                   progress=not args.quiet, resume=not getattr(args, "restart", False),
                   meta={"experiment": name, "data": exp.data})
    last = result.history[-1] if result.history else {}
    print(f"{name}: {len(result.history)} epochs, test loss {last.get('test_loss', float('nan')):.2f} nats/image, "
          f"{time.perf_counter() - t0:.0f} s; model in {run_dir}")
    if publish:
        folder = Path(args.weights) if args.weights else checkpoints.PRETRAINED_DIR
        entry = checkpoints.publish(run_dir, name, folder)
        print(f"{name}: published to {folder / entry['file']}")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import experiments

    if args.command == "list":
        from .checkpoints import manifest

        shipped = manifest(args.weights)
        print(f"{'name':<24} {'epochs':>6} {'test loss':>9} {'train time':>10}  description")
        for e in experiments.EXPERIMENTS.values():
            w = shipped.get(e.name)
            stats = (f"{w['epochs']:>6} {w['test_metrics']['loss']:>9.2f} {w['wall_time_s']:>9.0f}s" if w
                     else f"{e.train.epochs:>6} {'-':>9} {'-':>10}")
            print(f"{e.name:<24} {stats}  {e.description}")
        print("test loss: nats per test image, from the shipped weights' manifest; train time: seconds of "
              "training epochs on the device recorded there ('-': no shipped weights).")
        return 0
    if args.command == "train":
        if args.name not in experiments.EXPERIMENTS:
            parser.error(f"unknown experiment {args.name!r}; choose from: {', '.join(experiments.EXPERIMENTS)}")
        _positive(parser, args.epochs, "--epochs")
        _positive(parser, args.lr, "--lr")
        _train_one(args.name, args, args.publish)
        return 0
    from .figures import book_figures

    if args.command == "figures":
        written = book_figures(args.out, weights=args.weights, data_root=args.data_root, device=args.device,
                               download=not args.no_download)
        print(f"wrote {len(written)} figures to {args.out}")
        return 0
    # reproduce
    _positive(parser, args.epochs, "--epochs")
    t0 = time.perf_counter()
    for e in experiments.EXPERIMENTS.values():
        if e.book:
            _train_one(e.name, args, publish=True)
    written = book_figures(args.images, weights=args.weights, data_root=args.data_root, device=args.device,
                           download=not args.no_download)
    print(f"reproduce: trained and published {sum(e.book for e in experiments.EXPERIMENTS.values())} models, "
          f"wrote {len(written)} figures to {args.images} in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args, parser)
    except VaebookError as e:
        print(f"vaebook: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nvaebook: interrupted. Finished epochs are checkpointed; run the same command to resume.",
              file=sys.stderr)
        return 130
