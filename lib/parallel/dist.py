"""One process group per torchrun job: gloo on CPU, NCCL on CUDA, chosen from the device.

torchrun (or ``srun`` + torchrun under SLURM) sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT;
without them this is a one-process run and nothing is initialised.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: str = "auto", timeout_s: float = 300) -> Dist:
    """Join the job's process group (when launched by torchrun) and pick this rank's device.

    timeout_s bounds every collective: a rank that dies makes the others fail with an error after at
    most this long instead of hanging until the SLURM time limit (torchrun then stops the job).
    """
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local}" if device == "cuda" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not launched():
        return Dist(device=dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, timeout=timedelta(seconds=timeout_s), device_id=dev if dev.type == "cuda" else None
        )
    return Dist(dist.get_rank(), dist.get_world_size(), local, dev)


def close() -> None:
    """Destroy the process group while the interpreter is whole, and free what still holds it.

    Models, meshes and optimizers keep references to the group; left to interpreter shutdown, its
    gloo worker threads may free a tensor after Python is gone and abort the process ("terminate
    called without an active exception", seen once in 2-rank FSDP teardown on CI). Call it after the
    training frame has returned, so those objects are garbage already.
    """
    if dist.is_initialized():
        gc.collect()  # module/hook reference cycles: collected now, not at exit
        dist.destroy_process_group()
        gc.collect()


def gather(obj, d: Dist) -> list | None:
    """Every rank's ``obj`` on rank 0 (None elsewhere); a one-process run returns [obj]."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world if d.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
