"""What a profile's jobs need, built when missing: data -> clean index -> image shards -> the tiny encoder
and LM (``tiny`` in a profile: pre-trained on this data's training split) -> feature cache. Every step
is cached, keyed by what it was made from, and resumable: another dataset in the same work folder is
rebuilt, never used. ``for_profile`` is the one set-up that training, evaluation, the baseline and the
benchmarks share.

A profile's settings are read strictly: a key that is neither a common parameter, a model setting,
``train`` (the recipe) nor ``pretrain`` is an error naming it and its file.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.config import Profile, load_profile, resolve
from lib.data.generate import generate
from lib.data.preprocess import preprocess
from lib.data.validate import ensure_index
from lib.models import encoder as enc
from lib.models import language
from lib.models.build import local_spec, model_spec
from lib.models.feature_cache import encode
from lib.options import strict
from lib.settings import TINY, EncoderPretrain, LMPretrain, ModelSpec, TinyLM, TrainConfig

COMMON = ("data_dir", "work_dir", "results_dir", "figures_dir", "run_name", "seed", "workers")
SECTIONS = ("train", "pretrain")


@dataclass
class Settings:
    """A profile's job settings, checked."""

    profile: Profile
    params: dict  # common parameters overlaid with train.yaml
    spec: ModelSpec  # ``tiny`` models resolved to their folders in the work folder
    train: TrainConfig
    tiny: tuple[str, ...] = ()  # the models to pre-train on the data ("encoder", "lm")

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

    def pooled(self, progress: bool = True) -> Path:
        """The cache of pooled CLIP image embeddings (the joint image-text space that zero-shot and
        CLIPScore need), built beside the training features when those are patch tokens."""
        pooled = self.features.parent / "pooled"
        if self.spec.encoder_output != "pooled":
            encode(
                self.preprocessed, pooled, local_spec(self.spec.encoder), output="pooled", progress=progress
            )
        return pooled


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
    for model, what in (
        ("encoder", "hf-hub:org/name or local-dir:/path (open_clip)"),
        ("lm", "a hub id or folder"),
    ):
        if not params.get(model):
            raise ValueError(
                f"{profile.source_of(model)}: no {model!r} model: set it to {what}, or to {TINY!r} to "
                f"pre-train the default's tiny one on the data's training split"
            )
    tiny = tuple(m for m in ("encoder", "lm") if params[m] == TINY)
    work = params["work_dir"]
    resolved = {
        **params,
        **({"encoder": f"local-dir:{work}/encoder"} if "encoder" in tiny else {}),
        **({"lm": f"{work}/lm"} if "lm" in tiny else {}),
    }
    return Settings(
        profile,
        params,
        model_spec(resolved, str(profile.source_of("lora"))),
        strict(TrainConfig, params.get("train"), f"{profile.source_of('train')}: train"),
        tiny,
    )


def pretrain_configs(s: Settings) -> tuple[EncoderPretrain, LMPretrain]:
    pre, where = s.params.get("pretrain") or {}, f"{s.profile.source_of('pretrain')}: pretrain"
    lm = dict(pre.get("lm") or {})
    model = strict(TinyLM, lm.pop("model", None), f"{where}: lm: model")
    return (
        strict(EncoderPretrain, pre.get("encoder"), f"{where}: encoder"),
        dataclasses.replace(strict(LMPretrain, lm, f"{where}: lm"), model=model),
    )


def for_profile(
    profile_name: str = "default",
    params_dir: str | None = None,
    progress: bool = True,
    verify_data: bool = True,
) -> Artefacts:
    """Make sure data, clean index, shards, the tiny models the profile asks for and the feature cache
    exist, made from this data; build what is missing or was made from something else. ``verify_data``
    False trusts an existing index without listing the image folder again (the other ranks of a job,
    after rank 0 checked it: on PMC-OA the listing is 1.65M stat calls)."""
    s = settings(profile_name, params_dir)
    params, spec, profile = s.params, s.spec, s.profile
    work, data, workers = resolve(params["work_dir"]), resolve(params["data_dir"]), params.get("workers", 1)
    if profile.generate:
        g = profile.generate
        generate(resolve(g["out"]), n=g["n"], seed=g["seed"], workers=workers, progress=progress)
    if not data.is_dir():
        raise FileNotFoundError(
            f"no data at {data}: pass --data DIR (a folder with train/valid/test.jsonl and images/), set "
            f"$PMCOA_DATA, or set data_dir in {profile.source_of('data_dir')}"
        )
    index = work / "index.jsonl"
    if verify_data or not index.exists():
        index = ensure_index(data, index, work / "validate_report.json", workers, progress=progress)
    preprocessed = work / "preprocessed"
    backend = "dask-threads" if workers > 1 else "sequential"
    preprocess(data, preprocessed, backend=backend, workers=workers, index=index, progress=progress)
    encoder_cfg, lm_cfg = pretrain_configs(s)
    if encoder_cfg.generated and not profile.generate:  # another dataset (--data): never mixed with ours
        print(
            f"the tiny encoder is pre-trained on {data}'s training split alone: the generated pairs "
            f"{profile.source_of('pretrain')} adds are for the embedded dataset",
            file=sys.stderr,
        )
        encoder_cfg = dataclasses.replace(encoder_cfg, generated=0)
    if "encoder" in s.tiny:
        enc.pretrain(preprocessed, work / "encoder", encoder_cfg, progress=progress, workers=workers)
    if "lm" in s.tiny:
        language.pretrain(preprocessed / "index.jsonl", work / "lm", lm_cfg, progress=progress)
    features = work / "features" / spec.encoder_output
    encode(preprocessed, features, local_spec(spec.encoder), output=spec.encoder_output, progress=progress)
    return Artefacts(s, data, index, preprocessed, features)
