"""Checkpoints hold what is trained (projector + LoRA) and the state to continue exactly: optimizer,
scheduler, RNG, step. Loading one never runs code from it: weights come from safetensors or DCP's
tensor files (``torch.load(weights_only=True)``), DCP's pickled index is read through an allow-list of
exact classes, and every other value (optimizer settings, ``state.pt``) through
``torch.load(weights_only=True)``. A checkpoint that asks for more is refused with ``UnsafeCheckpoint``,
naming what it asked for.

``step-N/`` holds:
- ``dcp/``: trained parameters and optimizer state by parameter name, written with
  torch.distributed.checkpoint by every rank (FSDP: each its shards; pipeline: each its stage's;
  DDP: replicas written once).
  Any later run reshards them on load: another world size, another strategy, or one process.
- ``state.pt``: step, scheduler, loss scale (rank 0).
- ``rng-<rank>.pt``: each rank's random state (dropout masks differ across data-parallel ranks).
- ``trainable.safetensors``: the trained weights in one file for whoever only wants the model
  (evaluation, sharing); written when one rank holds the whole model (the caller says: ``whole``).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from lib.models.vlm import is_trained
from lib.training.safe_load import UnsafeCheckpoint, dcp_load, load_plain, one_process_is_fine, read_metadata


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that is trained in any stage (projector and LoRA), by name."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if is_trained(n)}


def save(
    folder: str | os.PathLike,
    model,
    optimizer,
    scheduler,
    step: int,
    extra: dict | None = None,
    scaler=None,
    rank: int = 0,
    keep: int = 3,
    whole: bool = True,
) -> Path:
    """Write ``folder/step-NNNNNN`` via a temp folder + rename, point ``latest`` at it, and delete all
    but the ``keep`` newest. Every rank calls it (DCP is collective under a process group). ``whole``:
    this rank holds every trained parameter (not an FSDP shard or a pipeline stage), so rank 0 also
    writes them as one safetensors file."""
    folder = Path(folder)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".tmp-step-{step:06d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()  # the temp folder exists before any rank writes into it
    # each rank's own random state: data-parallel ranks draw different dropout masks, and a resumed rank
    # must go on drawing its own
    torch.save(_rng(), tmp / f"rng-{rank}.pt")
    with one_process_is_fine():
        dcp.save(_dcp_state(model, optimizer), checkpoint_id=tmp / "dcp", no_dist=not _distributed())
    if rank == 0:
        if whole:
            save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save(
            {
                "step": step,
                "scheduler": scheduler.state_dict(),
                "extra": extra or {},
                "scaler": scaler.state_dict() if scaler else None,
            },
            tmp / "state.pt",
        )
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        (folder / ".latest.tmp").write_text(final.name)
        os.replace(folder / ".latest.tmp", folder / "latest")
        for old in sorted(folder.glob("step-*"))[:-keep]:
            shutil.rmtree(old)
    _barrier()  # no rank runs ahead of a checkpoint that is not complete
    return final


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _rng() -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _dcp_state(model, optimizer) -> dict:
    """Trained parameters and optimizer state keyed by parameter name (frozen weights come from the
    base model, never from checkpoints); the same keys for sharded and plain models."""
    with _tensors_only(model):
        msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))
    return {"model": msd, "optim": osd}


@contextmanager
def _tensors_only(model):
    """``state_dict()`` limited to parameters and buffers. bitsandbytes' 8-bit layers add their weights'
    quantisation statistics (``SCB``, ``weight_format``), which are no module attribute, and
    torch.distributed.checkpoint's state-dict helpers fail on them (seen on an H100). They describe
    frozen weights, which checkpoints never hold."""
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}

    def drop_extras(module, state, prefix, local_metadata):
        for key in [k for k in state if k.removeprefix(prefix) not in names]:
            del state[key]

    handle = model.register_state_dict_post_hook(drop_extras)
    try:
        yield
    finally:
        handle.remove()


def latest(folder: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``folder`` (a run's out/ckpt), or ``folder`` itself if it is one.
    The ``latest`` pointer may only name a ``step-N`` folder beside it: a shared checkpoint cannot send
    the reader anywhere else."""
    folder = Path(folder)
    if (folder / "state.pt").exists():
        return folder
    for ckpts in (folder / "ckpt", folder):
        if (ckpts / "latest").is_file():
            name = (ckpts / "latest").read_text(errors="replace").strip()
            if not re.fullmatch(r"step-\d+", name):
                raise UnsafeCheckpoint(
                    f"{ckpts / 'latest'} names {name[:80]!r}, not a step-N folder beside it"
                )
            return ckpts / name
    return None


