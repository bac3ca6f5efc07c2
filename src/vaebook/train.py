"""One training loop for autoencoders and VAEs: seeded, resumable, checkpointed every epoch.

The loop is deliberately plain (read it top to bottom in `train`):

1. pick the device (cuda, then mps, then cpu, unless one is forced);
2. seed everything, build the model and Adam, and resume from ``run_dir`` if a
   checkpoint is there;
3. each epoch: shuffle with a generator seeded by ``(seed, epoch)``, slice batches
   out of the uint8 image tensor (on the device when it is a GPU), take a step on
   ``loss_terms``; then evaluate on the test set, append to the history and write a
   checkpoint.

Because the shuffle depends only on ``(seed, epoch)`` and the checkpoint holds the
model, the optimizer and the random state, a run interrupted after any epoch and
resumed ends with the same weights on the CPU as one that was never interrupted.

A loss that becomes NaN or infinite stops training with `TrainingDivergedError`
before anything is written, so the last good checkpoint survives. On CUDA the
forward pass runs under bf16 autocast; losses are always computed in fp32. The
host synchronises only every ``log_every`` steps, not at every step.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from . import __version__
from .checkpoints import load_checkpoint, load_checkpoint_info, save_checkpoint, save_model, write_json
from .data import ImageDataset, to_float
from .errors import CheckpointError, DeviceError, TrainingDivergedError
from .evaluate import dataset_loss
from .losses import loss_terms
from .models import LatentModel, ModelConfig, build_model


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimisation and the weight of the KL term.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: Adam's learning rate.
        beta: weight of the KL term (1 = the ELBO; ignored by autoencoders).
        seed: seeds the initial weights, the shuffles and the sampling noise.
        log_every: steps between progress updates and NaN checks (host syncs).
        noise_std: standard deviation of Gaussian noise added to the inputs (clipped
            to [0, 1]) while the loss compares with the clean images: a denoising
            autoencoder. 0 trains an ordinary one.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    seed: int = 0
    log_every: int = 50
    noise_std: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pick_device(name: str | None = None) -> torch.device:
    """The device to train on: ``name`` if given (``"cuda"``, ``"mps"``, ``"cpu"``), else the best available."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"Unknown device {name!r}: use cuda, mps, cpu or auto.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for, but PyTorch sees no CUDA GPU here. Use --device cpu or auto.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps was asked for, but this machine has no Apple-silicon GPU. Use --device cpu or auto.")
    return device


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[torch.Tensor]:
    """Index batches of a random permutation of ``range(n)`` that depends only on ``(seed, epoch)``."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    yield from torch.randperm(n, generator=gen).split(batch_size)


@dataclass
class TrainResult:
    """What `train` returns: the trained model (in eval mode) and the per-epoch history."""

    model: LatentModel
    history: list[dict[str, float]]
    run_dir: Path


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=not enabled)


def train(model_config: ModelConfig, train_config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset,
          run_dir: str | Path, device: str | torch.device | None = None, progress: bool = True,
          resume: bool = True, meta: dict[str, Any] | None = None) -> TrainResult:
    """Train a model and write checkpoints, history and the final model into ``run_dir``.

    Args:
        model_config, train_config: what to build and how to train it.
        train_set, test_set: uint8 image sets; the test set is evaluated after each epoch.
        run_dir: folder for ``checkpoint.json``, ``history.json``, ``model.safetensors``.
        device: ``"cuda"``, ``"mps"``, ``"cpu"``, or None for the best available.
        progress: show tqdm progress bars (notebook-aware).
        resume: continue from a checkpoint in ``run_dir`` if there is one (it must
            have been made with the same configs, except possibly more epochs).
        meta: extra fields (experiment name, data) recorded in ``model.json``.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (nothing is written).
        CheckpointError: the checkpoint in ``run_dir`` is damaged or from other configs.
    """
    device = pick_device(device) if not isinstance(device, torch.device) else device
    run_dir = Path(run_dir)
    cfg, tcfg = model_config, train_config
    if tuple(train_set.shape) != tuple(cfg.in_shape):
        raise ValueError(f"The model expects images of shape {cfg.in_shape}, the data has {train_set.shape}.")

    torch.manual_seed(tcfg.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    history: list[dict[str, float]] = []
    start_epoch, elapsed = 0, 0.0
    info = load_checkpoint_info(run_dir) if resume else None
    if info is not None:
        if any(k not in info for k in ("model", "train", "history", "wall_time_s")):
            raise CheckpointError(f"{run_dir / 'checkpoint.json'} was not written by vaebook.train; "
                                  "use another --out folder, or pass --restart to overwrite it.")
        same_train = {**TrainConfig().to_dict(), **info["train"], "epochs": tcfg.epochs} == tcfg.to_dict()
        if ModelConfig.from_dict(info["model"]) != cfg or not same_train:
            raise CheckpointError(
                f"{run_dir} holds a checkpoint of a different configuration. "
                "Use another --out folder, or pass --restart to overwrite it."
            )
        info = load_checkpoint(run_dir, model, optimizer)
        start_epoch, history, elapsed = info["epoch"], info["history"], info["wall_time_s"]
        if progress and start_epoch < tcfg.epochs:
            print(f"Resuming {run_dir} from epoch {start_epoch}.")

    images = train_set.images.to(device)  # uint8; on a GPU the whole set is resident
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    steps_per_epoch = math.ceil(len(images) / tcfg.batch_size)
    for epoch in range(start_epoch, tcfg.epochs):
        model.train()
        t0 = time.perf_counter()
        sums = torch.zeros(3, device=device)  # loss, recon, kl summed over images
        bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{tcfg.epochs}", progress)
        for step, idx in enumerate(shuffled_batches(len(images), tcfg.batch_size, tcfg.seed, epoch), 1):
            x = to_float(images[idx.to(device)])
            x_in = (x + tcfg.noise_std * torch.randn_like(x)).clamp_(0, 1) if tcfg.noise_std > 0 else x
            with autocast:
                output = model(x_in)
            terms = loss_terms({k: v.float() for k, v in output.items()}, x, cfg.likelihood, cfg.sigma, tcfg.beta)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            sums += torch.stack([terms["loss"], terms["recon"], terms["kl"]]).detach() * len(idx)
            if step % tcfg.log_every == 0 or step == steps_per_epoch:
                _check_finite(sums, epoch, step, run_dir)
                bar.set_postfix(loss=f"{sums[0].item() / min(step * tcfg.batch_size, len(images)):.2f}")
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - t0
        train_loss, train_recon, train_kl = (sums / len(images)).tolist()
        test = dataset_loss(model, test_set, beta=tcfg.beta)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_recon": train_recon,
                        "train_kl": train_kl, "test_loss": test["loss"], "test_recon": test["recon"],
                        "test_kl": test["kl"], "test_mse": test["mse"], "seconds": seconds,
                        "images_per_second": len(images) / seconds})
        elapsed += seconds
        if progress:
            print(f"epoch {epoch + 1}/{tcfg.epochs}: train loss {train_loss:.2f}, test loss {test['loss']:.2f} "
                  f"(recon {test['recon']:.2f}, KL {test['kl']:.2f}) nats/image, {seconds:.1f} s")
        save_checkpoint(run_dir, model, optimizer, epoch + 1,
                        {"model": cfg.to_dict(), "train": tcfg.to_dict(), "history": history, "wall_time_s": elapsed})
        write_json(run_dir / "history.json", history)

    model.eval()
    final = history[-1] if history else {}
    save_model(run_dir, model, {
        **(meta or {}), "train": tcfg.to_dict(), "epochs": len(history),
        "test_metrics": {k[5:]: final[k] for k in final if k.startswith("test_")},
        "device": _device_name(device), "wall_time_s": round(elapsed, 1),
        "torch_version": torch.__version__, "vaebook_version": __version__, "history": history,
    })
    return TrainResult(model, history, run_dir)


def _check_finite(sums: torch.Tensor, epoch: int, step: int, run_dir: Path) -> None:
    if not bool(torch.isfinite(sums).all()):
        info = load_checkpoint_info(run_dir)
        kept = (f"The last good checkpoint ({run_dir / 'checkpoint.json'}, epoch {info['epoch']}) was kept."
                if info else "No checkpoint had been written yet.")
        raise TrainingDivergedError(
            f"Training diverged: the loss became {sums[0].item()} in epoch {epoch + 1} by step {step}. {kept} "
            "Try a smaller learning rate (--lr), then run the same command to resume."
        )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
