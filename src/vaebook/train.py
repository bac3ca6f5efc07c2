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
before anything is written, so the last good checkpoint survives. The host
synchronises only every ``log_every`` steps, not at every step.

The fast path. The images stay one uint8 tensor and batches are sliced out of it
and scaled to [0, 1] on the device: no DataLoader, no PIL, no per-image work. On
CUDA the whole set is resident on the GPU when it fits (otherwise it stays in
pinned host memory and each batch is copied asynchronously); the forward pass
runs under autocast in the precision `autocast_dtype` picks for the GPU (bf16 where
it is native, fp16 with a gradient scaler on older tensor-core GPUs such as Colab's
T4; losses always in fp32), convolutions use channels-last memory and Adam is the
fused CUDA kernel. On the CPU the same loop runs in fp32 on all cores.
`torch.compile` is available (``compile=True``, ``--compile``) but off by default:
its minutes of compilation do not pay back in runs of notebook size.

Several processes. Started by ``torchrun --nproc_per_node=N -m vaebook train
NAME``, each process (rank) takes every N-th image of each global batch, the
gradients are averaged by `DistributedDataParallel` (NCCL on GPUs, gloo on the
CPU), the metrics are summed across ranks, and only rank 0 writes checkpoints,
history and the model. With the same global batch, the result matches one
process up to floating-point summation order.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from . import __version__
from .checkpoints import clean_run_dir, load_checkpoint, load_checkpoint_info, save_checkpoint, save_model, write_json
from .data import ImageDataset, to_float
from .errors import CheckpointError, DeviceError, TrainingDivergedError
from .files import check_writable
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


PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The dtype the forward pass runs in under autocast, or None for plain float32.

    ``"auto"`` picks by the GPU's compute capability: bf16 where the GPU computes it
    natively (8.0 and up: A100, H100, RTX 30xx and later); fp16, with a gradient
    scaler, on 7.x (V100, T4, RTX 20xx: tensor cores for fp16, bf16 only emulated);
    float32 on older GPUs, the CPU and Apple's MPS. ``"bf16"``, ``"fp16"`` and
    ``"fp32"`` force a choice; bf16 on a CUDA GPU that only emulates it is refused.
    """
    if precision not in PRECISIONS:
        raise DeviceError(f"Unknown precision {precision!r}: use {', '.join(PRECISIONS)}.")
    capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    if precision == "auto":
        if capability is None:
            return None
        precision = "bf16" if capability >= (8, 0) else "fp16" if capability >= (7, 0) else "fp32"
    if precision == "bf16" and capability is not None and capability < (8, 0):
        raise DeviceError(f"This GPU (compute capability {capability[0]}.{capability[1]}) has no native bf16; "
                          "bf16 would be emulated and slow. Use fp16 or fp32 (or auto).",
                          cli=f"This GPU (compute capability {capability[0]}.{capability[1]}) has no native bf16; "
                              "use --precision fp16, fp32 or auto.")
    return _DTYPES[precision]


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
          resume: bool = True, meta: dict[str, Any] | None = None, compile: bool | str = False,
          precision: str = "auto") -> TrainResult:
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
        precision: the autocast precision, see `autocast_dtype` (``"auto"``: by the GPU).

    Raises:
        OutputError: ``run_dir`` cannot be created or written (before any work), or a
            checkpoint cannot be saved (the disk is full; the last good one is kept).
        TrainingDivergedError: the loss became NaN or infinite (nothing is written).
        CheckpointError: the checkpoint in ``run_dir`` is damaged or from other configs.
    """
    dist = _Distributed.start(device)
    device = dist.device if dist.active else (pick_device(device) if not isinstance(device, torch.device) else device)
    cuda = device.type == "cuda"
    amp_dtype = autocast_dtype(device, precision)
    progress = progress and dist.rank == 0
    run_dir = Path(run_dir)
    cfg, tcfg = model_config, train_config
    if tuple(train_set.shape) != tuple(cfg.in_shape):
        raise ValueError(f"The model expects images of shape {cfg.in_shape}, the data has {train_set.shape}.")
    if dist.rank == 0:
        check_writable(run_dir, "the run folder")
        clean_run_dir(run_dir)  # temporary and orphaned files of killed runs

    torch.manual_seed(tcfg.seed)
    model = build_model(cfg).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr, fused=True if cuda else None)
    history: list[dict[str, float]] = []
    start_epoch, elapsed = 0, 0.0
    info = load_checkpoint_info(run_dir) if resume else None
    if info is not None:
        if any(k not in info for k in ("model", "train", "history", "wall_time_s")):
            raise CheckpointError(f"{run_dir / 'checkpoint.json'} was not written by vaebook.train; "
                                  "use another --out folder, or pass --restart to overwrite it.")
        may_change = {"epochs": tcfg.epochs, "lr": tcfg.lr}  # more epochs; a new learning rate after divergence
        same_train = {**TrainConfig().to_dict(), **info["train"], **may_change} == tcfg.to_dict()
        if ModelConfig.from_dict(info["model"]) != cfg or not same_train:
            raise CheckpointError(
                f"{run_dir} holds a checkpoint of a different configuration. "
                "Use another --out folder, or pass --restart to overwrite it."
            )
        info = load_checkpoint(run_dir, model, optimizer)
        for group in optimizer.param_groups:  # the learning rate asked for now, e.g. a smaller one after divergence
            group["lr"] = tcfg.lr
        start_epoch, history, elapsed = info["epoch"], info["history"], info["wall_time_s"]
        if progress and start_epoch < tcfg.epochs:
            changed = f" with learning rate {tcfg.lr:g}" if info["train"].get("lr") != tcfg.lr else ""
            print(f"Resuming {run_dir} from epoch {start_epoch}{changed}.")

    images = _place(train_set.images, device)  # uint8: resident on the GPU if it fits, else pinned host memory
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)  # fp16 gradients underflow unscaled
    step_model = _compiled(dist.wrap(model), compile)
    steps_per_epoch = math.ceil(len(images) / tcfg.batch_size)
    for epoch in range(start_epoch, tcfg.epochs):
        model.train()
        t0 = time.perf_counter()
        sums = torch.zeros(3, device=device)  # loss, recon, kl summed over images
        with _progress(steps_per_epoch, f"epoch {epoch + 1}/{tcfg.epochs}", progress) as bar:
            for step, idx in enumerate(shuffled_batches(len(images), tcfg.batch_size, tcfg.seed, epoch), 1):
                batch = len(idx)
                idx = dist.shard(idx)
                x = to_float(images[idx.to(images.device)].to(device, non_blocking=True))
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                x_in = (x + tcfg.noise_std * torch.randn_like(x)).clamp_(0, 1) if tcfg.noise_std > 0 else x
                with autocast:
                    output = step_model(x_in)
                beta = tcfg.beta
                if tcfg.kl_warmup_epochs > 0:
                    beta *= min(1.0, (epoch * steps_per_epoch + step) / (tcfg.kl_warmup_epochs * steps_per_epoch))
                terms = loss_terms({k: v.float() for k, v in output.items()}, x, cfg.likelihood, cfg.sigma, beta,
                                   free_bits=tcfg.free_bits)
                optimizer.zero_grad(set_to_none=True)
                # DDP averages gradients over ranks; weighting by the shard's share of the global batch
                # makes that average the gradient of the global batch mean, even for a short last batch.
                loss = terms["loss"] * (len(idx) * dist.world / batch) if dist.active else terms["loss"]
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                sums += torch.stack([terms["loss"], terms["recon"], terms["kl"]]).detach() * len(idx)
                if step % tcfg.log_every == 0 or step == steps_per_epoch:
                    _check_finite(dist.sum(sums), epoch, step, run_dir, tcfg.lr)
                    bar.set_postfix(loss=f"{sums[0].item() / min(step * tcfg.batch_size, len(images)):.2f}")
                bar.update(1)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        train_loss, train_recon, train_kl = (dist.sum(sums) / len(images)).tolist()
        test = dataset_loss(model, test_set, beta=tcfg.beta)
        _check_finite(torch.tensor([test["loss"]]), epoch, steps_per_epoch, run_dir, tcfg.lr, "test loss")
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "train_recon": train_recon,
                        "train_kl": train_kl, "test_loss": test["loss"], "test_recon": test["recon"],
                        "test_kl": test["kl"], "test_mse": test["mse"], "lr": tcfg.lr, "seconds": seconds,
                        "images_per_second": len(images) / seconds})
        elapsed += seconds
        if dist.rank != 0:
            continue  # only rank 0 reports and writes
        if progress:
            print(f"epoch {epoch + 1}/{tcfg.epochs}: train loss {train_loss:.2f}, test loss {test['loss']:.2f} "
                  f"(recon {test['recon']:.2f}, KL {test['kl']:.2f}) nats/image, {seconds:.1f} s")
        save_checkpoint(run_dir, model, optimizer, epoch + 1,
                        {"model": cfg.to_dict(), "train": tcfg.to_dict(), "history": history, "wall_time_s": elapsed})
        write_json(run_dir / "history.json", history)

    model.eval()
    if dist.active:
        dist.finish()
    if cuda:
        model = model.to(memory_format=torch.contiguous_format)
    final = history[-1] if history else {}
    if dist.rank != 0:
        return TrainResult(model, history, run_dir)
    save_model(run_dir, model, {
        **(meta or {}), "train": tcfg.to_dict(), "epochs": len(history),
        "test_metrics": {k[5:]: final[k] for k in final if k.startswith("test_")},
        "device": _device_name(device) + (f" x {dist.world} ({dist.backend})" if dist.active else ""),
        "precision": str(amp_dtype or torch.float32).removeprefix("torch."), "compile": compile,
        "wall_time_s": round(elapsed, 1),
        "torch_version": torch.__version__, "vaebook_version": __version__, "history": history,
    })
    return TrainResult(model, history, run_dir)


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


