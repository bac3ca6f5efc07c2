"""One training loop for autoencoders and VAEs: seeded, resumable, checkpointed every epoch.

Read `train` top to bottom: each epoch draws a shuffle that depends only on
``(seed, epoch)``, takes one `train_step` per batch (the loss, its gradient, an Adam
step), then evaluates on the test set, appends to the history and writes a
checkpoint. `train_step` is the whole step: batch, loss, backward, step.

Because the shuffle depends only on ``(seed, epoch)`` and the checkpoint holds the
model, the optimizer and the random state, a run interrupted after any epoch and
resumed ends with the same weights on the CPU as one that was never interrupted.

A loss that becomes NaN or infinite stops training with `TrainingDivergedError`
before anything is written, so the last good checkpoint survives.

What only makes this faster is not here: the loop is handed a `vaebook.speed.Runner`,
which places the data, picks the precision and the optimiser's kernels, runs the
step eagerly, compiled or captured in a CUDA graph, and shards it over processes
under ``torchrun``. The loop is the same on every device; the runner decides how it
runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import torch

from . import __version__
from .checkpoints import clean_run_dir, load_checkpoint, load_checkpoint_info, save_checkpoint, save_model, write_json
from .data import ImageDataset, condition_vectors
from .errors import CheckpointError, TrainingDivergedError
from .evaluate import dataset_loss
from .files import check_writable
from .losses import loss_terms
from .models import LatentModel, ModelConfig, build_model
from .speed import GRAPHS, PRECISIONS, Runner, autocast_dtype, pick_device  # noqa: F401  (names used by callers)


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
        kl_warmup_epochs: KL warm-up (Bowman et al., 2016): the KL weight rises linearly
            from 0 to ``beta`` over this many epochs, so the decoder learns to use the
            code before the KL term pushes the posteriors onto the prior. 0: none.
        free_bits: nats per latent dimension that the KL term does not charge for
            (Kingma et al., 2016): the loss uses ``sum_j max(free_bits, KL_j)``, with
            ``KL_j`` averaged over the batch, so a dimension carrying less than
            ``free_bits`` of information gets no push towards the prior. 0: none.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    seed: int = 0
    log_every: int = 50
    noise_std: float = 0.0
    kl_warmup_epochs: float = 0.0
    free_bits: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shuffled_batches(n: int, batch_size: int, seed: int, epoch: int,
                     device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
    """Index batches of a random permutation of ``range(n)`` that depends only on ``(seed, epoch)``.

    The permutation is drawn on the CPU (the same on every device) and moved to ``device`` once per epoch.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    yield from torch.randperm(n, generator=gen).to(device).split(batch_size)


def kl_weight(tcfg: TrainConfig, epoch: int, step: int, steps: int) -> float:
    """The KL term's weight at ``step`` (from 1) of ``steps`` in ``epoch`` (from 0): ``beta``, ramped up
    linearly over the first ``kl_warmup_epochs`` if there is a warm-up."""
    if tcfg.kl_warmup_epochs <= 0:
        return tcfg.beta
    return tcfg.beta * min(1.0, (epoch * steps + step) / (tcfg.kl_warmup_epochs * steps))


@dataclass
class TrainResult:
    """What `train` returns: the trained model (in eval mode) and the per-epoch history."""

    model: LatentModel
    history: list[dict[str, float]]
    run_dir: Path


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, run: Runner, cfg: ModelConfig,
               tcfg: TrainConfig, images: torch.Tensor, idx: torch.Tensor, beta: float | torch.Tensor,
               conditions: torch.Tensor | None = None) -> torch.Tensor:
    """One Adam step on the images ``images[idx]`` (a conditional model also gets ``conditions[idx]``, its
    ``y``); returns their summed loss, recon, KL and count."""
    x = run.batch(images, idx)  # floats in [0, 1] on the device
    x_in = (x + tcfg.noise_std * torch.randn_like(x)).clamp(0, 1) if tcfg.noise_std > 0 else x  # denoising
    with run.autocast():  # bf16 or fp16 on a GPU, float32 elsewhere
        if conditions is None:
            output = model(x_in)
        else:
            output = model(x_in, conditions[idx.to(conditions.device)].to(run.device, non_blocking=True))
    terms = loss_terms({k: v.float() for k, v in output.items()}, x, cfg.likelihood, cfg.sigma, beta,
                       free_bits=tcfg.free_bits)
    optimizer.zero_grad(set_to_none=True)
    run.backward(terms["loss"])
    run.step(optimizer)
    ones = torch.ones_like(terms["loss"])
    return torch.stack([terms["loss"], terms["recon"], terms["kl"], ones]).detach() * len(idx)


