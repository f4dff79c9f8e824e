"""Multi-process training and evaluation under torchrun (DistributedDataParallel); plain functions.

`torchrun --nproc_per_node N -m engine train ...` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK set (multi-node: torchrun's --nnodes and rendezvous options). `init` joins the group
(nccl on CUDA, gloo on the CPU) and picks the process's GPU (cuda:LOCAL_RANK). Without torchrun
(or with WORLD_SIZE=1) nothing is initialised and every function here answers as a single process:
rank 0 of 1, barriers and reductions do nothing.

What uses it: training (a disjoint shard of every global batch per rank, DDP, rank 0 alone writes
checkpoints and store rows) and evaluation (val images sharded by rank, the confusion matrix
all-reduced: integer counts, so the metrics equal the single-process ones exactly; the per-image
results gathered to rank 0, which records them).
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def launched() -> bool:
    """True under torchrun (or any launcher setting RANK/WORLD_SIZE) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device: str = "auto") -> bool:
    """Join the process group torchrun describes (no-op when not launched, or already joined).
    `device` is the command line's --device: CUDA -> nccl and cuda:LOCAL_RANK, else gloo."""
    if not launched() or active():
        return active()
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return True


def cleanup() -> None:
    if active():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if active() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def local_device(dev: torch.device) -> torch.device:
    """This process's device: under torchrun, a bare (or any) CUDA device means cuda:LOCAL_RANK."""
    if active() and dev.type == "cuda":
        return torch.device("cuda", local_rank())
    return dev


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks, in place (and returned); unchanged in a single process."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. the run uid)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(items: list) -> list | None:
    """Every rank's `items` concatenated (rank 0's first) on rank 0, None on the others; `items`
    itself in a single process. Any picklable objects (e.g. an evaluation's per-image results)."""
    if not active():
        return items
    out = [None] * world_size() if is_main() else None
    dist.gather_object(items, out, dst=0)
    return [x for part in out for x in part] if is_main() else None


def shard(dataset):
    """This rank's share of a dataset: items rank, rank + world, ... (the whole dataset alone)."""
    if world_size() == 1:
        return dataset
    return torch.utils.data.Subset(dataset, range(rank(), len(dataset), world_size()))


def plan_batch(total: int, world: int, micro_max: int | None = None) -> tuple[int, int, int, str]:
    """(micro, accumulation, effective, note): per-rank micro-batch and accumulation steps so that
    world x micro x accumulation == total (the recipe's batch). `micro_max` caps the micro-batch
    (what fits on one GPU). When total is not a multiple of world, each rank takes total // world
    (at least 1) and `note` says what the effective batch became."""
    note = ""
    per_rank = max(1, total // world)
    if per_rank * world != total:
        note = (f" (the recipe's batch {total} is not a multiple of {world} processes: "
                f"using {per_rank * world})")
    accum = 1
    if micro_max and micro_max < per_rank:
        accum = -(-per_rank // micro_max)
        while per_rank % accum:  # equal micro-batches: the smallest divisor that fits
            accum += 1
    micro = per_rank // accum
    return micro, accum, world * micro * accum, note


def wrap(model: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around `model` (its gradients all-reduced in backward)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
