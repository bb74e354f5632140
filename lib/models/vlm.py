"""Projector and the captioner that joins image features to the language model (LLaVA-style prefix).

Input to the LM: [visual tokens from the projector] [<s> caption </s>]; the loss covers the caption
only. Features come from the feature cache (``lib.models.encode``) or, when an encoder is given,
from pixels on the fly: the model is the same either way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Module):
    """Encoder features [B, T, in_dim] -> n_tokens visual tokens [B, n_tokens, out_dim].

    A pooled embedding (T=1) is expanded into n_tokens; patch tokens (T>n_tokens) are average-pooled
    down to n_tokens first (over the patch grid: ``pool_tokens``). Two layers with GELU, as LLaVA-1.5's
    mlp2x_gelu.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512, n_tokens: int = 4, pooled: bool = True):
        super().__init__()
        self.n_tokens, self.out_dim = n_tokens, out_dim
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        # pooled input only: every parameter must get a gradient (DDP's reducer waits for all of them)
        self.expand = nn.Linear(hidden, n_tokens * hidden) if pooled else None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(feats.to(self.fc1.weight.dtype)))
        if x.shape[1] == 1:
            if self.expand is None:
                raise ValueError("this projector was built for patch tokens, not a pooled embedding")
            x = F.gelu(self.expand(x[:, 0])).view(len(x), self.n_tokens, -1)
        elif x.shape[1] != self.n_tokens:
            x = pool_tokens(x, self.n_tokens)
        return self.fc2(x)


def pool_tokens(x: torch.Tensor, n: int) -> torch.Tensor:
    """Patch tokens [B, T, D] -> n tokens. When T and n are squares (a ViT's patch grid, a k x k
    output) the average is taken over the 2-D grid, so each token keeps a region of the image (where a
    lesion is, is what captions say); otherwise over the token sequence."""
    side, out = math.isqrt(x.shape[1]), math.isqrt(n)
    if side * side == x.shape[1] and out * out == n:
        grid = x.transpose(1, 2).reshape(len(x), x.shape[2], side, side)
        return F.adaptive_avg_pool2d(grid, out).flatten(2).transpose(1, 2)
    return F.adaptive_avg_pool1d(x.transpose(1, 2), n).transpose(1, 2)


def is_trained(name: str) -> bool:
    """The one rule of what the captioner trains: the projector and the LoRA adapters (by parameter name,
    so it holds for a wrapped, sharded or cut model too). Everything else is frozen."""
    return name.startswith("projector.") or "lora_" in name


def is_lora(name: str) -> bool:
    """Trained in stage 2 only (stage 1 aligns the projector with the LM frozen)."""
    return "lora_" in name


def caption_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy over caption tokens (labels -100 elsewhere), in fp32, as the LM's
    own loss is; ``label_smoothing`` spreads that share of each target over the vocabulary."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten(),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )


def caption_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, n_visual: int) -> torch.Tensor:
    """LM targets for [visual tokens][caption]: -100 (no loss) on the visual prefix and on padding."""
    prefix = input_ids.new_full((len(input_ids), n_visual), -100)
    return torch.cat([prefix, input_ids.masked_fill(attention_mask == 0, -100)], dim=1)


class CaptionVLM(nn.Module):
    def __init__(self, projector: Projector, lm, tokenizer, encoder: nn.Module | None = None):
        super().__init__()
        self.projector, self.lm, self.encoder = projector, lm, encoder
        self.bos, self.eos, self.pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        self.label_smoothing = 0.0  # the recipe's (TrainConfig.label_smoothing), set by the training job

    def features(self, batch: dict) -> torch.Tensor:
        if "features" in batch:
            return batch["features"]
        return self.encoder(batch["pixels"])  # no cache: encode every step (frozen, no grad)

    def prefix(self, feats: torch.Tensor) -> torch.Tensor:
        embed = self.lm.get_input_embeddings()
        return self.projector(feats).to(embed.weight.dtype)

    def forward(self, batch: dict) -> torch.Tensor:
        """Mean cross-entropy over caption tokens. batch: features|pixels, input_ids [B, L] (<s> ... </s>),
        attention_mask [B, L]."""
        vis = self.prefix(self.features(batch))
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = torch.cat([vis, self.lm.get_input_embeddings()(ids)], dim=1)
        full_mask = torch.cat([mask.new_ones(vis.shape[:2]), mask], dim=1)
        logits = self.lm(inputs_embeds=embeds, attention_mask=full_mask).logits
        return caption_loss(logits, caption_labels(ids, mask, vis.shape[1]), self.label_smoothing)

    @torch.no_grad()
    def generate(
        self,
        batch: dict,
        max_new_tokens: int = 48,
        num_beams: int = 1,
        use_cache: bool = True,
        no_repeat_ngram: int = 0,
        repetition_penalty: float = 1.0,
        top_p: float = 1.0,
    ) -> list[list[int]]:
        """Greedy (num_beams=1) or beam search, optionally with n-gram blocking and a repetition
        penalty: deterministic. ``top_p`` below 1 samples from the nucleus instead (seed torch first).
        Returns token ids after <s>, without the end token. use_cache=False recomputes every position
        at every step (the slow reference that generation throughput is measured against)."""
        vis = self.prefix(self.features(batch))
        bos = vis.new_full((len(vis), 1), self.bos, dtype=torch.long)
        embeds = torch.cat([vis, self.lm.get_input_embeddings()(bos)], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        sample = top_p < 1.0
        out = self.lm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=sample,
            top_p=top_p if sample else None,
            top_k=0 if sample else None,  # the nucleus alone decides (transformers' default top_k is 50)
            no_repeat_ngram_size=no_repeat_ngram or None,
            repetition_penalty=repetition_penalty if repetition_penalty != 1.0 else None,
            use_cache=use_cache,
            eos_token_id=self.eos,
            pad_token_id=self.pad,
        )
        captions = []
        for row in out.tolist():  # with inputs_embeds, generate returns only the new tokens
            captions.append(row[: row.index(self.eos)] if self.eos in row else row)
        return captions