def train(model_config: ModelConfig, train_config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset,
          run_dir: str | Path, device: str | torch.device | None = None, progress: bool = True,
          resume: bool = True, meta: dict[str, Any] | None = None, compile: bool | str = False,
          precision: str = "auto", graphs: str = "auto") -> TrainResult:
    """Train a model and write checkpoints, history and the final model into ``run_dir``.

    Args:
        model_config, train_config: what to build and how to train it.
        train_set, test_set: uint8 image sets; the test set is evaluated after each epoch.
        run_dir: folder for ``checkpoint.json``, ``history.json``, ``model.safetensors``.
        device: ``"cuda"``, ``"mps"``, ``"cpu"``, or None for the best available.
        progress: show tqdm progress bars (notebook-aware).
        resume: continue from a checkpoint in ``run_dir`` if there is one. It must have
            been made with the same configs, except for more ``epochs`` or another
            ``lr`` (a run that diverged resumes with a smaller learning rate).
        meta: extra fields (experiment name, data) recorded in ``model.json``.
        compile: compile the model with `torch.compile` (True), or with the named
            backend (e.g. ``"aot_eager"``, which the tests use on the CPU). Off by default.
        precision: the autocast precision, see `vaebook.speed.autocast_dtype`.
        graphs: ``"auto"`` captures the step in CUDA graphs on a CUDA GPU, ``"off"``
            never does, ``"static"`` runs the graphs' static-buffer path without
            capture (any device; see `vaebook.speed.StaticStep`).

    Raises:
        OutputError: ``run_dir`` cannot be created or written (before any work), or a
            checkpoint cannot be saved (the disk is full; the last good one is kept).
        TrainingDivergedError: the loss became NaN or infinite (nothing is written).
        CheckpointError: the checkpoint in ``run_dir`` is damaged or from other configs.
    """
    cfg, tcfg, run_dir = model_config, train_config, Path(run_dir)
    run = Runner.start(device, precision, compile, graphs)  # device, precision, kernels: see vaebook.speed
    model, optimizer, history, elapsed = _start(cfg, tcfg, train_set, run_dir, run, resume, progress)
    images = run.place(train_set.images)  # one uint8 tensor, on the GPU if it fits
    conditions = run.place(condition_vectors(cfg, train_set)) if cfg.condition else None  # a cvae's y
    forward = run.prepare(model)  # DDP-wrapped or compiled if need be
    step = run.stepper(partial(train_step, forward, optimizer, run, cfg, tcfg, conditions=conditions), images,
                       tcfg.batch_size)
    n, steps = len(images), math.ceil(len(images) / tcfg.batch_size)
    for epoch in range(len(history), tcfg.epochs):
        model.train()
        t0 = time.perf_counter()
        sums = torch.zeros(4, device=run.device)  # loss, recon, KL and images, summed over the epoch
        with _progress(steps, f"epoch {epoch + 1}/{tcfg.epochs}", progress and run.rank == 0) as bar:
            for k, idx in enumerate(shuffled_batches(n, tcfg.batch_size, tcfg.seed, epoch, images.device), 1):
                sums += step(images, idx, kl_weight(tcfg, epoch, k, steps))
                if k % tcfg.log_every == 0 and (seen := run.peek(sums)) is not None:
                    _check_finite(seen, epoch, k, run_dir, tcfg.lr)  # a NaN stops the run before it writes
                    bar.set_postfix(loss=f"{seen[0].item() / seen[3].item():.2f}")
                bar.update(1)
        seconds = run.seconds_since(t0)
        totals = run.sum(sums)  # over all processes under torchrun
        _check_finite(totals, epoch, steps, run_dir, tcfg.lr)
        train_loss, train_recon, train_kl = (totals[:3] / totals[3]).tolist()
        test = dataset_loss(model, test_set, beta=tcfg.beta)
        _check_finite(torch.tensor([test["loss"]]), epoch, steps, run_dir, tcfg.lr, "test loss")
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_recon": train_recon,
                        "train_kl": train_kl, "test_loss": test["loss"], "test_recon": test["recon"],
                        "test_kl": test["kl"], "test_mse": test["mse"], "lr": tcfg.lr, "seconds": seconds,
                        "images_per_second": n / seconds})
        if cfg.decoder_sigma == "shared":  # where a learned sigma has got to
            history[-1]["decoder_sigma"] = model.decoder_sigma()
        elapsed += seconds
        if run.rank == 0:  # only rank 0 reports and writes
            _end_of_epoch(run_dir, model, optimizer, cfg, tcfg, history, elapsed, progress)
    run.finish(model)
    model.eval()
    if run.rank == 0:
        _save_final(run_dir, model, tcfg, history, elapsed, run, meta)
    return TrainResult(model, history, run_dir)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=not enabled)


