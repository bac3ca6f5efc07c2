"""The command line: ``python -m vaebook list | train NAME | evaluate NAME | map | figures | reproduce``.

Problems a user can fix (missing data, a damaged checkpoint, an unknown experiment)
are reported as one message, never a traceback: exit code 1 for a `VaebookError`,
2 for a usage error (unknown experiment, bad flag), 130 after Ctrl-C (the last
finished epoch is kept; the same command resumes from it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CheckpointError, DataNotFoundError, VaebookError


def _common(p: argparse.ArgumentParser, out_default: str | None = None, out_help: str = "") -> None:
    """The flags every command that loads data or weights shares; ``--out`` only where it writes there."""
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (default: the best available)")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder holding the data set (default: $VAEBOOK_DATA, the Debian package, then download)")
    p.add_argument("--no-download", action="store_true", help="never download data; fail if it is not on disk")
    if out_default is not None:
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
    _training(p)
    _common(p, "runs", "folder for run directories (default: runs)")

    p = sub.add_parser("evaluate", help="negative ELBO, IWAE estimate of -log p(x) and active units of shipped models")
    p.add_argument("names", nargs="*", metavar="NAME", help="shipped model names (see `list`)")
    p.add_argument("--all", action="store_true", help="evaluate every shipped model")
    p.add_argument("-k", type=int, default=None,
                   help="importance samples per image for the IWAE estimate (default: the experiment's, 2000 or 100)")
    p.add_argument("--images", type=int, default=None,
                   help="test images for the IWAE estimate (default: the experiment's, 500 or 100)")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write the results as JSON (merged into FILE if it exists)")
    _common(p)

    p = sub.add_parser("map", help="sample quality (Frechet distance) and likelihood of each family's shipped model")
    p.add_argument("--n", type=int, default=2000, help="samples per model and test images (default: 2000)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the map as JSON")
    p.add_argument("--train-classifier", action="store_true",
                   help="first retrain the feature classifier and write it into the weights folder")
    _common(p)

    p = sub.add_parser("figures", help="make every figure and file of numbers of the book from the pretrained weights")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="folder for the JSON files of numbers (default: results)")
    _common(p, "images", "folder for the PNG files (default: images)")

    p = sub.add_parser("reproduce", help="train every book experiment, ship its weights, redraw the figures")
    p.add_argument("--epochs", type=int, default=None, help="override every experiment's number of epochs")
    p.add_argument("--images", default="images", metavar="DIR", help="folder for the figures (default: images)")
    p.add_argument("--results", default="results", metavar="DIR",
                   help="folder for the evaluation table and other JSON files (default: results)")
    p.add_argument("-k", type=int, default=None,
                   help="importance samples per image for the evaluation table (default: each experiment's)")
    _training(p)
    _common(p, "runs", "folder for run directories (default: runs)")
    return parser


def _training(p: argparse.ArgumentParser) -> None:
    from .speed import GRAPHS, PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast precision (default: auto, by the GPU: bf16 from compute capability 8.0, "
                        "fp16 on 7.x such as the T4, fp32 on the CPU)")
    p.add_argument("--graphs", choices=GRAPHS, default="auto",
                   help="auto (default): capture each training step in a CUDA graph on a CUDA GPU; off: never; "
                        "static: the graphs' static-buffer code path without capture (for testing)")
    p.add_argument("--compile", action="store_true",
                   help="compile the model with torch.compile (off by default: compilation takes longer "
                        "than it saves in short runs)")


def _positive(parser: argparse.ArgumentParser, value: int | float | None, flag: str) -> None:
    if value is not None and value <= 0:
        parser.error(f"{flag} must be positive, got {value}")


def _check_folders(args: argparse.Namespace) -> None:
    """Refuse, before any work, folders that do not exist or cannot be written."""
    from .files import check_writable

    if getattr(args, "data_root", None) is not None and not Path(args.data_root).expanduser().is_dir():
        raise DataNotFoundError(f"--data-root {args.data_root} does not exist (or is not a folder).")
    writes_weights = args.command == "reproduce" or getattr(args, "publish", False) or getattr(
        args, "train_classifier", False)
    if args.weights is not None and not writes_weights:
        folder = Path(args.weights)
        if not folder.is_dir():
            raise CheckpointError(f"--weights {folder} does not exist (or is not a folder).")
        if not (folder / "manifest.json").is_file():
            raise CheckpointError(f"--weights {folder} has no manifest.json: it is not a vaebook weights folder.")
    folders = [("--out", args.out)] if args.command in ("train", "figures", "reproduce") else []
    if args.command == "reproduce":
        folders.append(("--images", args.images))
    if args.command in ("reproduce", "figures"):
        folders.append(("--results", args.results))
    if writes_weights:
        from .checkpoints import PRETRAINED_DIR

        folders.append(("--weights", args.weights or PRETRAINED_DIR))
    if args.command in ("evaluate", "map") and args.json:
        folders.append(("--json", Path(args.json).parent))
    for flag, folder in folders:
        check_writable(folder, f"the {flag} folder")


def _print_evaluation(name: str, r: dict) -> None:
    print(f"{name}: {r['images']:,} test images, nats per image")
    if "neg_elbo" in r:
        print(f"  negative ELBO      {r['neg_elbo']:9.2f}  (reconstruction {r['recon']:.2f} + KL {r['kl']:.2f})")
        if "iwae_nll" in r:  # (a family without an importance-sampling estimate has none)
            print(f"  -log p(x), IWAE    {r['iwae_nll']:9.2f}  (K = {r['k']:,} on the first {r['iwae_images']:,} "
                  f"images, whose negative ELBO is {r['neg_elbo_on_iwae_images']:.2f})")
        if "active_units" in r:  # one Gaussian latent: how much of it is used
            print(f"  active units       {r['active_units']:>6} / {r['latent_dim']}  (variance of E[z_j|x] over x > 0.01)")
            kl = sorted(r["kl_per_dim"], reverse=True)
            print(f"  KL per dimension   largest {kl[0]:.2f}, median {kl[len(kl) // 2]:.2f}, smallest {kl[-1]:.3f}")
    else:
        print(f"  reconstruction     {r['recon']:9.2f}  (-log p(x|z) at the code; an autoencoder has no likelihood)")
    print(f"  MSE per pixel      {r['mse']:9.4f}")
    if "iwae_nll_bpd" in r:
        print(f"  bits per dimension negative ELBO {r['neg_elbo_bpd']:.3f}, IWAE {r['iwae_nll_bpd']:.3f}")
    elif "neg_elbo" in r:
        print("  bits per dimension n/a: a Bernoulli likelihood on grey pixels is not a probability of the data")


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .jobs import evaluation_table
    from .checkpoints import manifest

    _positive(parser, args.k, "-k")
    _positive(parser, args.images, "--images")
    shipped = manifest(args.weights)
    names = list(shipped) if args.all else args.names
    if not names:
        parser.error("name a shipped model (see `list`) or pass --all")
    unknown = [n for n in names if n not in shipped]
    if unknown:
        parser.error(f"no shipped weights for {', '.join(unknown)}; shipped: {', '.join(shipped)}")
    evaluation_table(names, args.weights, args.data_root, args.device, not args.no_download, k=args.k, n=args.images,
                     json_path=args.json, report=_print_evaluation)
    return 0


def _training_args(args: argparse.Namespace) -> dict:
    """The keyword arguments that `train` and `reproduce` hand on to the library alike."""
    return {"weights": args.weights, "data_root": args.data_root, "device": args.device,
            "download": not args.no_download, "epochs": args.epochs, "progress": not args.quiet,
            "compile": args.compile, "precision": args.precision, "graphs": args.graphs}


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import experiments

    if args.command == "list":
        from .checkpoints import manifest

        _check_folders(args)
        shipped = manifest(args.weights)
        print(f"{'name':<28} {'epochs':>6} {'test loss':>9} {'train time':>10}  description")
        for e in experiments.EXPERIMENTS.values():
            w = shipped.get(e.name)
            stats = (f"{w['epochs']:>6} {w['test_metrics']['loss']:>9.2f} {w['wall_time_s']:>9.0f}s" if w
                     else f"{e.train.epochs:>6} {'-':>9} {'-':>10}")
            print(f"{e.name:<28} {stats}  {e.description}")
        print("test loss: nats per test image, from the shipped weights' manifest; train time: seconds of "
              "training epochs on the device recorded there ('-': no shipped weights).")
        return 0
    if args.command == "train":
        if args.name not in experiments.EXPERIMENTS:
            parser.error(f"unknown experiment {args.name!r}; choose from: {', '.join(experiments.EXPERIMENTS)}")
        _positive(parser, args.epochs, "--epochs")
        _positive(parser, args.lr, "--lr")
        _check_folders(args)
        from .jobs import train_experiment

        train_experiment(args.name, args.out, lr=args.lr, restart=args.restart, publish=args.publish,
                         **_training_args(args))
        return 0
    if args.command == "reproduce":
        _positive(parser, args.epochs, "--epochs")
    _check_folders(args)
    if args.command == "evaluate":
        return _evaluate(args, parser)
    if args.command == "map":
        from .atlas import draw_map
        from .quality import train_and_save_classifier

        if args.n < 2:
            parser.error(f"--n must be at least 2 (a covariance needs two images), got {args.n}")
        if args.train_classifier:
            train_and_save_classifier(args.weights, args.data_root, not args.no_download, device=args.device,
                                      progress=not args.quiet)
        draw_map(args.weights, args.data_root, args.device, not args.no_download, n=args.n, json_path=args.json)
        return 0
    if args.command == "reproduce":
        from .jobs import reproduce

        _positive(parser, args.k, "-k")
        reproduce(args.out, args.images, args.results, k=args.k, report=_print_evaluation, **_training_args(args))
        return 0
    from .build import build_artefacts

    written = build_artefacts(args.out, args.results, weights=args.weights, data_root=args.data_root,
                              device=args.device, download=not args.no_download, skip_missing_data=True)
    print(f"wrote {len(written)} files to {args.out} and {args.results}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args, parser)
    except VaebookError as e:
        print(f"vaebook: error: {e.cli}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nvaebook: interrupted. Finished epochs are checkpointed; run the same command to resume.",
              file=sys.stderr)
        return 130
