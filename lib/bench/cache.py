"""What the feature cache buys: training steps on cached features against re-encoding pixels every step.

Same model, data order and step count; only where the image features come from differs. Reports
samples/s for each, the projected time of one epoch over the training split, and the one-off cost of
building the cache (encoding every image once), so the break-even point is on record too.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from lib.jobs.artefacts import Artefacts
from lib.models.build import build, local_spec
from lib.models.feature_cache import encode
from lib.training.data import CaptionData
from lib.training.loop import train


def measure_cache(
    art: Artefacts, steps: int = 20, device: str = "cpu", progress: bool = True
) -> tuple[dict, dict]:
    """(metrics, config): the profile's recipe for ``steps`` steps from cached features and from pixels."""
    spec = art.spec
    cfg = replace(art.settings.train, steps=steps, ckpt_every=10**9, align_steps=0)
    metrics = {}
    for source, root in (("features", art.features), ("pixels", art.preprocessed)):
        torch.manual_seed(cfg.seed)
        vlm, tok = build(spec, with_encoder=source == "pixels", device=device)
        data = CaptionData(root, "train", tok, source=source)
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(vlm, data, cfg, tmp, device=device, progress=progress)
        metrics[source] = {
            "samples_per_s": summary["samples_per_s"],
            "tokens_per_s": summary["tokens_per_s"],
            "epoch_s": len(data) / summary["samples_per_s"],
            "train_pairs": len(data),
            "peak_memory_bytes": summary["peak_memory_bytes"],
        }
    metrics["speedup"] = metrics["features"]["samples_per_s"] / metrics["pixels"]["samples_per_s"]
    with tempfile.TemporaryDirectory() as tmp:  # every split, as `encode` does
        t0 = time.perf_counter()
        encode(
            art.preprocessed,
            Path(tmp),
            local_spec(spec.encoder),
            output=spec.encoder_output,
            device=device,
            progress=progress,
        )
        metrics["encode_all_s"] = time.perf_counter() - t0
    config = {
        "train": asdict(cfg),
        "model": asdict(spec),
        "steps": steps,
        "device": device,
        "workload": "projector+LoRA steps, cached features vs frozen encoder on pixels every step",
    }
    return metrics, config
