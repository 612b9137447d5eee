"""The process group and rank helpers shared by training, evaluation and prediction.

One process, or one process per GPU under ``torchrun``: rank, world size and local rank come from torchrun's
environment (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``). Under torchrun the process group is set up even for a
single rank (nccl on GPUs, gloo on CPUs), so a 1-GPU launch runs the same DDP code path as an 8-GPU one.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ


@contextmanager
def distributed(device: str | torch.device | None = None) -> Iterator[Context]:
    """Join the process group when launched by torchrun (or with WORLD_SIZE > 1); leave it on exit.

    The device is ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU; ``device`` overrides it.
    """
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    joined = False
    if (world > 1 or launched_by_torchrun()) and not is_dist():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        joined = True
    try:
        yield Context(rank, world, local, dev)
    finally:
        if joined and is_dist():
            dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def collective_device() -> torch.device:
    """Where tensors must live for collectives of the current group (nccl: this rank's GPU)."""
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_to_rank0(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (None on the others); ``[obj]`` without a process group."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list on every rank; ``[obj]`` without a process group."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (a no-op without a process group)."""
    if is_dist():
        dist.all_reduce(tensor)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if is_dist():
        dist.broadcast(tensor, src=src)
    return tensor


def state_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over named tensors (name order): equal digests = equal values, bit for bit."""
    h = hashlib.sha256()
    for name, t in sorted(tensors.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
