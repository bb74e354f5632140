"""Reading a checkpoint without ever running code from it.

DCP pickles its index (``.metadata``); ``_MetadataUnpickler`` reads it allowing only the exact classes
such an index holds (nothing is looked up by name, so a dotted name cannot reach ``os.system`` through a
module attribute). DCP's own load planner unpickles non-tensor values (optimizer settings) without limits;
``_SafePlanner`` reads them with ``torch.load(weights_only=True)``. Tensors are read by DCP with
``weights_only=True`` already. Whatever asks for more is refused with ``UnsafeCheckpoint``, naming it.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader, filesystem, metadata
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.serialization import _get_layout


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
                f"({what_it_asked(e)}): refused"
            ) from None
        value = io.BytesIO()
        torch.save(loaded, value)  # plain data now, re-serialised for DCP's own (unrestricted) unpickling
        value.seek(0)
        super().load_bytes(read_item, value)


@contextmanager
def one_process_is_fine():
    """DCP warns on every call without a process group; a one-process run is meant to be one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def load_plain(path: Path):
    """``torch.load`` of a file that may hold tensors and plain values only (a checkpoint's state.pt)."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"{path} needs code to load ({what_it_asked(e)}): refused") from None


def what_it_asked(e: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only refusal that names the global the file asked for."""
    lines = [x for x in str(e).splitlines() if x.strip()]
    return next((x for x in lines if "GLOBAL" in x or "global" in x), lines[0] if lines else type(e).__name__)


def dcp_load(state: dict, ckpt_dcp: Path, no_dist: bool) -> None:
    """``dcp.load`` through the safe reader and planner; a refusal surfaces as ``UnsafeCheckpoint``
    (DCP wraps every rank's error in its own exception)."""
    read_metadata(ckpt_dcp)  # a crafted index is refused here: inside dcp.load its error turns into fallbacks
    try:
        with one_process_is_fine():
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


def read_metadata(ckpt_dcp: Path):
    return _SafeReader(ckpt_dcp).read_metadata()
