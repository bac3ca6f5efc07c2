"""Several processes: ``torchrun --nproc_per_node=N -m vaebook train NAME``.

Each process (rank) builds the same model from the same seed and draws the same
shuffle; `Distributed.shard` gives it every N-th image of each global batch,
`DistributedDataParallel` averages the gradients (NCCL on GPUs, gloo on the CPU),
`Distributed.sum` adds the metrics up across ranks, and only rank 0 writes. With the
same global batch the result matches one process up to floating-point summation
order (`tests/test_ddp.py`). Started without ``torchrun`` (``WORLD_SIZE`` unset or 1),
everything here is inactive and free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def rank() -> int:
    """This process's rank under ``torchrun`` (0 when started on its own)."""
    return int(os.environ.get("RANK", "0"))


@dataclass
class Distributed:
    """The process group when started by ``torchrun`` (``WORLD_SIZE > 1``); inactive otherwise."""

    active: bool = False
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @classmethod
    def start(cls, device: str | torch.device | None) -> "Distributed":
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