def load_trainable(model, ckpt: str | os.PathLike, strict: bool = True) -> None:
    """The trained weights of a checkpoint into a plain (unsharded) model, e.g. to evaluate it."""
    load_trained_state(model, load_file(Path(ckpt) / "trainable.safetensors"), strict, source=str(ckpt))


def load_weights(model, ckpt: str | os.PathLike) -> Path:
    """The trained weights of a run's newest checkpoint (or of ``ckpt`` itself) into a plain model:
    from ``trainable.safetensors`` when one rank held the whole model, else from the DCP shards or
    stages, whatever world size wrote them. Returns the checkpoint folder read."""
    found = latest(ckpt)
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint under {ckpt} (a run's out folder, its ckpt/, or a step-N folder)"
        )
    if (found / "trainable.safetensors").exists():
        load_trainable(model, found)
        return found
    with _tensors_only(model):
        state = {"model": get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True))}
    dcp_load(state, found / "dcp", no_dist=True)
    load_trained_state(model, state["model"], source=str(found))
    return found


def load_trained_state(
    model, state: dict[str, torch.Tensor], strict: bool = True, source: str = "state"
) -> None:
    """Copy trained weights by name into a plain model; strict: exactly its trained parameters."""
    own = dict(model.named_parameters())
    missing = [n for n in own if is_trained(n) and n not in state]
    unknown = [n for n in state if n not in own]
    if strict and (missing or unknown):
        raise ValueError(
            f"{source}: weights do not match the model (missing {missing[:3]}, unknown {unknown[:3]})"
        )
    with torch.no_grad():
        for n, t in state.items():
            if n in own:
                own[n].copy_(t)


def resume(model, optimizer, scheduler, ckpt: str | os.PathLike, scaler=None) -> int:
    """Restore everything a run needs to continue bit for bit; returns the step to start from.
    Every rank calls it; the checkpoint may come from any world size and strategy."""
    ckpt = Path(ckpt)
    if not (ckpt / "dcp").is_dir() or not (ckpt / "state.pt").exists():
        raise FileNotFoundError(f"{ckpt} is not a complete checkpoint (dcp/ and state.pt)")
    target = _dcp_state(model, optimizer)
    saved = read_metadata(ckpt / "dcp").state_dict_metadata.keys()
    # Parameters the optimizer had not stepped yet (LoRA in the projector-only stage 1) have no state in
    # the checkpoint; they go on without one, as in the run that was not interrupted.
    target["optim"]["state"] = {
        k: v for k, v in target["optim"]["state"].items() if f"optim.state.{k}.step" in saved
    }
    dcp_load(target, ckpt / "dcp", no_dist=not _distributed())
    # not strict: the frozen weights are not in checkpoints by design; anything else missing is an error
    with _tensors_only(model):
        keys = set_state_dict(
            model,
            optimizer,
            model_state_dict=target["model"],
            optim_state_dict=target["optim"],
            options=StateDictOptions(ignore_frozen_params=True, strict=False),
        )
    wrong = [k for k in keys.missing_keys if is_trained(k)] + list(keys.unexpected_keys)
    if wrong:
        raise ValueError(f"{ckpt}: checkpoint does not match the model ({wrong[:3]})")
    state = load_plain(ckpt / "state.pt")
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):  # fp16: the loss scale reached so far
        scaler.load_state_dict(state["scaler"])
    rank = dist.get_rank() if _distributed() else 0
    own = ckpt / f"rng-{rank}.pt"
    if own.exists():
        rng = load_plain(own)
    elif "rng" in state and rank == 0:  # written before each rank saved its own: rank 0's only
        rng = state["rng"]
    else:  # resumed on more ranks than saved it: this rank keeps the stream it was seeded with
        print(f"{ckpt}: no random state for rank {rank}; it keeps its fresh one", file=sys.stderr)
        rng = None
    if rng is not None:
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"]
