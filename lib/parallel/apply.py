"""Wrappers applied to a CaptionVLM from outside, as torchtitan's ``parallelize_*``.

The loop marks every parameter either stage trains (projector + LoRA) as requiring gradients and
wraps the model once, before building the optimizer (FSDP2 replaces parameters with their shards);
stage 1 then discards the LoRA gradients instead of changing what the wrapper sees.
"""

from __future__ import annotations

import torch
from torch import nn

from lib.parallel.dist import Dist
from lib.training.checkpoint import is_sharded


def apply_ddp(model: nn.Module, d: Dist) -> nn.Module:
    """DistributedDataParallel over the trained parameters only (LoRA + projector): DDP registers only
    parameters with requires_grad, so the frozen encoder and LM base weights are never all-reduced."""
    from torch.nn.parallel import DistributedDataParallel

    core = getattr(model, "module", model)
    # buffers (rotary tables, CLIP's) are the same on every rank: no broadcast before each forward
    return DistributedDataParallel(core, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                                   forward_sync_buffers=False)


def lm_blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of the (peft-wrapped) causal LM."""
    lm = model.lm.get_base_model() if hasattr(model.lm, "get_base_model") else model.lm
    return list(lm.model.layers)


def apply_fsdp(model: nn.Module, d: Dist, mixed_precision: bool | None = None, cpu_offload: bool = False) -> nn.Module:
    """FSDP2 (``fully_shard``): each LM block is one unit (its frozen base weights and LoRA adapters are
    sharded together; FSDP2 keeps per-parameter requires_grad), the rest (embeddings, head, projector)
    is the root unit. bf16 compute with fp32 gradient reduction on GPU unless told otherwise."""
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

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


def parallelizer(strategy: str, d: Dist, cpu_offload: bool = False):
    """The function the loop calls once to wrap the model for ``strategy``."""
    if strategy == "single":
        if d.world > 1:
            raise ValueError("strategy 'single' runs in one process; use ddp or fsdp under torchrun")
        return lambda m: getattr(m, "module", m)
    if strategy == "ddp":
        return lambda m: apply_ddp(m, d)
    if strategy == "fsdp":
        return lambda m: apply_fsdp(m, d, cpu_offload=cpu_offload)
    raise ValueError(f"unknown strategy {strategy!r} (single, ddp, fsdp)")


def full_trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters (projector + LoRA) as full CPU tensors by name. Under FSDP every rank must
    call it (the shards are all-gathered); the result is complete on rank 0."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    core = getattr(model, "module", model)
    if not is_sharded(core):
        return {n: p.detach().cpu().clone() for n, p in core.named_parameters()
                if n.startswith("projector.") or "lora_" in n}
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(core, options=opts)
