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
- ``state.pt``: step, scheduler, RNG, loss scale (rank 0).
- ``trainable.safetensors``: the trained weights in one file for whoever only wants the model
  (evaluation, sharing); written when one rank holds the whole model (the caller says: ``whole``).
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader, filesystem, metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.serialization import _get_layout

from lib.models.vlm import is_trained


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
    with _one_process_is_fine():
        dcp.save(_dcp_state(model, optimizer), checkpoint_id=tmp / "dcp", no_dist=not _distributed())
    if rank == 0:
        if whole:
            save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save(
            {
                "step": step,
                "scheduler": scheduler.state_dict(),
                "rng": _rng(),
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


@contextmanager
def _one_process_is_fine():
    """DCP warns on every call without a process group; a one-process run is meant to be one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


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
    _dcp_load(state, found / "dcp", no_dist=True)
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


class UnsafeCheckpoint(ValueError):
    """A checkpoint that asks to be read in a way that could run code; nothing of it is loaded."""


def _metadata_classes() -> dict[tuple[str, str], object]:
    """Every (module, name) a DCP index (``.metadata``) holds, mapped to exactly that object. Nothing
    is looked up by name at load time, so no dotted name (``metadata.os.system``) can reach further."""
    allowed: dict[tuple[str, str], object] = {
        ("torch", "Size"): torch.Size,
        ("torch.serialization", "_get_layout"): _get_layout,  # looks a layout up by name, calls nothing else
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): filesystem._StorageInfo,
        ("pathlib", "PosixPath"): pathlib.PosixPath,
        ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
    }
    for name in (
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    ):
        allowed["torch.distributed.checkpoint.metadata", name] = getattr(metadata, name)
    for name in dir(torch):  # dtypes (torch.float32, ...) are pickled as torch.<name>
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed["torch", name] = getattr(torch, name)
    return allowed


_METADATA_CLASSES = _metadata_classes()


class _MetadataUnpickler(pickle.Unpickler):
    """DCP pickles its index; read it allowing only the exact classes such an index holds."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _METADATA_CLASSES:
            raise UnsafeCheckpoint(
                f"checkpoint index asks for {module}.{name}, which a DCP index never holds: "
                f"refused, nothing was loaded"
            )
        return _METADATA_CLASSES[module, name]


class _SafeReader(FileSystemReader):
    """DCP's reader, with its index read by ``_MetadataUnpickler``; DCP itself reads tensors with
    ``torch.load(weights_only=True)``."""

    def read_metadata(self, *args, **kwargs):
        with self.fs.create_stream(self._get_metadata_path(kwargs.get("rank")), "rb") as f:
            index = _MetadataUnpickler(f).load()
        if getattr(index, "storage_meta", None) is None:
            index.storage_meta = StorageMeta()
        index.storage_meta.load_id = self.load_id
        return index


class _SafePlanner(DefaultLoadPlanner):
    """DCP's load planner, except that non-tensor values (optimizer settings such as lr and betas) are
    read with ``torch.load(weights_only=True)``: DCP's own planner unpickles them without limits."""

    def load_bytes(self, read_item, value):
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpoint(
                f"checkpoint value {read_item.dest_index.fqn} needs code to load "
                f"({_what_it_asked(e)}): refused"
            ) from None
        value = io.BytesIO()
        torch.save(loaded, value)  # plain data now, re-serialised for DCP's own (unrestricted) unpickling
        value.seek(0)
        super().load_bytes(read_item, value)


def _what_it_asked(e: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only refusal that names the global the file asked for."""
    lines = [x for x in str(e).splitlines() if x.strip()]
    return next((x for x in lines if "GLOBAL" in x or "global" in x), lines[0] if lines else type(e).__name__)


def _dcp_load(state: dict, ckpt_dcp: Path, no_dist: bool) -> None:
    """``dcp.load`` through the safe reader and planner; a refusal surfaces as ``UnsafeCheckpoint``
    (DCP wraps every rank's error in its own exception)."""
    _read_metadata(
        ckpt_dcp
    )  # a crafted index is refused here: inside dcp.load its error turns into fallbacks
    try:
        with _one_process_is_fine():
            dcp.load(state, storage_reader=_SafeReader(ckpt_dcp), planner=_SafePlanner(), no_dist=no_dist)
    except CheckpointException as e:
        refused = [
            f for f in getattr(e, "failures", {}).values() if isinstance(_root_cause(f), UnsafeCheckpoint)
        ]
        if refused:
            raise UnsafeCheckpoint(f"{ckpt_dcp}: {_root_cause(refused[0])}") from None
        raise


def _root_cause(failure) -> BaseException:
    """DCP keeps each rank's failure as (exception, traceback) or the exception itself."""
    return failure[0] if isinstance(failure, tuple) else failure


def _read_metadata(ckpt_dcp: Path):
    return _SafeReader(ckpt_dcp).read_metadata()


def resume(model, optimizer, scheduler, ckpt: str | os.PathLike, scaler=None) -> int:
    """Restore everything a run needs to continue bit for bit; returns the step to start from.
    Every rank calls it; the checkpoint may come from any world size and strategy."""
    ckpt = Path(ckpt)
    if not (ckpt / "dcp").is_dir() or not (ckpt / "state.pt").exists():
        raise FileNotFoundError(f"{ckpt} is not a complete checkpoint (dcp/ and state.pt)")
    target = _dcp_state(model, optimizer)
    saved = _read_metadata(ckpt / "dcp").state_dict_metadata.keys()
    # Parameters the optimizer had not stepped yet (LoRA in the projector-only stage 1) have no state in
    # the checkpoint; they go on without one, as in the run that was not interrupted.
    target["optim"]["state"] = {
        k: v for k, v in target["optim"]["state"].items() if f"optim.state.{k}.step" in saved
    }
    _dcp_load(target, ckpt / "dcp", no_dist=not _distributed())
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
    try:
        state = torch.load(ckpt / "state.pt", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(
            f"{ckpt / 'state.pt'} needs code to load ({_what_it_asked(e)}): refused"
        ) from None
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):  # fp16: the loss scale reached so far
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["step"]
