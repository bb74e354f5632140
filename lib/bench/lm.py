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
from lib.settings import LMBench, TrainConfig
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
SIZES = {"biomistral-7b": BIOMISTRAL_7B, "tiny": TINY}
SEED_STUDY_RUN = {"samples": 47_500, "epochs": 3, "hours": 511.7}  # the seed study's model-parallel run


def summary(metrics: dict) -> str:
    mfu = f", MFU {metrics['mfu']:.1%}" if metrics["mfu"] is not None else ""
    return (
        f"{metrics['tokens_per_s']:.0f} tokens/s, {metrics['samples_per_s']:.1f} samples/s{mfu}; the seed "
        f"study's 47.5K x 3-epoch run: {metrics['seed_run_projected_hours']:.2f} h"
    )


class RandomCaptions:
    """Stand-in for CaptionData with the same interface: fixed-length captions of random tokens and
    random image features, a pure function of the row index."""

    def __init__(self, n: int, caption_tokens: int, feature_dim: int, vocab: int, bos: int, eos: int):
        self.n, self.len, self.dim, self.vocab, self.bos, self.eos = (
            n,
            caption_tokens,
            feature_dim,
            vocab,
            bos,
            eos,
        )
        self.max_tokens = caption_tokens

    def __len__(self) -> int:
        return self.n

    def longest(self) -> int:
        return self.len

    def batch(self, indices, width: int | None = None) -> dict:
        rng = np.random.default_rng([int(i) for i in indices])
        ids = torch.from_numpy(rng.integers(3, self.vocab, (len(indices), self.len)))
        ids[:, 0], ids[:, -1] = self.bos, self.eos
        feats = torch.from_numpy(rng.standard_normal((len(indices), 1, self.dim), dtype=np.float32)).half()
        return {
            "features": feats,
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "ids": [str(i) for i in indices],
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
    data = RandomCaptions(
        cfg.batch * (cfg.steps + 1), cfg.caption_tokens, cfg.feature_dim, arch.vocab_size, 1, 2
    )
    tcfg = TrainConfig(
        steps=cfg.steps,
        align_steps=0,
        batch_size=cfg.batch,
        lr=cfg.lr,
        warmup=1,
        amp=cfg.amp,
        grad_ckpt=cfg.grad_ckpt,
        seed=cfg.seed,
        ckpt_every=10**9,
        log_every=10**9,
    )
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
    }
    config = {
        "bench": asdict(cfg),
        "architecture": SIZES[cfg.size],
        "device": device,
        "weights": "random (architecture only)",
        "param_dtype": cfg.quant or str(dtype).removeprefix("torch."),
        "workload": "projector+LoRA steps on image features; tokens/s and MFU count caption tokens only "
        "(the visual tokens add visual_tokens/caption_tokens more compute, uncounted)",
    }
    return metrics, config
