"""The command line: ``python -m vaebook list | train NAME | evaluate NAME | figures | reproduce``.

Problems a user can fix (missing data, a damaged checkpoint, an unknown experiment)
are reported as one message, never a traceback: exit code 1 for a `VaebookError`,
2 for a usage error (unknown experiment, bad flag), 130 after Ctrl-C (the last
finished epoch is kept; the same command resumes from it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .errors import CheckpointError, DataNotFoundError, VaebookError


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
    _common(p, "", "unused")

    p = sub.add_parser("figures", help="draw the book's figures from the pretrained weights")
    _common(p, "images", "folder for the PNG files (default: images)")

    p = sub.add_parser("reproduce", help="train every book experiment, ship its weights, redraw the figures")
    p.add_argument("--epochs", type=int, default=None, help="override every experiment's number of epochs")
    p.add_argument("--images", default="images", metavar="DIR", help="folder for the figures (default: images)")
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
    writes_weights = args.command == "reproduce" or getattr(args, "publish", False)
    if args.weights is not None and not writes_weights:
        folder = Path(args.weights)
        if not folder.is_dir():
            raise CheckpointError(f"--weights {folder} does not exist (or is not a folder).")
        if not (folder / "manifest.json").is_file():
            raise CheckpointError(f"--weights {folder} has no manifest.json: it is not a vaebook weights folder.")
    folders = [("--out", args.out)] if args.command in ("train", "figures", "reproduce") else []
    if args.command == "reproduce":
        folders.append(("--images", args.images))
    if writes_weights:
        from .checkpoints import PRETRAINED_DIR

        folders.append(("--weights", args.weights or PRETRAINED_DIR))
    if args.command == "evaluate" and args.json:
        folders.append(("--json", Path(args.json).parent))
    for flag, folder in folders:
        check_writable(folder, f"the {flag} folder")


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
                   meta={"experiment": name, "data": exp.data}, compile=args.compile, precision=args.precision,
                   graphs=args.graphs)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports and publishes
    last = result.history[-1] if result.history else {}
    print(f"{name}: {len(result.history)} epochs, test loss {last.get('test_loss', float('nan')):.2f} nats/image, "
          f"{time.perf_counter() - t0:.0f} s; model in {run_dir}")
    if publish:
        folder = Path(args.weights) if args.weights else checkpoints.PRETRAINED_DIR
        entry = checkpoints.publish(run_dir, name, folder, test_set=test_set, beta=exp.train.beta)
        print(f"{name}: published to {folder / entry['file']} (half precision; test loss of the shipped weights "
              f"{entry['test_metrics']['loss']:.2f})")


def _print_evaluation(name: str, r: dict) -> None:
    print(f"{name}: {r['images']:,} test images, nats per image")
    if "neg_elbo" in r:
        print(f"  negative ELBO      {r['neg_elbo']:9.2f}  (reconstruction {r['recon']:.2f} + KL {r['kl']:.2f})")
        print(f"  -log p(x), IWAE    {r['iwae_nll']:9.2f}  (K = {r['k']:,} on the first {r['iwae_images']:,} images, "
              f"whose negative ELBO is {r['neg_elbo_on_iwae_images']:.2f})")
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


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser, skip_missing_data: bool = False) -> int:
    from . import experiments
    import torch

    from .checkpoints import load_pretrained, manifest, read_json, write_json
    from .evaluate import evaluate_model
    from .train import pick_device

    _positive(parser, args.k, "-k")
    _positive(parser, args.images, "--images")
    shipped = manifest(args.weights)
    names = list(shipped) if args.all else args.names
    if not names:
        parser.error("name a shipped model (see `list`) or pass --all")
    unknown = [n for n in names if n not in shipped]
    if unknown:
        parser.error(f"no shipped weights for {', '.join(unknown)}; shipped: {', '.join(shipped)}")
    device = pick_device(args.device)
    results = {}
    for name in names:
        exp = experiments.get(name)
        try:
            test = exp.load_split("test", args.data_root, download=not args.no_download)
        except DataNotFoundError as err:
            if not skip_missing_data:
                raise
            print(f"skipped evaluating {name}: {str(err).splitlines()[0]}")
            continue
        model = load_pretrained(name, device=device, folder=args.weights)
        results[name] = evaluate_model(model, test, k=args.k or exp.eval_k, n=args.images or exp.eval_images)
        _print_evaluation(name, results[name])
    if args.json:
        path = Path(args.json)
        merged = read_json(path)["results"] if path.is_file() else {}
        write_json(path, {"command": f"python -m vaebook evaluate --all --json {path}",
                          "torch_version": torch.__version__, "device": str(device),
                          "results": {**merged, **results}})
        print(f"wrote {path}")
    return 0


def _relative_costs(names: list[str], epochs: int | None, shipped: dict) -> dict[str, float]:
    """Relative training cost of each experiment: its shipped seconds per epoch times the epochs it will run.

    Only ratios matter (the shipped times were recorded on another device); an
    experiment without shipped weights counts as the median of the others.
    """
    from . import experiments

    per_epoch = {n: shipped[n]["wall_time_s"] / max(1, shipped[n]["epochs"]) for n in names if n in shipped}
    typical = sorted(per_epoch.values())[len(per_epoch) // 2] if per_epoch else 1.0
    return {n: per_epoch.get(n, typical) * (epochs or experiments.get(n).train.epochs) for n in names}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _reproduce(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train every book experiment (saying which of how many and about how long is left), then the figures and table."""
    from . import experiments
    from .checkpoints import manifest
    from .figures import book_figures

    t0 = time.perf_counter()
    names = [e.name for e in experiments.EXPERIMENTS.values() if e.book]
    cost = _relative_costs(names, args.epochs, manifest(args.weights))
    trained, done_cost, train_seconds = 0, 0.0, 0.0
    for k, name in enumerate(names, 1):
        left = sum(cost[n] for n in names[k - 1:])
        estimate = (f"about {_minutes(train_seconds * left / done_cost)} of training left, by the shipped models' "
                    "relative times" if done_cost > 0 else "the first experiment sets the pace of the estimate")
        print(f"reproduce: experiment {k} of {len(names)}: {name} ({_minutes(time.perf_counter() - t0)} so far; "
              f"{estimate})", flush=True)
        start = time.perf_counter()
        try:
            _train_one(name, args, publish=True)
            trained += 1
        except DataNotFoundError as err:
            if experiments.get(name).data == "fashion-mnist":
                raise
            # CelebA cannot be downloaded automatically: keep the shipped weights and say so.
            print(f"skipped {name}: {str(err).splitlines()[0]} The shipped weights are kept; "
                  f"see the README for where to get the data.")
            continue
        train_seconds += time.perf_counter() - start
        done_cost += cost[name]
    print(f"reproduce: drawing the figures ({_minutes(time.perf_counter() - t0)} so far)", flush=True)
    written = book_figures(args.images, weights=args.weights, data_root=args.data_root, device=args.device,
                           download=not args.no_download, skip_missing_data=True)
    evaluation = Path(args.images) / "evaluation.json"  # the evaluation chapter's table
    print(f"reproduce: the evaluation table ({_minutes(time.perf_counter() - t0)} so far)", flush=True)
    _evaluate(argparse.Namespace(**{**vars(args), "names": [], "all": True, "images": None,
                                    "json": str(evaluation)}), parser, skip_missing_data=True)
    written.append(evaluation)
    print(f"reproduce: trained and published {trained} of {len(names)} models, "
          f"wrote {len(written)} files to {args.images} in {time.perf_counter() - t0:.0f} s")
    return 0


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
        _train_one(args.name, args, args.publish)
        return 0
    if args.command == "reproduce":
        _positive(parser, args.epochs, "--epochs")
    _check_folders(args)
    if args.command == "evaluate":
        return _evaluate(args, parser)
    if args.command == "reproduce":
        return _reproduce(args, parser)
    from .figures import book_figures

    written = book_figures(args.out, weights=args.weights, data_root=args.data_root, device=args.device,
                           download=not args.no_download, skip_missing_data=True)
    print(f"wrote {len(written)} files to {args.out}")
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
