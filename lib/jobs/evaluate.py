"""``python -m lib evaluate``: a trained checkpoint's captions of one split, scored against the references
and against reference points on the same split, with its gallery and figures; a results file."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from lib.config import resolve, shown
from lib.data.pmcoa import recorded_facts
from lib.evaluation.clipscore import ClipScorer
from lib.evaluation.evaluate import EvalConfig, evaluate_split
from lib.evaluation.probe import probe_facts
from lib.evaluation.views import gallery, gallery_items, modality_figure
from lib.jobs.artefacts import for_profile
from lib.jobs.made_from import encoder_pretraining, model_of, same_model
from lib.models.build import build, local_spec
from lib.models.feature_cache import open_features
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
    blind: str | None = None,
) -> tuple[dict, Path]:
    """Evaluate ``checkpoint`` (a run folder, its ckpt/ or a step-N folder, from any strategy) with the
    profile's model; write ``out/eval.json``, ``out/captions.jsonl`` and ``results/evaluation/<run>.json``.
    ``blind``: the run folder of a captioner trained without images, scored as a reference point and
    shown the test split as it was trained (zeros, or shuffled images)."""
    cfg = cfg or EvalConfig()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    art = for_profile(profile_name, params_dir, progress=progress)
    torch.manual_seed(cfg.seed)
    for run in filter(None, (checkpoint, blind)):  # never weights trained on another encoder's features
        same_model(resolve(run), art)
    vlm, tok = build(art.spec, device=device)
    found = load_weights(vlm, resolve(checkpoint))
    train, test = CaptionData(art.features, "train", tok), CaptionData(art.features, cfg.split, tok)
    blind_model, blind_found = None, None
    if blind:
        blind_vlm, _ = build(art.spec, device=device)
        blind_found = load_weights(blind_vlm, resolve(blind))
        image = _trained_on(resolve(blind))
        if image == "real":
            raise ValueError(f"{blind} was trained on the images: it is not a blind captioner")
        blind_model = (blind_vlm, CaptionData(art.features, cfg.split, tok, image=image))
    truth = recorded_facts(art.data, cfg.split) or None  # the embedded default's scene facts
    pooled = art.pooled(progress)
    clip = ClipScorer(
        local_spec(art.spec.encoder),
        {r["id"]: open_features(pooled, r["shard"])[r["offset"]] for r in test.rows},
    )
    t0 = time.perf_counter()
    record = evaluate_split(
        vlm, train, test, cfg, device, progress, truth=truth, blind=blind_model, clip=clip
    )
    record["checkpoint"], record["seconds"] = shown(found), time.perf_counter() - t0
    if truth:  # what the features hold, the reference the captions' per-fact recall is read against
        facts = {**recorded_facts(art.data, "train"), **truth}
        record["encoder_probe"] = probe_facts(train, test, facts, cfg.resamples, cfg.seed)
    if blind_found:
        record["blind"]["checkpoint"] = shown(blind_found)
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
        "blind": shown(blind_found) if blind_found else None,
        "model": asdict(art.spec),
        # which encoder and LM made these numbers: their weights as runs record them, and how the tiny
        # encoder was pre-trained
        "weights": {k: v for k, v in model_of(art).items() if k != "model"},
        "encoder_pretraining": encoder_pretraining(art),
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


def _trained_on(run: Path) -> str:
    """What a finished run's captioner saw in place of images (its train.json says)."""
    record = run / "train.json"
    if not record.is_file():
        raise FileNotFoundError(f"{record} is missing: --blind takes a finished train run's out folder")
    return json.loads(record.read_text()).get("image", "real")
