"""The process group: CUDA with NCCL when there is a GPU, otherwise CPU with gloo."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init() -> World:
    """Join the group torchrun set up (or run alone when started without torchrun)."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if size > 1 and not td.is_initialized():
        td.init_process_group(backend, timeout=dt.timedelta(minutes=10),
                              device_id=device if device.type == "cuda" else None)
    return World(rank=rank, local_rank=local_rank, size=size, device=device)


def all_reduce_max(world: World, value: float) -> float:
    """The largest of one number over all ranks: used so that every rank agrees to stop."""
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=world.device)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return float(t.item())


def barrier(world: World) -> None:
    if world.size > 1:
        td.barrier()


def shutdown() -> None:
    if td.is_initialized():
        td.destroy_process_group()
