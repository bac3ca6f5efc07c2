"""How fast the training step runs, kept apart from what it computes.

`vaebook.train.train` is the whole algorithm: batches, the loss, its gradient, an
Adam step, the metrics. Everything that only makes it faster, and does not change
what it computes, is here, in one `Runner` that the loop is handed:

* **placement**: the device (`pick_device`); the uint8 images resident on the GPU
  when they fit (`Runner.place`), else in pinned host memory, copied batch by batch;
  channels-last memory for convolutions on CUDA;
* **precision**: the forward pass under autocast in the dtype the GPU computes
  natively (`autocast_dtype`: bf16, or fp16 with a gradient scaler on a T4 or V100);
  float32 on the CPU and MPS;
* **the optimiser's kernels**: Adam as one fused (and graph-capturable) CUDA kernel
  on a GPU; on the CPU PyTorch's default there, the single-tensor loop (the fused CPU
  kernel is faster but rounds differently: it would change every CPU-trained result);
* **the step itself**: run eagerly, compiled with `torch.compile` (``compile``), or,
  on CUDA by default, captured whole (forward, loss, backward and Adam step) in a
  CUDA graph and replayed: one launch per step instead of hundreds, which is what
  small models on a large GPU are bound by (`StaticStep`);
* **several processes** under ``torchrun`` (`vaebook.distributed`): each rank takes its share
  of every batch, gradients are averaged by `DistributedDataParallel`, metrics summed.

A CUDA graph replays fixed kernels on fixed memory: see `StaticStep` for how the
step is captured (one graph per batch size), warmed up, tested without a GPU, and
given up, in one line, where capture fails.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .data import to_float
from .distributed import Distributed
from .errors import DeviceError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
GRAPHS = ("auto", "off", "static")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
WARMUP_STEPS = 3  # eager steps of each batch size before it is captured

StepFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


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


@dataclass
class Runner:
    """Where and how fast `vaebook.train.train` runs its step; see the module docstring.

    Build it with `Runner.start`. `train` calls `to_device`, `optimizer` (and
    `configure` after resuming), `place`, `prepare` and `stepper` once; then, per step,
    the function `stepper` returned, which calls back `batch`, `autocast`, `backward`
    and `step` from inside `train_step`; `peek`, `seconds_since` and `sum` between
    steps and epochs; `finish` at the end.
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None
    compile: bool | str = False
    graphs: str = "auto"
    dist: Distributed = field(default_factory=Distributed)
    scaler: Any = None
    mode: str = "eager"  # what the step ended up as: eager, compiled, cuda graphs, static (see `stepper`)
    _share: float = 1.0  # this rank's share of the global batch (DDP), set per step by `stepper`
    scaler_after_step: bool = False  # fp16 in a graph: the scaler's step runs after each replay (`StaticStep`)
    _optimizer: Any = None
    _peeked: list = field(default_factory=list)

    @classmethod
    def start(cls, device: str | torch.device | None = None, precision: str = "auto", compile: bool | str = False,
              graphs: str = "auto") -> "Runner":
        """Pick the device (joining the process group under ``torchrun``) and the precision; no work yet."""
        if graphs not in GRAPHS:
            raise ValueError(f"graphs must be one of {', '.join(GRAPHS)}, not {graphs!r}")
        dist = Distributed.start(device)
        where = dist.device if dist.active else device if isinstance(device, torch.device) else pick_device(device)
        amp = autocast_dtype(where, precision)
        scaler = torch.amp.GradScaler(where.type, enabled=amp is torch.float16)  # fp16 gradients underflow unscaled
        return cls(where, amp, compile, graphs, dist, scaler)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def rank(self) -> int:
        return self.dist.rank

    # ------------------------------------------------------------------ before the loop

    def optimizer(self, model: torch.nn.Module, lr: float) -> torch.optim.Adam:
        """Adam on the model's parameters, with the kernels that suit the device (same maths everywhere)."""
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, **({"fused": True, "capturable": True} if self.cuda else
                                                                      {"foreach": False}))
        self.configure(optimizer, lr)
        return optimizer

    def configure(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        """Set the learning rate and the kernel flags, also after a checkpoint's state overwrote them."""
        for group in optimizer.param_groups:
            group["lr"] = lr
            if self.cuda:  # one fused kernel, its step count on the GPU: it can be captured in a graph
                group.update(fused=True, foreach=None, capturable=True)
            else:  # PyTorch's default for CPU tensors, the single-tensor loop (also after a GPU checkpoint)
                group.update(fused=None, foreach=False, capturable=False)
        if self.cuda:  # a resumed state as the fused kernel reads it: step counts on the GPU, the params' layout
            optimizer._warned_capturable_if_run_uncaptured = True  # the eager warm-up steps are meant
            for p, state in optimizer.state.items():
                for key, value in state.items():
                    if key == "step":
                        state[key] = value.to(p.device, torch.float32)
                    elif value.shape == p.shape and value.stride() != p.stride():
                        state[key] = torch.empty_like(p).copy_(value)

    def to_device(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` on the device, in channels-last memory on CUDA (what cuDNN's fastest convolutions read)."""
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.cuda else model

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the step calls: ``model`` wrapped for DDP and compiled if asked. The optimiser and the
        checkpoints keep using ``model`` itself."""
        return _compiled(self.dist.wrap(model), self.compile)

    def place(self, images: torch.Tensor, budget: float = 0.5) -> torch.Tensor:
        """The uint8 images where batches are sliced from: on the device if it is a GPU with room for them
        (at most ``budget`` of its free memory), else in host memory, pinned when a GPU reads them."""
        if not self.cuda:
            return images.to(self.device)
        free, _ = torch.cuda.mem_get_info(self.device)
        if images.numel() * images.element_size() <= budget * free:
            return images.to(self.device)
        return images.pin_memory()

    def stepper(self, step: StepFn, images: torch.Tensor, batch_size: int) -> StepFn:
        """``step(images, idx, beta)`` as the loop should call it: on this rank's share of ``idx``, and
        captured in CUDA graphs where that is possible (``graphs="auto"`` on one CUDA GPU with the images
        resident), run on static buffers without capture (``"static"``), or eagerly."""
        reason = self._no_graphs(images)
        if reason:
            self.mode = "compiled" if self.compile else "eager" if not self.cuda else f"eager ({reason})"
            return self._eager(step)
        self.mode = "cuda graphs" if self.graphs == "auto" else "static"
        return StaticStep(step, images, batch_size, self.device, self.graphs == "auto", self)

    def _no_graphs(self, images: torch.Tensor) -> str:
        if self.graphs == "off":
            return "turned off"
        if self.graphs == "auto" and not self.cuda:
            return "not a CUDA GPU"
        if self.dist.active:
            return "several processes"
        if self.compile:
            return "compiled instead"
        if images.device.type != self.device.type:  # (cuda:0 and cuda are the same place)
            return "the images do not fit on the GPU"
        return ""

    def _eager(self, step: StepFn) -> StepFn:
        def run(images: torch.Tensor, idx: torch.Tensor, beta: Any) -> torch.Tensor:
            local = self.dist.shard(idx)
            # DDP averages gradients over ranks; weighting by the shard's share of the global batch
            # makes that average the gradient of the global batch mean, even for a short last batch.
            self._share = len(local) * self.dist.world / len(idx) if self.dist.active else 1.0
            return step(images, local, beta)

        return run

    # ------------------------------------------------------------------ inside the step

    def batch(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``images[idx]`` as floats in [0, 1] on the device (channels-last for convolutions on CUDA)."""
        x = to_float(images[idx.to(images.device)].to(self.device, non_blocking=True))
        if self.cuda and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast in the chosen precision (a no-op in float32)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None, cache_enabled=self.mode != "cuda graphs")

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, scaled for fp16 and weighted by this rank's share of the batch."""
        self.scaler.scale(loss * self._share if self._share != 1.0 else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()`` (skipped by the fp16 scaler if a gradient overflowed), then the scale update.

        With fp16 in a CUDA graph the graph holds only forward and backward, and `StaticStep` calls
        `step_after` after each replay, which is PyTorch's recipe for amp with graphs.
        """
        if self.scaler_after_step:
            self._optimizer = optimizer
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def step_after(self) -> None:
        """The optimiser step that `step` left for after the graph (fp16 only)."""
        if self.scaler_after_step:
            self.scaler.step(self._optimizer)
            self.scaler.update()

    # ------------------------------------------------------------------ between steps

    def peek(self, sums: torch.Tensor) -> torch.Tensor | None:
        """The running sums as the host can read them without stalling the device: ``sums`` itself off CUDA;
        on CUDA the value of an earlier call's copy if it has arrived (else None), so the loop never waits."""
        if not self.cuda:
            return sums
        ready = None
        while self._peeked and self._peeked[0][1].query():
            ready = self._peeked.pop(0)[0]
        host = torch.empty(sums.shape, dtype=sums.dtype, pin_memory=True)
        host.copy_(sums, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._peeked.append((host, event))
        return ready

    def seconds_since(self, t0: float) -> float:
        """Wall seconds since ``t0``, once the device has finished what was queued."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self._peeked.clear()
        return time.perf_counter() - t0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.dist.sum(t)

    def finish(self, model: torch.nn.Module) -> None:
        """After the last epoch: leave the process group, give the model back in the usual memory layout."""
        if self.dist.active:
            self.dist.finish()
        if self.cuda:
            model.to(memory_format=torch.contiguous_format)

    def describe(self) -> dict[str, Any]:
        """What model.json records about how the model was trained."""
        name = f"cuda ({torch.cuda.get_device_name(self.device)})" if self.cuda else self.device.type
        if self.dist.active:
            name += f" x {self.dist.world} ({self.dist.backend})"
        return {"device": name, "precision": str(self.amp_dtype or torch.float32).removeprefix("torch."),
                "compile": self.compile, "step": self.mode}


class StaticStep:
    """The training step on static buffers, one captured CUDA graph per batch size.

    Each call copies the batch's indices into a static index buffer and the KL weight
    into a static scalar, then replays the graph of that batch size, which gathers the
    images, runs the whole step and leaves its metrics in a static output (with fp16,
    the gradient scaler's step and update run after the replay). The first
    `WARMUP_STEPS` steps of each size run eagerly (real steps that also warm up the
    kernels). With ``capture=False`` the "graph" is the step itself, called on the same
    static buffers: the code path of a GPU, runnable and testable anywhere.
    """

    def __init__(self, step: StepFn, images: torch.Tensor, batch_size: int, device: torch.device, capture: bool,
                 runner: Runner) -> None:
        self.step, self.images, self.capture, self.runner = step, images, capture, runner
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.beta = torch.zeros((), device=device)
        self.graphs: dict[int, Callable[[], torch.Tensor]] = {}
        self.seen: dict[int, int] = {}
        self.failed = ""
        runner.scaler_after_step = runner.scaler.is_enabled()  # fp16: the scaler's step stays out of the graph

    def __call__(self, images: torch.Tensor, idx: torch.Tensor, beta: Any) -> torch.Tensor:
        n = len(idx)
        if self.failed:
            return self.step(self.images, idx, beta)
        if n not in self.graphs:
            self.seen[n] = self.seen.get(n, 0) + 1
            if self.seen[n] <= WARMUP_STEPS:
                out = self._warmup(idx, beta)
                self.runner.step_after()
                return out
            try:
                self.graphs[n] = self._capture(n)
            except Exception as error:  # noqa: BLE001 - any failure of capture means: run eagerly
                return self._fall_back(error, idx, beta)
        self.idx[:n].copy_(idx, non_blocking=True)
        self.beta.fill_(beta)
        out = self.graphs[n]()
        self.runner.step_after()
        return out

    def _warmup(self, idx: torch.Tensor, beta: Any) -> torch.Tensor:
        if not self.capture:
            return self.step(self.images, idx, beta)
        side = torch.cuda.Stream(self.idx.device)  # as PyTorch's CUDA-graph recipe warms up: on a side stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step(self.images, idx, beta)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, n: int) -> Callable[[], torch.Tensor]:
        if not self.capture:
            return lambda: self.step(self.images, self.idx[:n], self.beta)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.step(self.images, self.idx[:n], self.beta)

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        return replay

    def _fall_back(self, error: Exception, idx: torch.Tensor, beta: Any) -> torch.Tensor:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        self.failed = f"{type(error).__name__}: {first}"
        if self.runner.rank == 0:
            print(f"vaebook: CUDA graph capture failed ({self.failed}); training goes on without graphs.",
                  file=sys.stderr)
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()
        scaler = self.runner.scaler  # a capture that stopped half-way may leave the scaler mid-step
        self.runner.scaler = torch.amp.GradScaler(self.runner.device.type, enabled=scaler.is_enabled(),
                                                  **({"init_scale": float(scaler.get_scale())} if scaler.is_enabled() else {}))
        self.runner.mode = "eager (capture failed)"
        self.runner.scaler_after_step = False
        return self.step(self.images, idx, beta)


def _compiled(model: torch.nn.Module, compile: bool | str) -> torch.nn.Module:
    """``model`` compiled with `torch.compile` (with the named backend if ``compile`` is a string), or itself."""
    if not compile:
        return model
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise DeviceError(f"torch.compile does not support Python {version} with torch {torch.__version__}; "
                          "upgrade torch, or train without compile.",
                          cli=f"torch.compile does not support Python {version} with torch {torch.__version__}; "
                              "upgrade torch, or leave out --compile.")
    return torch.compile(model, **({} if compile is True else {"backend": compile}))