def _start(cfg: ModelConfig, tcfg: TrainConfig, train_set: ImageDataset, run_dir: Path, run: Runner, resume: bool,
           progress: bool) -> tuple[LatentModel, torch.optim.Optimizer, list[dict[str, float]], float]:
    """Check the data and ``run_dir``, seed, build the model and Adam, and resume from a checkpoint if there
    is one: returns the model, the optimiser, the history so far and the training seconds so far."""
    if tuple(train_set.shape) != tuple(cfg.in_shape):
        raise ValueError(f"The model expects images of shape {cfg.in_shape}, the data has {train_set.shape}.")
    if run.rank == 0:
        check_writable(run_dir, "the run folder")
        clean_run_dir(run_dir)  # temporary and orphaned files of killed runs
    torch.manual_seed(tcfg.seed)
    model = run.to_device(build_model(cfg))
    optimizer = run.optimizer(model, tcfg.lr)
    info = load_checkpoint_info(run_dir) if resume else None
    if info is None:
        return model, optimizer, [], 0.0
    if any(k not in info for k in ("model", "train", "history", "wall_time_s")):
        raise CheckpointError(f"{run_dir / 'checkpoint.json'} was not written by vaebook.train; "
                              "use another --out folder, or pass --restart to overwrite it.")
    may_change = {"epochs": tcfg.epochs, "lr": tcfg.lr}  # more epochs; a new learning rate after divergence
    same_train = {**TrainConfig().to_dict(), **info["train"], **may_change} == tcfg.to_dict()
    if ModelConfig.from_dict(info["model"]) != cfg or not same_train:
        raise CheckpointError(f"{run_dir} holds a checkpoint of a different configuration. "
                              "Use another --out folder, or pass --restart to overwrite it.")
    info = load_checkpoint(run_dir, model, optimizer)
    run.configure(optimizer, tcfg.lr)  # the learning rate asked for now, e.g. a smaller one after divergence
    if progress and run.rank == 0 and info["epoch"] < tcfg.epochs:
        changed = f" with learning rate {tcfg.lr:g}" if info["train"].get("lr") != tcfg.lr else ""
        print(f"Resuming {run_dir} from epoch {info['epoch']}{changed}.")
    return model, optimizer, info["history"], info["wall_time_s"]


def _end_of_epoch(run_dir: Path, model: LatentModel, optimizer: torch.optim.Optimizer, cfg: ModelConfig,
                  tcfg: TrainConfig, history: list[dict[str, float]], elapsed: float, progress: bool) -> None:
    """Report the epoch and write its checkpoint and the history (atomically)."""
    h = history[-1]
    if progress:
        print(f"epoch {h['epoch']}/{tcfg.epochs}: train loss {h['train_loss']:.2f}, test loss {h['test_loss']:.2f} "
              f"(recon {h['test_recon']:.2f}, KL {h['test_kl']:.2f}) nats/image, {h['seconds']:.1f} s")
    save_checkpoint(run_dir, model, optimizer, h["epoch"],
                    {"model": cfg.to_dict(), "train": tcfg.to_dict(), "history": history, "wall_time_s": elapsed})
    write_json(run_dir / "history.json", history)


def _save_final(run_dir: Path, model: LatentModel, tcfg: TrainConfig, history: list[dict[str, float]],
                elapsed: float, run: Runner, meta: dict[str, Any] | None) -> None:
    """The trained weights with everything ``model.json`` records: configs, test metrics, history, device."""
    final = history[-1] if history else {}
    save_model(run_dir, model, {
        **(meta or {}), "train": tcfg.to_dict(), "epochs": len(history),
        "test_metrics": {k[5:]: final[k] for k in final if k.startswith("test_")},
        **run.describe(), "wall_time_s": round(elapsed, 1),
        "torch_version": torch.__version__, "vaebook_version": __version__, "history": history,
    })


def _check_finite(sums: torch.Tensor, epoch: int, step: int, run_dir: Path, lr: float, what: str = "loss") -> None:
    """Raise `TrainingDivergedError` if the training sums (or the test loss) are not finite."""
    if not bool(torch.isfinite(sums).all()):
        info = load_checkpoint_info(run_dir)
        kept = (f"The last good checkpoint ({run_dir / 'checkpoint.json'}, epoch {info['epoch']}) was kept."
                if info else "No checkpoint had been written yet.")
        what = f"Training diverged: the {what} became {sums[0].item()} in epoch {epoch + 1} by step {step}. {kept}"
        smaller = f"{lr / 2:g}"
        raise TrainingDivergedError(
            f"{what} Train again with a smaller learning rate, e.g. lr={smaller} (half of {lr:g}); "
            "it resumes from that checkpoint.",
            cli=f"{what} Run the same command again with a smaller learning rate, e.g. --lr {smaller} "
                f"(half of {lr:g}); it resumes from that checkpoint.",
        )
