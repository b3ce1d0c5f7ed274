"""Data-parallel training with PyTorch's own engine (torchrun + DistributedDataParallel).

`torchrun --nproc-per-node N -m seq2seq train ...` starts N processes whose environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...) says who they are; a plain
`seq2seq train` is one process and every helper here is then a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs, plots and the progress bar."""
        return self.rank == 0


def launched() -> Context:
    """Who torchrun made this process (a plain run: rank 0 of 1), before or without
    joining the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    return Context(
        rank=int(os.environ["RANK"]),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )


def start(device_type: str, timeout_minutes: float) -> Context:
    """Join the process group torchrun describes (NCCL on CUDA, Gloo on CPU), if any."""
    context = launched()
    if context.distributed and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(
            "nccl" if device_type == "cuda" else "gloo",
            timeout=timedelta(minutes=timeout_minutes),  # a rank stuck this long fails the run
        )
    return context


def stop(context: Context) -> None:
    """Leave the process group once every rank has come here: Gloo aborts a rank that
    tears the group down while rank 0 is still saving."""
    if dist.is_initialized():
        barrier(context)
        dist.destroy_process_group()


def any_rank(flag: bool, context: Context, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one."""
    return all_sum([float(flag)], context, device)[0] > 0


def from_main(value: Any, context: Context) -> Any:
    """Rank 0's `value`, on every rank."""
    if not context.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(value: Any, context: Context) -> list[Any] | None:
    """Every rank's `value`, in rank order, on rank 0 (None elsewhere)."""
    if not context.distributed:
        return [value]
    boxes = [None] * context.world_size if context.is_main else None
    dist.gather_object(value, boxes, dst=0)
    return boxes


def all_sum(values: list[float], context: Context, device: torch.device) -> list[float]:
    """Element-wise sums of `values` over all ranks (float64: token counts stay exact)."""
    if not context.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()
