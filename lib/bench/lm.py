"""Training throughput of the full-size captioner on one device: BioMistral-7B's architecture (Mistral,
32 blocks, hidden 4096, grouped-query attention) with random weights, LoRA r=16 on q/v, the projector,
and BiomedCLIP-sized image features as input, through the one training loop (AMP, gradient
checkpointing, MFU). No weights are downloaded: throughput and memory depend on shapes, not values.

Reports tokens/s, samples/s, MFU against the device's dense bf16 peak, peak memory, and the hours the
seed's run (47.5K samples x 3 epochs, 511.7 h on their hardware) would take at this rate.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import torch
from transformers import MistralConfig

from lib.models.language import LoraSpec, n_elements, random_lm
from lib.models.vlm import CaptionVLM, Projector
from lib.parallel.apply import apply_compile
from lib.settings import LMBench, TinyLM, TrainConfig
from lib.training.data import Order
from lib.training.loop import train

# BioMistral-7B's config.json (Mistral-7B-Instruct-v0.1 architecture)
BIOMISTRAL_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "sliding_window": None,
}
TINY = {
    "vocab_size": 400,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "sliding_window": None,
}
# the embedded default's tiny Mistral (settings.TinyLM): big enough on a CPU that compute, not overhead,
# sets the step time
DEFAULT = {**asdict(TinyLM()), "sliding_window": None}
SIZES = {"biomistral-7b": BIOMISTRAL_7B, "default": DEFAULT, "tiny": TINY}
SEED_STUDY_RUN = {"samples": 47_500, "epochs": 3, "hours": 511.7}  # the seed study's model-parallel run


def summary(metrics: dict) -> str:
    mfu = f", MFU {metrics['mfu']:.1%}" if metrics["mfu"] is not None else ""
    return (
        f"{metrics['tokens_per_s']:.0f} tokens/s, {metrics['samples_per_s']:.1f} samples/s{mfu}; the seed "
        f"study's 47.5K x 3-epoch run: {metrics['seed_run_projected_hours']:.2f} h"
    )


class RandomCaptions:
    """Stand-in for CaptionData with the same interface: captions of random tokens and random image
    features, a pure function of the row index. Row i's caption is ``lengths[i]`` tokens (<s> ... </s>),
    right-padded to ``width`` (the length limit: padding to the maximum) or, without one, to the
    batch's longest, as ``CaptionData`` pads; only the real tokens count in the attention mask."""

    def __init__(self, lengths: np.ndarray, feature_dim: int, vocab: int, bos: int, eos: int, width=None):
        self.lengths, self.dim, self.vocab, self.bos, self.eos = (
            np.asarray(lengths),
            feature_dim,
            vocab,
            bos,
            eos,
        )
        self.width = width
        self.max_tokens = int(width or self.lengths.max())

    def __len__(self) -> int:
        return len(self.lengths)

    def token_lengths(self) -> np.ndarray:
        return self.lengths

    def longest(self) -> int:
        return self.max_tokens

    def batch(self, indices, width: int | None = None) -> dict:
        rng = np.random.default_rng([int(i) for i in indices])
        lengths = self.lengths[list(indices)]
        width = width or self.width or int(lengths.max())
        ids = torch.from_numpy(rng.integers(3, self.vocab, (len(indices), width)))
        mask = torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]
        ids[:, 0] = self.bos
        ids[torch.arange(len(indices)), torch.from_numpy(lengths) - 1] = self.eos
        ids[~mask] = 0  # Mistral's pad id
        feats = torch.from_numpy(rng.standard_normal((len(indices), 1, self.dim), dtype=np.float32)).half()
        return {
            "features": feats,
            "input_ids": ids,
            "attention_mask": mask.long(),
            "ids": [str(i) for i in indices],
        }


def row_lengths(cfg: LMBench, n: int) -> tuple[np.ndarray, dict | None]:
    """(caption length of each of the n rows, the length distribution's summary or None).

    Without ``cfg.lengths`` every caption is ``caption_tokens`` long. With it, lengths are drawn (seeded)
    from that folder's training captions counted in Mistral's tokens, cut at ``caption_tokens``."""
    if not cfg.lengths:
        return np.full(n, cfg.caption_tokens), None
    from lib.config import resolve
    from lib.data.caption_tokens import length_summary, split_caption_tokens

    counts, skipped = split_caption_tokens(resolve(cfg.lengths))
    if not len(counts):
        raise ValueError(f"{cfg.lengths}: no readable training captions to take lengths from")
    drawn = np.minimum(np.random.default_rng(cfg.seed).choice(counts, n), cfg.caption_tokens)
    return drawn, {
        **length_summary(counts, cfg.caption_tokens),
        "skipped_lines": skipped,
        "source": cfg.lengths,
    }


