"""What a profile's jobs need, built when missing: data -> clean index -> image shards -> the default's
tiny encoder and LM -> feature cache. Every step is cached and resumable; ``for_profile`` is the one
set-up that training, evaluation, the baseline and the benchmarks share.

A profile's settings are read strictly: a key that is neither a common parameter, a model setting,
``train`` (the recipe) nor ``pretrain`` is an error naming it and its file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lib.config import Profile, load_profile, resolve
from lib.data.generate import generate
from lib.data.preprocess import preprocess
from lib.data.validate import validate
from lib.models import encoder as enc
from lib.models import language
from lib.models.build import local_spec, model_spec
from lib.models.feature_cache import encode
from lib.options import strict
from lib.settings import EncoderPretrain, LMPretrain, ModelSpec, TinyLM, TrainConfig

COMMON = ("data_dir", "work_dir", "results_dir", "figures_dir", "run_name", "seed", "workers")
SECTIONS = ("train", "pretrain")


@dataclass
class Settings:
    """A profile's job settings, checked."""

    profile: Profile
    params: dict  # common parameters overlaid with train.yaml
    spec: ModelSpec
    train: TrainConfig

    @property
    def results_dir(self) -> Path:
        return resolve(self.params["results_dir"])


@dataclass
class Artefacts:
    settings: Settings
    data: Path
    index: Path
    preprocessed: Path
    features: Path

    @property
    def spec(self) -> ModelSpec:
        return self.settings.spec


def settings(profile_name: str = "default", params_dir: str | None = None) -> Settings:
    """Load a profile, export its environment (HF_HUB_OFFLINE=1 on the default: a hub call fails at once
    instead of retrying) and check its job settings."""
    profile = load_profile(profile_name, params_dir)
    profile.apply_env()
    params = profile.job_params()
    known = set(COMMON) | set(SECTIONS) | {f.name for f in dataclasses.fields(ModelSpec)}
    for key in params:
        if key not in known:
            raise ValueError(
                f"{profile.source_of(key)}: unknown setting {key!r} (known: {', '.join(sorted(known))})"
            )
    return Settings(
        profile,
        params,
        model_spec(params, str(profile.source_of("lora"))),
        strict(TrainConfig, params.get("train"), f"{profile.source_of('train')}: train"),
    )


def _pretrain_configs(s: Settings) -> tuple[EncoderPretrain, LMPretrain]:
    pre, where = s.params.get("pretrain") or {}, f"{s.profile.source_of('pretrain')}: pretrain"
    lm = dict(pre.get("lm") or {})
    model = strict(TinyLM, lm.pop("model", None), f"{where}: lm: model")
    return (
        strict(EncoderPretrain, pre.get("encoder"), f"{where}: encoder"),
        dataclasses.replace(strict(LMPretrain, lm, f"{where}: lm"), model=model),
    )


def for_profile(
    profile_name: str = "default", params_dir: str | None = None, progress: bool = True
) -> Artefacts:
    """Make sure data, clean index, shards, encoder, LM and feature cache exist; build what is missing.
    The tiny encoder and LM are pre-trained only for profiles that generate their data (the default)."""
    s = settings(profile_name, params_dir)
    params, spec, profile = s.params, s.spec, s.profile
    work, data, workers = resolve(params["work_dir"]), resolve(params["data_dir"]), params.get("workers", 1)
    if profile.generate:
        g = profile.generate
        generate(resolve(g["out"]), n=g["n"], seed=g["seed"], workers=workers, progress=progress)
    index = work / "index.jsonl"
    if not index.exists():
        validate(data, work / "validate_report.json", index, workers=workers, progress=progress)
    preprocessed = work / "preprocessed"
    preprocess(
        data,
        preprocessed,
        backend="dask-threads" if workers > 1 else "sequential",
        workers=workers,
        index=index,
        progress=progress,
    )
    if profile.generate:
        encoder_cfg, lm_cfg = _pretrain_configs(s)
        enc.pretrain(
            preprocessed, resolve(spec.encoder.removeprefix("local-dir:")), encoder_cfg, progress=progress
        )
        language.pretrain(preprocessed / "index.jsonl", resolve(spec.lm), lm_cfg, progress=progress)
    features = work / "features" / spec.encoder_output
    encode(preprocessed, features, local_spec(spec.encoder), output=spec.encoder_output, progress=progress)
    return Artefacts(s, data, index, preprocessed, features)
