"""Training throughput: a plain tutorial loop against vaebook's engine, same model, same steps.

    python benchmarks/train_throughput.py                  # every configuration on the best device
    python benchmarks/train_throughput.py --configs mlp-fmnist --device cpu
    python benchmarks/train_throughput.py --compile        # also the engine with torch.compile: does it pay?

For each configuration both loops train the same model (built by `vaebook.models`)
with Adam at the same batch size for three epochs over the same images; each loop
reports its fastest epoch after the first (the first pays for worker start-up,
cuDNN autotuning and ``torch.compile``; taking the best of the rest damps the noise
of a shared machine the same way for both), and images per second and the ratio are
printed and written as JSON with the device, torch version and date. With
``--compile`` the engine also runs with ``torch.compile``, and the JSON records its
fastest epoch and the seconds of its first (which pays for the compilation): what it
takes for compile to pay.

(a) The plain loop, as a tutorial writes it: a torchvision dataset (Fashion-MNIST's
    own class, or ``ImageFolder`` over JPEG files) with ``ToTensor``, a ``DataLoader``
    (shuffle, ``num_workers`` workers), fp32, the default Adam, ``loss.item()`` every
    step.
(b) vaebook's engine: `vaebook.train.train` on one uint8 tensor (on CUDA: the step captured in
    CUDA graphs, autocast in the GPU's precision, channels-last, fused Adam; see `vaebook.speed`).

Configurations: the reference MLP VAE on Fashion-MNIST (real data); the 64x64 conv VAE
of the faces chapter; the full-size 218x178 autoencoder (channels 16-32-64-128-256). The
face-sized ones use synthetic JPEGs of the right shape, written once to a temporary
folder: throughput does not depend on what the faces look like.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaebook.data import ImageDataset, fashion_mnist
from vaebook.experiments import get
from vaebook.losses import loss_terms
from vaebook.models import ModelConfig, build_model
from vaebook.train import TrainConfig, pick_device, train


@dataclass(frozen=True)
class Config:
    name: str
    experiment: str
    images_cpu: int  # images per epoch on the CPU
    images_gpu: int  # and on a GPU
    batch_size: int


CONFIGS = {
    "mlp-fmnist": Config("mlp-fmnist", "fmnist-mlp-vae", 60_000, 60_000, 128),
    "conv64": Config("conv64", "celeba-vae", 2_048, 16_384, 64),
    "fullsize218": Config("fullsize218", "celeba-fullsize-ae", 256, 8_192, 64),
}


def synthetic_jpegs(folder: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """``n`` smooth random RGB images as JPEGs in ``folder/0/`` (an ImageFolder), and as one uint8 tensor
    decoded from those same files, so both loops see identical pixels."""
    from PIL import Image

    c, h, w = shape
    rng = np.random.default_rng(seed)
    (folder / "0").mkdir(parents=True, exist_ok=True)
    out = np.empty((n, c, h, w), dtype=np.uint8)
    for i in range(n):
        small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, c), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
        path = folder / "0" / f"{i:06d}.jpg"
        img.save(path, quality=90)
        out[i] = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
    return torch.from_numpy(out)


def fmnist_for_torchvision(folder: Path) -> None:
    """Fashion-MNIST's IDX files unpacked where ``torchvision.datasets.FashionMNIST(folder)`` looks."""
    from vaebook.data import DEBIAN_FASHION_MNIST

    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        src = Path(os.environ.get("VAEBOOK_DATA", DEBIAN_FASHION_MNIST)) / f"{stem}.gz"
        with gzip.open(src) as f, open(raw / stem, "wb") as g:
            shutil.copyfileobj(f, g)


