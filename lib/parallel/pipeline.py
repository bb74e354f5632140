"""Pipeline parallelism with ``torch.distributed.pipelining``: each rank holds one stage of the
captioner (a contiguous run of LM blocks) and the schedule (GPipe or 1F1B) streams micro-batches
through the stages, sending activations forward and their gradients back point to point.

Stage 0: [encoder] -> projector + token embeddings -> its blocks. Middle stages: their blocks.
Last stage: its blocks -> final norm -> LM head; the loss is computed there.

Each rank prunes the model it built to its own stage, in place, so every parameter keeps its name
(``lm.base_model.model.model.layers.5...``): checkpoints written by a pipeline job load into any
other strategy and back. Pipelining needs one activation shape for every step (the stages size
their receive buffers once), so batches are padded to the longest caption in the training split;
throughput counts real tokens only.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from weakref import WeakKeyDictionary

import torch
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from transformers.masking_utils import create_causal_mask

from lib.models.vlm import caption_labels, caption_loss
from lib.parallel.dist import Dist

_SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}  # by the names lib.settings.SCHEDULES gives

_STAGES: WeakKeyDictionary[nn.Module, tuple[int, int]] = WeakKeyDictionary()


def stage_of(model: nn.Module) -> tuple[int, int] | None:
    """(stage, stages) when ``model`` was cut to one pipeline stage, else None: the one place that knows."""
    return _STAGES.get(model)


def base_lm(model: nn.Module) -> nn.Module:
    """The transformers causal LM under peft's wrapper."""
    return model.lm.get_base_model() if hasattr(model.lm, "get_base_model") else model.lm


def stage_layers(n_layers: int, n_stages: int, stage: int) -> range:
    """Blocks of ``stage`` when ``n_layers`` are cut into ``n_stages`` contiguous runs as even as can be
    (the first stages take one more when it does not divide; the last also holds the LM head)."""
    if not 0 < n_stages <= n_layers:
        raise ValueError(f"cannot cut {n_layers} LM blocks into {n_stages} pipeline stages")
    per, extra = divmod(n_layers, n_stages)
    lo = stage * per + min(stage, extra)
    return range(lo, lo + per + (stage < extra))


class Stage(nn.Module):
    """One stage's forward. It holds the captioner's own submodules under the captioner's attribute
    names (``projector``, ``encoder``, ``lm``), so its parameters are named as the captioner's are."""

    def __init__(self, vlm: nn.Module, first: bool, last: bool):
        super().__init__()
        self.projector, self.encoder, self.lm = vlm.projector, vlm.encoder, vlm.lm
        self.first, self.last = first, last

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """First stage: (features or pixels [b, ...], input_ids [b, L]) -> hidden [b, V+L, H];
        later stages: hidden -> hidden, or logits [b, V+L, vocab] on the last."""
        lm = base_lm(self)
        if self.first:
            feats = self.encoder(x) if self.encoder is not None else x
            embed = lm.model.embed_tokens
            x = torch.cat([self.projector(feats).to(embed.weight.dtype), embed(input_ids)], dim=1)
        pos = torch.arange(x.shape[1], device=x.device)[None]
        # Right padding: padded positions come after every real token, so the causal mask alone gives
        # real tokens the same attention as the padding mask would (pads carry no loss).
        mask = create_causal_mask(
            config=lm.config, inputs_embeds=x, attention_mask=None, past_key_values=None, position_ids=pos
        )
        rope = lm.model.rotary_emb(x, position_ids=pos)
        for block in lm.model.layers.values():
            x = block(x, attention_mask=mask, position_ids=pos, position_embeddings=rope)
        if self.last:
            x = lm.lm_head(lm.model.norm(x))
        return x


def prune_to_stage(vlm: nn.Module, stage: int, n_stages: int) -> Stage:
    """Drop from ``vlm`` (in place) everything stage ``stage`` does not run and return its Stage.
    The blocks kept move into a ModuleDict keyed by their original index."""
    lm = base_lm(vlm)
    layers = lm.model.layers
    mine = stage_layers(len(layers), n_stages, stage)
    lm.model.layers = nn.ModuleDict({str(i): layers[i] for i in mine})
    first, last = stage == 0, stage == n_stages - 1
    if not first:
        vlm.projector, vlm.encoder, lm.model.embed_tokens = None, None, None
    if not last:
        lm.model.norm, lm.lm_head = None, None
    _STAGES[vlm] = (stage, n_stages)
    return Stage(vlm, first, last)


class Pipeline:
    """What the training loop drives instead of a module: ``step(batch)`` runs forward and backward of
    one whole batch through all stages; the loss comes back on the last stage (None elsewhere)."""

    def __init__(self, vlm: nn.Module, d: Dist, schedule: str = "1f1b", microbatches: int = 4):
        if schedule not in _SCHEDULES:
            raise ValueError(f"unknown pipeline schedule {schedule!r} ({', '.join(_SCHEDULES)})")
        if d.world < 2:
            raise ValueError("a pipeline needs at least 2 ranks: launch it with torchrun --nproc_per_node=N")
        self.n_visual = vlm.projector.n_tokens
        self.stage = prune_to_stage(vlm, d.rank, d.world)
        self.module, self.microbatches, self.device = vlm, microbatches, d.device
        self.first, self.last = self.stage.first, self.stage.last
        runner = PipelineStage(self.stage, d.rank, d.world, d.device)  # sends, receives, runs micro-batches
        # scale_grads: gradients are the mean over micro-batches, as gradient accumulation gives
        self.schedule = _SCHEDULES[schedule](
            runner,
            n_microbatches=microbatches,
            loss_fn=partial(caption_loss, label_smoothing=vlm.label_smoothing),
            scale_grads=True,
        )

    def train(self, mode: bool = True) -> Pipeline:
        self.module.train(mode)
        return self

    def step(self, batch: dict, dtype: torch.dtype | None = None) -> float | None:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if len(ids) % self.microbatches:
            raise ValueError(f"batch of {len(ids)} does not split into {self.microbatches} micro-batches")
        x = batch["features"] if "features" in batch else batch["pixels"]
        labels = caption_labels(ids, mask, self.n_visual)
        losses: list[torch.Tensor] = []
        args = (x, ids) if self.first else ()
        kwargs = {"target": labels, "losses": losses} if self.last else {}
        with torch.autocast(self.device.type, dtype=dtype) if dtype else nullcontext():
            self.schedule.step(*args, **kwargs)
        return float(torch.stack(losses).detach().mean()) if self.last else None
