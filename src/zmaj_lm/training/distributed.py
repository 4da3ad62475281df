"""Process groups, data-parallel wrapping and the few collectives the loop needs.

``torchrun --nproc_per_node=N`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without them the run
is a single process and every helper here is a no-op. CPU runs use gloo, CUDA runs NCCL. Wrapping:
DDP, or FSDP2 (``fully_shard`` on every block, then on the root). Rank 0 alone logs and writes
files; every rank reads its own shard of the data.
"""

import gc
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(choice: Literal["auto", "cpu", "cuda"], local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when available, else CPU; CUDA picks this process's local GPU."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("training.device is cuda but no CUDA device is available")
    return torch.device("cuda", local_rank)


def init_distributed(device_choice: Literal["auto", "cpu", "cuda"] = "auto") -> DistInfo:
    """Join the process group torchrun described (if any) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed(*, succeeded: bool = True) -> None:
    """Leave the process group (if one was joined).

    After a successful run every rank meets at a barrier first, so no rank tears down its gloo
    connections while a peer still finishes (rank 0 writes the summary and plot after the last
    collective); a rank that destroys early can abort its peer with ``terminate called without an
    active exception``. After a failure the group is left as is: destroying it while another rank
    sits in a collective deadlocks (torchtitan #1342), and torchrun stops the other ranks anyway.
    """
    if not dist.is_initialized() or not succeeded:
        return
    # DDP wrappers left in reference cycles would otherwise be freed after the group is gone
    # (at interpreter exit), when their reducer can no longer talk to it.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list when not distributed)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: nn.Module, strategy: Literal["ddp", "fsdp"], info: DistInfo) -> nn.Module:
    """DDP or FSDP2-sharded ``model`` when distributed; the model itself otherwise."""
    if not info.enabled:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleList):
        for block in layers:
            fully_shard(block)
    fully_shard(model)
    return model


def set_grad_sync(model: nn.Module, enabled: bool) -> None:
    """Turn gradient all-reduce on or off for the next backward (off for all but the last
    micro-batch of an accumulated step)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        model.require_backward_grad_sync = enabled
        return
    setter = getattr(model, "set_requires_gradient_sync", None)
    if callable(setter):
        setter(enabled)


def unwrap(model: nn.Module) -> nn.Module:
    """The user module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def is_fsdp(model: nn.Module) -> bool:
    """Whether ``model`` (or what it wraps) is sharded with FSDP2."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(unwrap(model), FSDPModule)