def _compiled(model: torch.nn.Module, compile: bool | str) -> torch.nn.Module:
    """``model`` compiled with `torch.compile` (with the named backend if ``compile`` is a string), or itself."""
    if not compile:
        return model
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        import sys

        raise DeviceError(f"torch.compile does not support Python {sys.version_info.major}.{sys.version_info.minor} "
                          f"with torch {torch.__version__}; upgrade torch, or train without compile.",
                          cli=f"torch.compile does not support Python {sys.version_info.major}."
                              f"{sys.version_info.minor} with torch {torch.__version__}; upgrade torch, or leave "
                              "out --compile.")
    return torch.compile(model, **({} if compile is True else {"backend": compile}))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def _place(images: torch.Tensor, device: torch.device, budget: float = 0.5) -> torch.Tensor:
    """The uint8 image tensor where batches are sliced from: on ``device`` if it is a GPU with room
    for it (at most ``budget`` of the free memory), else in host memory, pinned when a GPU will read it."""
    if device.type != "cuda":
        return images.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() <= budget * free:
        return images.to(device)
    return images.pin_memory()


@dataclass
class _Distributed:
    """The process group when started by ``torchrun`` (``WORLD_SIZE > 1``); inactive otherwise."""

    active: bool = False
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @classmethod
    def start(cls, device: str | torch.device | None) -> "_Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as tdist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and str(device) not in ("cpu",)
        dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(dev)
        if not tdist.is_initialized():
            tdist.init_process_group(backend)
        return cls(True, tdist.get_rank(), tdist.get_world_size(), dev, backend)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch: every ``world``-th index, starting at ``rank``."""
        return idx[self.rank::self.world] if self.active else idx

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over all ranks (a copy; ``t`` itself is left alone)."""
        if not self.active:
            return t
        import torch.distributed as tdist

        t = t.clone()
        tdist.all_reduce(t)
        return t

    def finish(self) -> None:
        import torch.distributed as tdist

        tdist.barrier()
