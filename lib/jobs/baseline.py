"""``python -m lib baseline``: the modality classifiers on the profile's data, a results file and figures."""

from __future__ import annotations

from pathlib import Path

from lib.baseline.classify import BaselineConfig, classify, config, figures
from lib.config import resolve
from lib.jobs.artefacts import for_profile
from lib.models.build import local_spec
from lib.results import write_results


def baseline_job(
    profile_name: str = "default",
    params_dir: str | None = None,
    cfg: BaselineConfig | None = None,
    *,
    run_name: str | None = None,
    figures_dir: str | None = None,
    results_dir: str | None = None,
    progress: bool = True,
) -> tuple[dict, Path]:
    """Build what is missing (the same cached artefacts training uses, plus pooled CLIP embeddings
    when training uses patch tokens), classify, write ``results/baseline/<run>.json`` (and figures)."""
    cfg = cfg or BaselineConfig()
    art = for_profile(profile_name, params_dir, progress=progress)
    metrics = classify(
        art.preprocessed, art.pooled(progress), local_spec(art.spec.encoder), cfg, progress=progress
    )
    path = write_results(
        resolve(results_dir) if results_dir else art.settings.results_dir,
        "baseline",
        run_name or art.settings.profile.run_name,
        metrics,
        {"profile": profile_name, **config(cfg, art.preprocessed, art.spec.encoder)},
        cfg.seed,
    )
    if figures_dir:
        figures(metrics, resolve(figures_dir))
    return metrics, path