def measure_lm(cfg: LMBench, device: str = "cuda", progress: bool = True) -> tuple[dict, dict]:
    if cfg.size not in SIZES:
        raise ValueError(f"unknown size {cfg.size!r} ({', '.join(SIZES)})")
    torch.manual_seed(cfg.seed)
    arch = MistralConfig(**SIZES[cfg.size], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    dtype = torch.bfloat16 if cfg.amp == "bf16" and torch.device(device).type == "cuda" else torch.float32
    if cfg.quant and torch.device(device).type != "cuda":
        raise ValueError(f"--quant {cfg.quant} needs a CUDA device (bitsandbytes), got {device!r}")
    lm = random_lm(arch, LoraSpec(), dtype, device, cfg.quant)
    projector = Projector(
        cfg.feature_dim, arch.hidden_size, hidden=arch.hidden_size, n_tokens=cfg.visual_tokens
    )
    special = SimpleNamespace(
        bos_token_id=1, eos_token_id=2, pad_token_id=0
    )  # Mistral's; no tokenizer needed
    vlm = CaptionVLM(projector.to(device), lm, special)
    lengths, distribution = row_lengths(cfg, cfg.batch * (cfg.steps + 1))
    width = cfg.caption_tokens if cfg.padding == "max" else None
    data = RandomCaptions(lengths, cfg.feature_dim, arch.vocab_size, 1, 2, width=width)
    # the loop's batches (grouped: by the training path's length grouping): how much of each is padding
    grouped = cfg.padding == "grouped"
    order = Order(len(lengths), cfg.batch, cfg.seed, lengths=lengths if grouped else None)
    batches = [lengths[order.indices(step, 0, 0)] for step in range(cfg.steps)]
    real_share = sum(b.sum() for b in batches) / sum(len(b) * (width or b.max()) for b in batches)
    tcfg = TrainConfig(
        steps=cfg.steps,
        align_steps=0,
        batch_size=cfg.batch,
        lr=cfg.lr,
        warmup=1,
        amp=cfg.amp,
        grad_ckpt=cfg.grad_ckpt,
        group_by_length=grouped,
        fused_adam=cfg.fused_adam,
        compile=cfg.compile,
        seed=cfg.seed,
        ckpt_every=10**9,
        log_every=10**9,
    )
    if cfg.compile:
        apply_compile(vlm)
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(vlm, data, tcfg, tmp, device=device, progress=progress)
    n_params = sum(n_elements(p) for p in vlm.parameters())
    trained = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    hours = SEED_STUDY_RUN["samples"] * SEED_STUDY_RUN["epochs"] / summary["samples_per_s"] / 3600
    metrics = {
        "tokens_per_s": summary["tokens_per_s"],
        "samples_per_s": summary["samples_per_s"],
        "mfu": summary["mfu"],
        "step_s": summary["step_s"],
        "timed_steps": summary["timed_steps"],
        "peak_memory_bytes": summary["peak_memory_bytes"],  # training steps, before the end-of-run save
        "checkpoint_peak_memory_bytes": summary["checkpoint_peak_memory_bytes"],
        "flops_per_token": summary["flops_per_token"],
        "parameters": n_params,
        "trained_parameters": trained,
        "final_loss": summary["losses"][-1],
        "seed_run_projected_hours": hours,
        "seed_run": SEED_STUDY_RUN,
        "seed_run_speedup": SEED_STUDY_RUN["hours"] / hours,
        "real_token_share": float(real_share),  # of the caption positions the steps computed
        "caption_lengths": distribution,
    }
    config = {
        "bench": asdict(cfg),
        "architecture": SIZES[cfg.size],
        "device": device,
        "weights": "random (architecture only)",
        "param_dtype": cfg.quant or str(dtype).removeprefix("torch."),
        "workload": "projector+LoRA steps on image features; tokens/s counts real caption tokens, never "
        "padding; MFU counts every real token the LM processes (visual and caption) at 4N + 2N_trained "
        "FLOPs each",
    }
    return metrics, config
