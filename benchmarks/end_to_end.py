"""The speed of the whole job, start-up included: the reference VAE's 10 epochs and all of ``reproduce``.

    python benchmarks/end_to_end.py                        # throughput table + reference VAE, best device
    python benchmarks/end_to_end.py --device cpu --configs mlp-fmnist
    python benchmarks/end_to_end.py --reproduce            # also every model of the book, figures and table

What it measures, side by side in one run, and prints as one table with the ratios
and the targets the package is held to:

* **throughput** (images per second, fastest epoch after the first) of a plain
  tutorial loop and of `vaebook.train.train`, per configuration, by
  `train_throughput.run` (see that file for the two loops);
* **the reference VAE end to end**: ``python -m vaebook train fmnist-mlp-vae`` in a
  fresh process (Python and torch start-up, data loading, 10 epochs, the test set after
  each, checkpoints), against the plain loop's 10 epochs run the same way (a fresh
  process, its DataLoader, then the test loss by `vaebook.evaluate.dataset_loss`);
  wall seconds and final test loss of each;
* with ``--reproduce``, ``python -m vaebook reproduce`` into a temporary folder (every
  book model, the figures and the evaluation table), after one untimed pass that
  decodes and caches the data sets, so that JPEG decoding is not timed. Face models
  whose data is missing are skipped by ``reproduce`` itself (and then not timed).

Results go to ``benchmarks/results/DATE-DEVICE-end-to-end.json`` with the device, the
torch version and the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_throughput  # noqa: E402  (the throughput loops live there)

from vaebook.speed import pick_device  # noqa: E402

TARGETS = {  # the speed the package is held to on one H100/H200 (images/s, or seconds), and on a 2-core CPU
    "mlp-fmnist": ">= 300,000 img/s (>= 10x)", "conv64": ">= 50,000 img/s (>= 10x)",
    "fullsize218": ">= 20,000 img/s (>= 13x)", "reference": "<= 8 s, test loss within 0.5 of 244.1",
    "reproduce": "<= 120 s", "reference-cpu": "<= 20 s on 2 cores",
}


def plain_reference(device: torch.device, epochs: int = 10) -> dict:
    """The plain loop's 10 epochs of the reference VAE, then its test loss (run in a fresh process)."""
    from torchvision import datasets, transforms

    from vaebook.data import fashion_mnist
    from vaebook.evaluate import dataset_loss
    from vaebook.experiments import get
    from vaebook.models import build_model

    exp = get("fmnist-mlp-vae")
    work = Path(tempfile.mkdtemp())
    try:
        train_throughput.fmnist_for_torchvision(work)
        dataset = datasets.FashionMNIST(str(work), train=True, transform=transforms.ToTensor())
        model = build_model(exp.model).to(device)
        train_throughput.plain_loop(exp.model, dataset, exp.train.batch_size, exp.train.lr, device, epochs=epochs,
                                    model=model)
        test = dataset_loss(model, fashion_mnist("test", download=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"test_loss": test["loss"]}


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds, done


def reference(device: str, work: Path) -> dict:
    """Wall seconds and test loss of the reference VAE: vaebook's command and the plain loop, fresh processes."""
    seconds, _ = timed([sys.executable, "-m", "vaebook", "train", "fmnist-mlp-vae", "--device", device,
                        "--out", str(work / "runs"), "--quiet", "--restart"])
    info = json.loads((work / "runs" / "fmnist-mlp-vae" / "model.json").read_text())
    plain_s, done = timed([sys.executable, __file__, "--plain-reference", "--device", device])
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    return {"vaebook_s": seconds, "vaebook_test_loss": info["test_metrics"]["loss"], "vaebook_step": info.get("step"),
            "vaebook_precision": info.get("precision"), "plain_s": plain_s, "plain_test_loss": plain["test_loss"]}


def reproduce(device: str, work: Path, data_root: str | None) -> dict:
    """Wall seconds of ``python -m vaebook reproduce`` into ``work``, with the data decoded beforehand."""
    from vaebook import experiments
    from vaebook.checkpoints import PRETRAINED_DIR
    from vaebook.errors import DataNotFoundError

    for exp in experiments.EXPERIMENTS.values():  # untimed: decode (and cache) every data set once
        if exp.book:
            try:
                exp.load_data(data_root, download=False)
            except DataNotFoundError:
                pass
    shutil.copytree(PRETRAINED_DIR, work / "weights")  # models skipped for missing data keep the shipped weights
    cmd = [sys.executable, "-m", "vaebook", "reproduce", "--device", device, "--out", str(work / "runs"),
           "--images", str(work / "images"), "--weights", str(work / "weights"), "--quiet", "--no-download"]
    if data_root:
        cmd += ["--data-root", data_root]
    seconds, done = timed(cmd)
    return {"seconds": seconds, "summary": done.stdout.strip().splitlines()[-1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--configs", nargs="*", choices=list(train_throughput.CONFIGS),
                        default=list(train_throughput.CONFIGS), help="throughput configurations (none: skip)")
    parser.add_argument("--reproduce", action="store_true", help="also time the whole reproduce")
    parser.add_argument("--data-root", default=None, help="passed to reproduce (CelebA, Frey faces)")
    parser.add_argument("--json", default=None, help="output file (default: benchmarks/results/DATE-DEVICE-end-to-end.json)")
    parser.add_argument("--plain-reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if args.plain_reference:
        print(json.dumps(plain_reference(device)))
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    report: dict = {"date": datetime.date.today().isoformat(), "device": name, "torch": torch.__version__,
                    "python": platform.python_version(),
                    "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report["throughput"] = [train_throughput.run(train_throughput.CONFIGS[c], device, work, workers=2)
                                for c in args.configs]
        print("reference VAE, 10 epochs, end to end ...", flush=True)
        report["reference"] = reference(device.type, work / "reference")
        if args.reproduce:
            print("reproduce ...", flush=True)
            report["reproduce"] = reproduce(device.type, work / "reproduce", args.data_root)
    out = Path(args.json or Path(__file__).parent / "results" / f"{report['date']}-{device.type}-end-to-end.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{name}, torch {torch.__version__}, {report['date']}\n")
    print(table(report, device.type))
    print(f"\nwrote {out}")
    return 0


def table(report: dict, device_type: str) -> str:
    """The Markdown table of measured speeds, ratios to the plain loop, and targets."""
    rows = ["| measure | plain loop | vaebook | ratio | target |", "|---|--:|--:|--:|---|"]
    for r in report.get("throughput", []):
        rows.append(f"| {r['config']} (batch {r['batch_size']}), img/s | {r['plain_images_per_s']:,.0f} | "
                    f"{r['vaebook_images_per_s']:,.0f} | {r['speedup']:.2f}x | "
                    f"{TARGETS[r['config']] if device_type == 'cuda' else 'none on the CPU'} |")
    ref = report["reference"]
    target = TARGETS["reference-cpu" if device_type == "cpu" else "reference"]
    rows.append(f"| reference VAE, 10 epochs, wall s (test loss) | {ref['plain_s']:.1f} ({ref['plain_test_loss']:.2f}) "
                f"| {ref['vaebook_s']:.1f} ({ref['vaebook_test_loss']:.2f}) | {ref['plain_s'] / ref['vaebook_s']:.2f}x "
                f"| {target} |")
    if "reproduce" in report:
        rows.append(f"| reproduce, wall s | | {report['reproduce']['seconds']:.0f} | | {TARGETS['reproduce']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