def plain_loop(model_cfg: ModelConfig, dataset, batch_size: int, lr: float, device: torch.device, epochs: int = 3,
               workers: int = 2, model: torch.nn.Module | None = None) -> float:
    """A tutorial's training loop (of ``model`` if given, else a fresh one); returns images/second of its
    fastest epoch after the first."""
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    model = model if model is not None else build_model(model_cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    rates = []
    for _ in range(epochs):
        seen, t0 = 0, time.perf_counter()
        for x, _ in loader:
            x = x.to(device)
            out = model(x)
            terms = loss_terms(out, x, model_cfg.likelihood, model_cfg.sigma)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            running = terms["loss"].item()  # noqa: F841  (the per-step host sync tutorials do)
            seen += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(seen / (time.perf_counter() - t0))
    return max(rates[1:])


def engine(model_cfg: ModelConfig, images: torch.Tensor, batch_size: int, lr: float, device: torch.device,
           run_dir: Path, epochs: int = 3, compile: bool = False) -> tuple[float, float]:
    """vaebook's `train` on a uint8 tensor; returns images/second of its fastest epoch after the first,
    and the seconds of the first epoch."""
    data = ImageDataset(images)
    result = train(model_cfg, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, log_every=100), data,
                   data.subset(min(64, len(images))), run_dir, device=device, progress=False, resume=False,
                   compile=compile)
    return max(h["images_per_second"] for h in result.history[1:]), result.history[0]["seconds"]


def run(cfg: Config, device: torch.device, work: Path, workers: int, compile: bool = False) -> dict:
    from torchvision import datasets, transforms

    exp = get(cfg.experiment)
    n = cfg.images_gpu if device.type == "cuda" else cfg.images_cpu
    model_cfg, lr = exp.model, exp.train.lr
    if cfg.name == "mlp-fmnist":
        fmnist_for_torchvision(work / "tv")
        plain_set = datasets.FashionMNIST(str(work / "tv"), train=True, transform=transforms.ToTensor())
        images = fashion_mnist("train", download=False).images
    else:
        images = synthetic_jpegs(work / cfg.name, n, model_cfg.in_shape)
        plain_set = datasets.ImageFolder(str(work / cfg.name), transform=transforms.ToTensor())
    print(f"{cfg.name}: {len(images):,} images of {tuple(images.shape[1:])}, batch {cfg.batch_size}, "
          f"{model_cfg.kind} {model_cfg.arch} ...", flush=True)
    plain = plain_loop(model_cfg, plain_set, cfg.batch_size, lr, device, workers=workers)
    fast, first = engine(model_cfg, images, cfg.batch_size, lr, device, work / f"run-{cfg.name}")
    row = {"config": cfg.name, "experiment": cfg.experiment, "images": len(images),
           "shape": list(images.shape[1:]), "batch_size": cfg.batch_size,
           "plain_images_per_s": plain, "vaebook_images_per_s": fast, "speedup": fast / plain,
           "vaebook_first_epoch_s": first}
    if compile:
        compiled, first = engine(model_cfg, images, cfg.batch_size, lr, device, work / f"compiled-{cfg.name}",
                                 compile=True)
        row |= {"vaebook_compiled_images_per_s": compiled, "vaebook_compiled_first_epoch_s": first}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop (default 2)")
    parser.add_argument("--json", default=None, help="output file (default: benchmarks/results/DATE-DEVICE.json)")
    parser.add_argument("--compile", action="store_true", help="also time the engine with torch.compile")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.configs:
            rows.append(run(CONFIGS[c], device, Path(tmp), args.workers, args.compile))
            r = rows[-1]
            print(f"  plain {r['plain_images_per_s']:,.0f} img/s, vaebook {r['vaebook_images_per_s']:,.0f} img/s, "
                  f"{r['speedup']:.2f}x", flush=True)
            if args.compile:
                print(f"  vaebook + torch.compile {r['vaebook_compiled_images_per_s']:,.0f} img/s; first epoch "
                      f"{r['vaebook_compiled_first_epoch_s']:.1f} s against {r['vaebook_first_epoch_s']:.1f} s",
                      flush=True)
    today = datetime.date.today().isoformat()
    report = {"date": today, "device": name, "torch": torch.__version__, "python": platform.python_version(),
              "plain_loop_workers": args.workers, "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
              "results": rows}
    out = Path(args.json or Path(__file__).parent / "results" / f"{today}-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{name}, torch {torch.__version__}, {today}")
    print(f"| config | images | plain loop (img/s) | vaebook (img/s) | speed-up |\n|---|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['config']} | {r['images']:,} | {r['plain_images_per_s']:,.0f} | "
              f"{r['vaebook_images_per_s']:,.0f} | {r['speedup']:.2f}x |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
