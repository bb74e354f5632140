"""The language model: BioMistral-7B through transformers, or the embedded default's tiny Mistral.

Both load with ``AutoModelForCausalLM.from_pretrained(path or hub id)`` and ``AutoTokenizer``; the
tiny one is saved in the standard layout, so the cluster and the laptop share one code path.
The default has no pretrained weights, so ``pretrain`` builds it as BioMistral was built, scaled
down: a BPE tokenizer trained on the training captions (HF ``tokenizers``), then causal-LM
pre-training of a small ``MistralConfig`` model on the same text. Each training sequence is two
related captions (same modality, as neighbouring figures of one article are), so the model learns
what a large LM brings to a VLM: continuing text conditioned on context. Trained on isolated
captions it learns to ignore anything before <s>, and no projector can then reach it (measured: a
projector alone could not move the loss on 16 training pairs). LoRA (peft) and 8/4-bit base
weights (bitsandbytes) are applied on top, the same way for both.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

from lib.models import ModelUnavailable, pretrain_step, warmup_share
from lib.results import write_json_atomic
from lib.settings import LMPretrain, LoraSpec

BIOMISTRAL = "BioMistral/BioMistral-7B"
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def _hub_error(spec: str, err: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"cannot load {spec!r} ({type(err).__name__}: {err}). Without network access, download it where "
        f"there is network (huggingface-cli download {spec}) and pass the local folder instead; "
        f"HF_HUB_OFFLINE=1 makes the hub fail at once instead of retrying"
    )


def train_tokenizer(captions: list[str], out: str | os.PathLike, vocab_size: int):
    """Byte-level BPE on the captions, saved so ``AutoTokenizer.from_pretrained(out)`` loads it."""
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(captions, trainer)
    bos = SPECIAL["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    fast.save_pretrained(out)
    return fast


def _caption_batches(ids: list[list[int]], batch_size: int, pad: int, gen: torch.Generator):
    order = torch.randperm(len(ids), generator=gen).tolist()
    for k in range(0, len(order) - batch_size + 1, batch_size):
        rows = [ids[i] for i in order[k : k + batch_size]]
        width = max(map(len, rows))
        x = torch.full((len(rows), width), pad)
        for i, r in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
        yield x, x != pad


def _partners(rows: list[dict], seed: int) -> list[int]:
    """For each caption, another training caption of the same modality (any caption when unknown)."""
    gen = torch.Generator().manual_seed(seed)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.get("modality") or "", []).append(i)
    return [
        groups[r.get("modality") or ""][
            int(torch.randint(len(groups[r.get("modality") or ""]), (1,), generator=gen))
        ]
        for r in rows
    ]


def pretrain(
    index: str | os.PathLike, out: str | os.PathLike, cfg: LMPretrain | None = None, progress: bool = True
) -> dict:
    """Tokenizer + tiny Mistral pre-trained on the training captions; cached in ``out``."""
    cfg = cfg or LMPretrain()
    out = Path(out)
    rows = [r for r in map(json.loads, open(index, encoding="utf-8")) if r["split"] == "train"]
    captions = [r["caption"] for r in rows]
    # cached only for the same settings and the same training captions: an LM pre-trained on other data
    # is trained again, never reused
    trained_on = hashlib.sha256(
        json.dumps([[r["caption"], r.get("modality")] for r in rows]).encode()
    ).hexdigest()
    done = out / "pretrain.json"
    if done.exists():
        cached = json.loads(done.read_text())
        if (cached.get("pretrain"), cached.get("trained_on")) == (asdict(cfg), trained_on):
            return cached
        print(f"{out} was pre-trained on other captions or settings: training it again", file=sys.stderr)
        done.unlink()  # not complete until trained again
    tok = train_tokenizer(captions, out, cfg.model.vocab_size)
    torch.manual_seed(cfg.seed)
    config = MistralConfig(
        **{**asdict(cfg.model), "vocab_size": len(tok)},
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        sliding_window=None,
        tie_word_embeddings=False,
    )
    model = MistralForCausalLM(config)
    half = cfg.model.max_position_embeddings // 2
    single = [tok(c).input_ids[: half - 1] + [tok.eos_token_id] for c in captions]
    ids = [single[j] + single[i] for i, j in enumerate(_partners(rows, cfg.seed))]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    if not ids:
        raise ValueError(f"{index}: no training captions to pre-train the tiny LM on")
    batch = min(cfg.batch_size, len(ids))  # a small folder of one's own: one batch of everything
    steps = cfg.epochs * (len(ids) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=steps, pct_start=warmup_share(steps)
    )
    gen, losses = torch.Generator().manual_seed(cfg.seed), []
    model.train()
    bar = tqdm(total=steps, desc="pretrain tiny Mistral", unit="step", disable=not progress)
    for _ in range(cfg.epochs):
        for x, mask in _caption_batches(ids, batch, tok.pad_token_id, gen):
            loss = model(input_ids=x, attention_mask=mask, labels=x.masked_fill(~mask, -100)).loss
            pretrain_step(loss, opt, sched, losses, bar)
    bar.close()
    model.save_pretrained(out)  # config.json + model.safetensors, the layout from_pretrained reads
    record = {
        "pretrain": asdict(cfg),
        "trained_on": trained_on,
        "captions": len(captions),
        "vocab": len(tok),
        "steps": steps,
        "first_loss": losses[0],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
    }
    write_json_atomic(done, record)  # last: marks the folder complete
    return record


def load_tokenizer(spec: str):
    try:
        tok = AutoTokenizer.from_pretrained(spec)
    except OSError as e:
        raise _hub_error(spec, e) from e
    if tok.pad_token is None:  # Mistral ships without one; padding is masked anyway
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def load_lm(spec: str, lora: LoraSpec | None, quant: str | None = None, dtype: torch.dtype = torch.float32):
    """Causal LM from a hub id or local folder, frozen, with LoRA adapters (trainable) when ``lora``.

    quant: None, "8bit" or "4bit" (bitsandbytes NF4 with bf16 compute); LoRA then trains on top of
    the quantised base, as in QLoRA.
    """
    kwargs = {"dtype": dtype}
    if quant:
        if quant not in ("8bit", "4bit"):
            raise ValueError(f"quant must be '8bit' or '4bit', got {quant!r}")
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if quant == "8bit"
            else BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            )
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(spec, **kwargs)
    except OSError as e:
        raise _hub_error(spec, e) from e
    return add_lora(model, lora)


def add_lora(model, lora: LoraSpec | None):
    """Freeze the base weights and add trainable LoRA adapters (peft) to the target projections."""
    model.requires_grad_(False)
    if lora is None:
        return model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def random_lm(
    config, lora: LoraSpec | None, dtype: torch.dtype, device: str | torch.device, quant: str | None = None
):
    """A causal LM of this architecture with random weights, built on ``device`` directly (a 7B model
    is never materialised on the host): what throughput and memory measurements need, no download.

    quant: bitsandbytes quantises while loading, so the random weights are saved and loaded back
    through ``load_lm``: the path real weights take (CUDA only)."""
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if not quant:
        return add_lora(model, lora)

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        del model
        torch.cuda.empty_cache()
        return load_lm(tmp, lora, quant, dtype)


def n_elements(p: torch.Tensor) -> int:
    """Elements a parameter stands for: a 4-bit bitsandbytes weight packs two per byte and keeps its
    real shape in its quantisation state."""
    state = getattr(p, "quant_state", None)
    return int(torch.Size(state.shape).numel()) if state is not None else p.numel()
