"""Wrappers applied to a CaptionVLM from outside, as torchtitan's ``parallelize_*``.

The loop marks every parameter either stage trains (projector + LoRA) as requiring gradients and
wraps the model once, before building the optimizer (FSDP2 replaces parameters with their shards);
stage 1 then discards the LoRA gradients instead of changing what the wrapper sees.
"""

from __future__ import annotations

import torch
from torch import nn

from lib.parallel.dist import Dist
from lib.parallel.pipeline import apply_pipeline, base_lm, stage_layers
from lib.training.checkpoint import is_sharded, trainable_state


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
    return list(base_lm(model).model.layers)


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


def layer_split_map(model: nn.Module, devices: list[str]) -> dict[str, str]:
    """A device map (module name -> device) that cuts the LM blocks into contiguous runs, one per
    device, as ``from_pretrained(device_map=...)`` does: the first device also holds the encoder,
    projector, embeddings and rotary tables, the last the final norm and LM head."""
    lm = base_lm(model)
    prefix = next(n for n, m in model.named_modules() if m is lm)
    first, last = devices[0], devices[-1]
    dmap = {name: first for name in ("projector", "encoder") if getattr(model, name, None) is not None}
    dmap |= {f"{prefix}.model.embed_tokens": first, f"{prefix}.model.rotary_emb": first,
             f"{prefix}.model.norm": last, f"{prefix}.lm_head": last}
    n = len(lm.model.layers)
    for s, dev in enumerate(devices):
        dmap |= {f"{prefix}.model.layers.{i}": dev for i in stage_layers(n, len(devices), s)}
    return dmap


def apply_layer_split(model: nn.Module, devices: list[str]) -> nn.Module:
    """Naive model parallelism in one process (the seed's set-up): each device holds a run of LM blocks
    and accelerate's hooks move activations from one device to the next, so one device computes at a
    time. The pipeline strategy keeps them all busy with micro-batches instead."""
    import logging

    from accelerate import dispatch_model

    core = getattr(model, "module", model)
    log = logging.getLogger("accelerate.big_modeling")
    level = log.level
    if set(devices) == {"cpu"}:  # it warns of CPU offload whenever a map says "cpu"; with a CPU main device nothing is offloaded
        log.setLevel(logging.ERROR)
    try:
        # force_hooks: the hooks are placed even when every block lands on one device (CPU here), so
        # the same code path runs on a laptop and on a multi-GPU node
        return dispatch_model(core, layer_split_map(core, devices), main_device=devices[0], force_hooks=True)
    finally:
        log.setLevel(level)


def split_devices(spec: str | None, device: torch.device) -> list[str]:
    """``--devices cuda:0,cuda:1``; default: every visible GPU, or two CPU parts where there is none."""
    if spec:
        return [s.strip() for s in spec.split(",") if s.strip()]
    if device.type == "cuda":
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu", "cpu"]


STRATEGIES = ("single", "ddp", "fsdp", "pipeline", "layers")


def parallelizer(strategy: str, d: Dist, cpu_offload: bool = False, schedule: str = "1f1b", microbatches: int = 4,
                 devices: list[str] | None = None):
    """The function the loop calls once to wrap the model for ``strategy`` (a pipeline returns the
    ``Pipeline`` the loop drives instead of a module)."""
    if strategy in ("single", "layers") and d.world > 1:
        raise ValueError(f"strategy {strategy!r} runs in one process; use ddp, fsdp or pipeline under torchrun")
    if strategy == "single":
        return lambda m: getattr(m, "module", m)
    if strategy == "layers":
        return lambda m: apply_layer_split(m, devices or split_devices(None, d.device))
    if strategy == "ddp":
        return lambda m: apply_ddp(m, d)
    if strategy == "fsdp":
        return lambda m: apply_fsdp(m, d, cpu_offload=cpu_offload)
    if strategy == "pipeline":
        return lambda m: apply_pipeline(m, d, schedule, microbatches)
    raise ValueError(f"unknown strategy {strategy!r} ({', '.join(STRATEGIES)})")


def full_trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters (projector + LoRA) as full CPU tensors by name. Under FSDP or a pipeline
    every rank must call it (shards are all-gathered, stages gathered); the result is complete on rank 0."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    core = getattr(model, "module", model)
    if getattr(core, "pipeline_stage", None) is not None:  # each stage's parameters keep their full names
        parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(trainable_state(core), parts, dst=0)
        return {k: v for part in parts or [] for k, v in part.items()}
    if not is_sharded(core):
        return trainable_state(core)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(core, options=opts)
