"""From a profile to a trained, evaluated captioner: the artefacts each step needs, built when missing
(every one is cached and resumable), the VLM assembled from its specs, training, then captions of
held-out images scored against the most-frequent-caption baseline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lib.config import Profile, resolve


@dataclass
class ModelSpec:
    encoder: str  # "hf-hub:..." or "local-dir:/path"
    lm: str  # hub id or local folder
    encoder_output: str = "pooled"  # pooled | tokens
    visual_tokens: int = 4
    projector_hidden: int = 512
    quant: str | None = None  # None | 8bit | 4bit
    lora: dict = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05, "targets": ["q_proj", "v_proj"]})


@dataclass
class Artefacts:
    data: Path
    index: Path
    preprocessed: Path
    features: Path


def model_spec(params: dict) -> ModelSpec:
    keys = ModelSpec.__dataclass_fields__
    return ModelSpec(**{k: params[k] for k in keys if params.get(k) is not None})


def prepare(profile: Profile, params: dict, progress: bool = True, pretrain_cfg: dict | None = None) -> tuple[Artefacts, ModelSpec]:
    """Make sure data, clean index, shards, encoder, LM and feature cache exist; build what is missing.
    The tiny encoder and LM are pre-trained only for profiles that generate their data (the default)."""
    from lib.data.generate import generate
    from lib.data.preprocess import preprocess
    from lib.data.validate import validate
    from lib.models import encoder as enc
    from lib.models import language
    from lib.models.encode import encode

    work, spec = resolve(params["work_dir"]), model_spec(params)
    data = resolve(params["data_dir"])
    if profile.generate:
        g = profile.generate
        generate(resolve(g["out"]), n=g["n"], seed=g["seed"], workers=params.get("workers"), progress=progress)
    index = work / "index.jsonl"
    if not index.exists():
        validate(data, work / "validate_report.json", index, workers=params.get("workers", 1), progress=progress)
    preprocessed = work / "preprocessed"
    workers = params.get("workers", 1)
    preprocess(data, preprocessed, backend="dask-threads" if workers > 1 else "sequential", workers=workers,
               index=index, progress=progress)
    pre = pretrain_cfg or {}
    if profile.generate:
        enc_dir = Path(spec.encoder.removeprefix("local-dir:"))
        enc.pretrain(preprocessed, resolve(enc_dir), enc.PretrainConfig(**pre.get("encoder", {})), progress=progress)
        lm_cfg = pre.get("lm", {})
        lm_cfg = language.LMPretrain(**{**lm_cfg, "model": language.TinyLM(**lm_cfg.get("model", {}))})
        language.pretrain(preprocessed / "index.jsonl", resolve(spec.lm), lm_cfg, progress=progress)
    features = work / "features" / spec.encoder_output
    encode(preprocessed, features, local_spec(spec.encoder), output=spec.encoder_output, progress=progress)
    return Artefacts(data, index, preprocessed, features), spec


def local_spec(spec: str) -> str:
    """Local paths in profiles are relative to the repository root; hub ids pass through."""
    if spec.startswith("local-dir:"):
        return f"local-dir:{resolve(spec.removeprefix('local-dir:'))}"
    if spec.startswith("hf-hub:") or not resolve(spec).exists():
        return spec
    return str(resolve(spec))


def build(spec: ModelSpec, with_encoder: bool = False, device: str = "cpu"):
    """(CaptionVLM, tokenizer) from a spec; the encoder is attached only to train from pixels."""
    from lib.models.encoder import FrozenEncoder, create
    from lib.models.language import LoraSpec, load_lm, load_tokenizer
    from lib.models.vlm import CaptionVLM, Projector

    lm_path = local_spec(spec.lm)
    tok = load_tokenizer(lm_path)
    lora = LoraSpec(**{**spec.lora, "targets": tuple(spec.lora["targets"])})
    lm = load_lm(lm_path, lora=lora, quant=spec.quant)
    clip, _ = create(local_spec(spec.encoder))
    encoder = FrozenEncoder(clip, spec.encoder_output)
    projector = Projector(encoder.dim, lm.config.hidden_size, spec.projector_hidden, spec.visual_tokens)
    vlm = CaptionVLM(projector, lm, tok, encoder if with_encoder else None)
    return vlm.to(device), tok


@torch.no_grad()
def caption(vlm, data, batch_size: int = 64, num_beams: int = 1, max_new_tokens: int = 48,
            device: str = "cpu") -> tuple[dict[str, str], float]:
    """Generated caption per id over a whole split, and captions per second."""
    vlm.eval()
    tok_decode = data.tok.decode
    out, t0 = {}, time.perf_counter()
    for lo in range(0, len(data), batch_size):
        batch = data.batch(range(lo, min(len(data), lo + batch_size)))
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        for i, ids in zip(batch["ids"], vlm.generate(batch, max_new_tokens, num_beams), strict=True):
            out[i] = tok_decode(ids, skip_special_tokens=True).strip()
    return out, len(out) / (time.perf_counter() - t0)


def evaluate(vlm, train_data, test_data, device: str = "cpu", num_beams: int = 1) -> dict:
    """Scores of the captioner and of the most-frequent-caption baseline on ``test_data``."""
    from lib.evaluation.captions import collapse, most_frequent_caption, score

    hyps, per_s = caption(vlm, test_data, num_beams=num_beams, device=device)
    refs = {r.get("id", r["image"]): [r["caption"]] for r in test_data.rows}
    frequent = most_frequent_caption([r["caption"] for r in train_data.rows])
    return {
        "model": {**score(refs, hyps), **collapse(list(hyps.values())), "captions_per_s": per_s},
        "most_frequent": {**score(refs, dict.fromkeys(refs, frequent)), "caption": frequent},
        # the same diversity measures on the held-out references: how much repetition the data itself has
        "references": collapse([v[0] for v in refs.values()]),
        "captions": [{"id": k, "reference": refs[k][0], "generated": hyps[k]} for k in refs],
        "test_pairs": len(refs),
    }
