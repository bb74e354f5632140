"""Wrappers applied to a CaptionVLM from outside, as torchtitan's ``parallelize_*``, and
``parallelize``: the one function that knows the strategies, returning what the training loop needs
to know of the wrapped model (``Parallelized``). The model code knows nothing of ranks.

Every parameter either stage trains (projector + LoRA) requires gradients from the start, and the
model is wrapped once, before the optimizer is built (FSDP2 replaces parameters with their shards);
stage 1 then discards the LoRA gradients instead of changing what the wrapper sees.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
import torch.distributed as dist
from accelerate import dispatch_model
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from lib.parallel.dist import Dist
from lib.parallel.pipeline import Pipeline, base_lm, stage_layers, stage_of
from lib.settings import STRATEGIES
from lib.training.checkpoint import trainable_state
from lib.training.loop import Parallelized
from lib.training.metrics import flops_per_token


def apply_ddp(model: nn.Module, d: Dist) -> DistributedDataParallel:
    """DistributedDataParallel over the trained parameters only (LoRA + projector): DDP registers only
    parameters with requires_grad, so the frozen encoder and LM base weights are never all-reduced."""
    # buffers (rotary tables, CLIP's) are the same on every rank: no broadcast before each forward
    return DistributedDataParallel(
        model, device_ids=[d.device.index] if d.device.type == "cuda" else None, forward_sync_buffers=False
    )


def lm_blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of the (peft-wrapped) causal LM."""
    return list(base_lm(model).model.layers)


def apply_compile(model: nn.Module) -> nn.Module:
    """torch.compile each LM block in place (torchtitan's per-block compile: blocks are compiled
    before they are sharded, as FSDP2 expects, and the rest of the model stays eager)."""
    for block in lm_blocks(model):
        block.compile()
    return model


def apply_fsdp(
    model: nn.Module, d: Dist, mixed_precision: bool | None = None, cpu_offload: bool = False
) -> nn.Module:
    """FSDP2 (``fully_shard``): each LM block is one unit (its frozen base weights and LoRA adapters are
    sharded together; FSDP2 keeps per-parameter requires_grad), the rest (embeddings, head, projector)
    is the root unit. bf16 compute with fp32 gradient reduction on GPU unless told otherwise."""
    if isinstance(model, FSDPModule):
        return model
    if mixed_precision is None:
        mixed_precision = d.device.type == "cuda"
    kwargs = {}
    if mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for block in lm_blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def layer_split_map(model: nn.Module, devices: list[str]) -> dict[str, str]:
    """A device map (module name -> device) that cuts the LM blocks into contiguous runs, one per
    device, as ``from_pretrained(device_map=...)`` does: the first device also holds the encoder,
    projector, embeddings and rotary tables, the last the final norm and LM head."""
    lm = base_lm(model)
    prefix = next(n for n, m in model.named_modules() if m is lm)
    first, last = devices[0], devices[-1]
    dmap = {name: first for name in ("projector", "encoder") if getattr(model, name, None) is not None}
    dmap |= {
        f"{prefix}.model.embed_tokens": first,
        f"{prefix}.model.rotary_emb": first,
        f"{prefix}.model.norm": last,
        f"{prefix}.lm_head": last,
    }
    n = len(lm.model.layers)
    for s, dev in enumerate(devices):
        dmap |= {f"{prefix}.model.layers.{i}": dev for i in stage_layers(n, len(devices), s)}
    return dmap


def apply_layer_split(model: nn.Module, devices: list[str]) -> nn.Module:
    """Naive model parallelism in one process (the seed's set-up): each device holds a run of LM blocks
    and accelerate's hooks move activations from one device to the next, so one device computes at a
    time. The pipeline strategy keeps them all busy with micro-batches instead."""
    log = logging.getLogger("accelerate.big_modeling")
    level = log.level
    if set(devices) == {
        "cpu"
    }:  # it warns of CPU offload whenever a map says "cpu"; with a CPU main device nothing is offloaded
        log.setLevel(logging.ERROR)
    try:
        # force_hooks: the hooks are placed even when every block lands on one device (CPU here), so
        # the same code path runs on a laptop and on a multi-GPU node
        return dispatch_model(
            model, layer_split_map(model, devices), main_device=devices[0], force_hooks=True
        )
    finally:
        log.setLevel(level)


def split_devices(spec: str | None, device: torch.device) -> list[str]:
    """``--devices cuda:0,cuda:1``; default: every visible GPU, or two CPU parts where there is none."""
    if spec:
        return [s.strip() for s in spec.split(",") if s.strip()]
    if device.type == "cuda":
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu", "cpu"]


def parallelize(
    vlm: nn.Module,
    strategy: str,
    d: Dist,
    *,
    schedule: str = "1f1b",
    microbatches: int = 4,
    devices: str | None = None,
    cpu_offload: bool = False,
    compile_blocks: bool = False,
) -> Parallelized:
    """Wrap, shard, cut or spread ``vlm`` for ``strategy`` on this rank (its LM blocks compiled first when
    asked); what the loop needs to know of it."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r} ({', '.join(STRATEGIES)})")
    if strategy in ("single", "layers") and d.world > 1:
        raise ValueError(
            f"strategy {strategy!r} runs in one process; use ddp, fsdp or pipeline under torchrun"
        )
    fpt = flops_per_token(vlm)  # of the whole model, before a pipeline cuts it
    if compile_blocks:
        apply_compile(vlm)
    if strategy == "layers":
        split = split_devices(devices, d.device)
        return Parallelized(
            apply_layer_split(vlm, split),
            devices=len(set(split)),
            flops_per_token=fpt,
            name=strategy,
            settings={"devices": split},
        )
    if strategy == "ddp":
        ddp = apply_ddp(vlm, d)
        return Parallelized(
            vlm,
            module=ddp,
            replicas=d.world,
            devices=d.world,
            flops_per_token=fpt,
            name=strategy,
            grad_sync=lambda last: nullcontext() if last else ddp.no_sync(),
        )
    if strategy == "fsdp":
        fsdp = apply_fsdp(vlm, d, cpu_offload=cpu_offload)

        def sync(last: bool):
            fsdp.set_requires_gradient_sync(last)
            return nullcontext()

        return Parallelized(
            fsdp,
            replicas=d.world,
            devices=d.world,
            whole=False,
            grad_sync=sync,
            flops_per_token=fpt,
            name=strategy,
        )
    if strategy == "pipeline":
        pipe = Pipeline(vlm, d, schedule, microbatches)
        return Parallelized(
            vlm,
            module=pipe,
            step=pipe.step,
            microbatches=microbatches,
            devices=d.world,
            whole=False,
            norm_across_ranks=True,
            flops_per_token=fpt,
            name=f"pipeline-{schedule}",
            settings={"schedule": schedule, "microbatches": microbatches},
        )
    return Parallelized(vlm, flops_per_token=fpt)


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


def full_trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters (projector + LoRA) as full CPU tensors by name. Under FSDP or a pipeline
    every rank must call it (shards are all-gathered, stages gathered); the result is complete on rank 0."""
    if stage_of(model) is not None:  # each stage's parameters keep their full names
        parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(trainable_state(model), parts, dst=0)
        return {k: v for part in parts or [] for k, v in part.items()}
    if not is_sharded(model):
        return trainable_state(model)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=opts)
