"""The captioner assembled from its spec: which encoder and LM, how many visual tokens, LoRA, quantisation.

A profile's ``train.yaml`` (with its ``profile.yaml``) holds these settings; ``model_spec`` reads them
and refuses a key it does not know, naming the file, so a typo is never silently ignored.
"""

from __future__ import annotations

import dataclasses

from lib.config import resolve
from lib.models.encoder import FrozenEncoder, create
from lib.models.language import load_lm, load_tokenizer
from lib.models.vlm import CaptionVLM, Projector
from lib.options import strict
from lib.settings import LoraSpec, ModelSpec


def model_spec(params: dict, where: str = "the profile") -> ModelSpec:
    """The spec from a profile's settings (keys that are not the model's are the caller's to check)."""
    keys = {f.name for f in dataclasses.fields(ModelSpec)}
    values = {k: params[k] for k in keys if params.get(k) is not None}
    if isinstance(values.get("lora"), dict):
        lora = strict(LoraSpec, values["lora"], f"{where}: lora")
        values["lora"] = dataclasses.replace(lora, targets=tuple(lora.targets))
    return ModelSpec(**values)


def local_spec(spec: str) -> str:
    """Local paths in profiles are relative to the repository root; hub ids pass through."""
    if spec.startswith("local-dir:"):
        return f"local-dir:{resolve(spec.removeprefix('local-dir:'))}"
    if spec.startswith("hf-hub:") or not resolve(spec).exists():
        return spec
    return str(resolve(spec))


def build(spec: ModelSpec, with_encoder: bool = False, device: str = "cpu"):
    """(CaptionVLM, tokenizer) from a spec; the encoder is attached only to train from pixels."""
    lm_path = local_spec(spec.lm)
    tok = load_tokenizer(lm_path)
    lm = load_lm(lm_path, lora=spec.lora, quant=spec.quant)
    clip, _ = create(local_spec(spec.encoder))
    encoder = FrozenEncoder(clip, spec.encoder_output)
    projector = Projector(
        encoder.dim,
        lm.config.hidden_size,
        spec.projector_hidden,
        spec.visual_tokens,
        pooled=spec.encoder_output == "pooled",
    )
    vlm = CaptionVLM(projector, lm, tok, encoder if with_encoder else None)
    return vlm.to(device), tok
