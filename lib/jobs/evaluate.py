"""``python -m lib evaluate``: a trained checkpoint's captions of one split, scored against the references
and against reference points on the same split, with its gallery and figures; a results file."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from lib.config import resolve, shown
from lib.evaluation.evaluate import EvalConfig, evaluate_split
from lib.evaluation.views import gallery, gallery_items, modality_figure
from lib.jobs.artefacts import for_profile
from lib.models.build import build
from lib.results import write_json_atomic, write_jsonl_atomic, write_results
from lib.training.checkpoint import load_weights
from lib.training.data import CaptionData


def evaluate_job(
    checkpoint: str,
    out: str,
    profile_name: str = "default",
    params_dir: str | None = None,
    cfg: EvalConfig | None = None,
    *,
    run_name: str | None = None,
    figures_dir: str | None = None,
    results_dir: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> tuple[dict, Path]:
    """Evaluate ``checkpoint`` (a run folder, its ckpt/ or a step-N folder, from any strategy) with the
    profile's model; write ``out/eval.json``, ``out/captions.jsonl`` and ``results/evaluation/<run>.json``."""
    cfg = cfg or EvalConfig()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    art = for_profile(profile_name, params_dir, progress=progress)
    torch.manual_seed(cfg.seed)
    vlm, tok = build(art.spec, device=device)
    found = load_weights(vlm, resolve(checkpoint))
    train, test = CaptionData(art.features, "train", tok), CaptionData(art.features, cfg.split, tok)
    t0 = time.perf_counter()
    record = evaluate_split(vlm, train, test, cfg, device, progress)
    record["checkpoint"], record["seconds"] = shown(found), time.perf_counter() - t0
    out_dir = resolve(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    captions = record.pop("captions")
    record["examples"] = captions[:8]  # all of them beside the run
    record["gallery"] = gallery_items(captions, art.preprocessed, test.rows, cfg.gallery)
    write_jsonl_atomic(out_dir / "captions.jsonl", captions)
    write_json_atomic(out_dir / "eval.json", record)
    if figures_dir:
        gallery(record["gallery"], resolve(figures_dir) / "07_gallery.png")
        modality_figure(record, resolve(figures_dir) / "07_per_modality.png")
    config = {
        "profile": profile_name,
        "checkpoint": shown(found),
        "model": asdict(art.spec),
        "device": device,
        **asdict(cfg),
    }
    path = write_results(
        resolve(results_dir) if results_dir else art.settings.results_dir,
        "evaluation",
        run_name or art.settings.profile.run_name,
        record,
        config,
        cfg.seed,
    )
    return record, path
