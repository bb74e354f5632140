"""``python -m lib bench encoder``: what pre-training buys the embedded default's frozen tiny encoder.

A caption states a fact only as well as the frozen features hold it (``lib.evaluation.probe``). Each
run here pre-trains the tiny CLIP with one setting (passes over the data, generated pairs added from the
corpus's own stream), encodes the study's images with it, and fits the fact probes on the training split,
scored on ``split`` with intervals: finding and location against pre-training steps and pairs. The
profile's encoder is left as it is; every run has a scratch folder of its own, cached, so a killed bench
resumes at the run it was in.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from lib.config import resolve, shown
from lib.data.pmcoa import recorded_facts
from lib.evaluation.probe import accuracy_cells, probe_facts
from lib.jobs.artefacts import for_profile, pretrain_configs, settings
from lib.models import encoder as enc
from lib.models.feature_cache import encode
from lib.results import write_results
from lib.training.data import CaptionData


def parse_runs(text: str) -> list[tuple[int, int]]:
    """'0:12,8000:10' -> [(generated pairs, epochs), ...]."""
    try:
        runs = [tuple(int(v) for v in part.split(":")) for part in text.split(",") if part.strip()]
    except ValueError:
        runs = []
    if not runs or any(len(r) != 2 or r[0] < 0 or r[1] < 1 for r in runs):
        raise ValueError(f"--runs takes GENERATED:EPOCHS pairs, e.g. 0:12,8000:10 (got {text!r})")
    return runs


def bench_encoder(
    runs: list[tuple[int, int]],
    profile: str = "default",
    params_dir: str | None = None,
    scratch: str | None = None,
    split: str = "test",
    resamples: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict, dict]:
    if not settings(profile, params_dir).profile.generate:  # --data: a user's folder has no scene facts
        raise ValueError(
            "bench encoder measures the embedded default's tiny encoder, whose data has scene facts"
        )
    art = for_profile(profile, params_dir, progress=progress)
    truth = {**recorded_facts(art.data, "train"), **recorded_facts(art.data, split)}
    base = pretrain_configs(art.settings)[0]
    root = resolve(scratch) if scratch else resolve(art.settings.params["work_dir"]) / "bench" / "encoder"
    workers = art.settings.params.get("workers", 1)
    out = []
    for generated, epochs in runs:
        cfg = replace(base, generated=generated, epochs=epochs)
        folder = root / f"generated{generated}-epochs{epochs}"
        record = enc.pretrain(art.preprocessed, folder, cfg, progress=progress, workers=workers)
        feats = folder / "features"
        encode(art.preprocessed, feats, f"local-dir:{folder}", output="pooled", progress=progress)
        probe = probe_facts(
            CaptionData(feats, "train", None), CaptionData(feats, split, None), truth, resamples, seed
        )
        out.append(
            {
                "generated": generated,
                "epochs": epochs,
                "pairs": record["pairs"] + record.get("generated_pairs", 0),
                "steps": record["steps"],
                "final_loss": record["final_loss"],
                "pretrain_s": record.get("seconds"),  # corpus drawing included
                "probe": probe,
            }
        )
    metrics = {"split": split, "runs": out}
    config = {
        "profile": profile,
        "pretrain": asdict(base),
        "runs": [list(r) for r in runs],
        "split": split,
        "resamples": resamples,
        "model_cfg": enc.TINY_CLIP,
        "scratch": shown(root),
    }
    return metrics, config


def record(metrics: dict, config: dict, results_dir: str | Path, name: str, seed: int) -> Path:
    return write_results(resolve(results_dir), "encoder", name, metrics, config, seed)


def table(metrics: dict) -> list[dict]:
    """One row per pre-training run: its pairs and steps, and each fact's probe accuracy [95% interval]."""
    rows = []
    for r in metrics["runs"]:
        row = {
            "generated pairs": r["generated"],
            "epochs": r["epochs"],
            "pairs": r["pairs"],
            "steps": r["steps"],
        }
        row.update(accuracy_cells(r["probe"] or {}))
        rows.append(row)
    return rows
