"""``make gpu`` (``python -m lib gpu-check``): every GPU path a cluster user runs, in one prepared run,
ready for the moment a GPU machine is lent (``--checks`` runs a part of it where time is capped).

Stand-ins of the full-size models are written as local folders, the way an air-gapped cluster holds the
real ones: BiomedCLIP's image tower architecture (ViT-B/16 at 224 px, open_clip) and BioMistral-7B's
(Mistral, 32 blocks), both with random weights. Throughput and memory depend on shapes, not values.
On a small generated dataset, through the study's own commands, it runs:

  features      ``train`` from cached features, bf16, one GPU
  pixels        ``train --source pixels``: the frozen encoder in the loop
  ddp, fsdp     ``torchrun ... train --strategy ddp|fsdp`` (NCCL, every GPU): steps, a DCP checkpoint,
                then ``--resume`` to twice the steps; the loss must be finite, non-zero and continue
  fsdp-4bit     the same over NF4 base weights (QLoRA under FSDP2; silent loss 0 / NaN is checked for)
  captions      ``evaluate``: the test split captioned with the KV cache, captions/s
  decode        JPEG decode + resize on the GPU (nvJPEG, batched) against the CPU, images/s
  step          the full-size one-GPU step (``bench lm``): padded to 64, then real caption lengths in
                length-grouped batches, + fused AdamW, + compiled LM blocks; MFU and the seed's run

Each check writes ``results/gpu/<device>-<check>.json``, passed or not (a failure keeps its error), and
a failed check never stops the others. ``--dry-run`` runs the same script on CPU at tiny sizes with gloo
and two ranks: the test suite runs it, so the script cannot rot between GPU visits.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import open_clip
import torch
import yaml
from transformers import AutoModelForCausalLM, MistralConfig

from lib.bench.decode import measure_decode
from lib.bench.lm import SIZES, measure_lm
from lib.config import repo_root
from lib.data.generate import generate
from lib.evaluation.captioning import throughput
from lib.jobs.artefacts import for_profile
from lib.models.build import build
from lib.models.encoder import TINY_CLIP, save_clip
from lib.models.language import train_tokenizer
from lib.results import write_results
from lib.settings import LMBench
from lib.training.checkpoint import load_weights
from lib.training.data import CaptionData

# BiomedCLIP's image tower is timm's vit_base_patch16_224: open_clip's ViT-B/16 has its shapes
VIT_B16 = {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12, "head_width": 64}
CHECKS = ("features", "pixels", "ddp", "fsdp", "fsdp-4bit", "captions", "decode", "step")
# the full-size step on real caption lengths, one change at a time on top of the last: every caption
# padded to 64 (today's benchmark), length-grouped batches, AdamW's fused kernel, compiled LM blocks (its
# time includes recompiling for new batch widths: what a short run pays)
STEP_VARIANTS = {
    "padded-64": {"padding": "max"},
    "grouped": {"padding": "grouped"},
    "grouped+fused": {"padding": "grouped", "fused_adam": True},
    "grouped+fused+compile": {"padding": "grouped", "fused_adam": True, "compile": True},
}
PROFILE = "gpu-check"


@dataclass(frozen=True)
class Scale:
    lm: str  # a key of lib.bench.lm.SIZES
    vision: dict
    projector_hidden: int
    pairs: int
    batch: int
    steps: int  # per run; a resumed run goes on to twice this
    ranks: int
    device: str


def scale(dry_run: bool) -> Scale:
    if dry_run:
        return Scale("tiny", TINY_CLIP["vision_cfg"], 32, 48, 4, 2, 2, "cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("gpu-check needs a CUDA device; --dry-run runs it on CPU at tiny sizes")
    return Scale("biomistral-7b", VIT_B16, 4096, 320, 16, 6, torch.cuda.device_count(), "cuda")


def device_tag(dry_run: bool) -> str:
    """'cpu-dry-run', or the GPU's name as a file-name word ('NVIDIA H200' -> 'nvidia-h200')."""
    if dry_run:
        return "cpu-dry-run"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")


def prepare(work: Path, s: Scale) -> Path:
    """The stand-in models, a generated dataset and a profile naming them, in ``work`` (one folder per
    scale: a dry run's tiny models are never taken for the full-size ones); returns the params folder.
    Each model folder is written under a temporary name and renamed when complete."""
    encoder, lm, data = work / "encoder", work / "lm", work / "data"
    generate(data, n=s.pairs, seed=0, workers=1, progress=False)
    torch.manual_seed(0)
    if not encoder.is_dir():
        cfg = {"embed_dim": 512, "vision_cfg": s.vision, "text_cfg": TINY_CLIP["text_cfg"]}
        shutil.rmtree(encoder.with_suffix(".partial"), ignore_errors=True)
        os.replace(save_clip(open_clip.CLIP(**cfg), cfg, encoder.with_suffix(".partial")), encoder)
    if not lm.is_dir():
        partial = lm.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        arch = MistralConfig(**SIZES[s.lm], bos_token_id=1, eos_token_id=2, pad_token_id=0)
        with torch.device(s.device):  # a 7B model is initialised on the GPU, never on the host
            model = AutoModelForCausalLM.from_config(arch, dtype=torch.bfloat16)
        model.save_pretrained(partial)
        del model
        # the study's byte-level BPE on the data's captions (the LM's vocabulary is larger: ids fit)
        captions = [json.loads(line)["caption"] for line in open(data / "train.jsonl", encoding="utf-8")]
        train_tokenizer(captions, partial, vocab_size=min(arch.vocab_size, 400))
        os.replace(partial, lm)
    params = work / "params"
    profile = {
        "env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        "generate": {"out": str(data), "n": s.pairs, "seed": 0},
        "params": {
            "data_dir": str(data),
            "work_dir": str(work / "work"),
            "results_dir": str(work / "results"),
            "figures_dir": str(work / "figures"),
            "run_name": PROFILE,
            "seed": 0,
            "workers": 1,
            "encoder": f"local-dir:{encoder}",
            "encoder_output": "pooled",
            "lm": str(lm),
        },
    }
    train = {
        "visual_tokens": 4,
        "projector_hidden": s.projector_hidden,
        "lora": {"targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "train": {
            "steps": s.steps,
            "align_steps": 0,
            "batch_size": s.batch * s.ranks,
            "lr": 2e-4,
            "warmup": 1,
            "amp": "auto",
            "ckpt_every": s.steps,
            "log_every": 1,
        },
    }
    for name, recipe in ((PROFILE, train), (f"{PROFILE}-4bit", {**train, "quant": "4bit"})):
        (params / name).mkdir(parents=True, exist_ok=True)
        (params / name / "profile.yaml").write_text(yaml.safe_dump(profile))
        (params / name / "train.yaml").write_text(yaml.safe_dump(recipe))
    for_profile(PROFILE, str(params), progress=False)  # data, shards and the feature cache, once
    return params


def _lib(*args: str, ranks: int = 1, threads: int = 1) -> subprocess.CompletedProcess:
    """``python -m lib ...``, under torchrun for more than one rank, as a cluster user runs it."""
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run(
        [*launch, "-m", "lib", *args], cwd=repo_root(), env=env, capture_output=True, text=True
    )


def _ran(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}")


def _losses_ok(losses: list[float], what: str) -> None:
    bad = [v for v in losses if not math.isfinite(v) or v == 0.0]
    if not losses or bad:
        raise RuntimeError(f"{what}: losses {losses} (non-finite or exactly 0: a silent QLoRA failure)")


def train_run(
    params: Path, work: Path, s: Scale, name: str, *extra: str, ranks: int = 1, resume: bool = False
) -> dict:
    """Train ``name`` for the profile's steps; with ``resume``, go on from its DCP checkpoint to twice
    the steps and check the loss continues. Returns the runs' train.json records."""
    profile = f"{PROFILE}-4bit" if name == "fsdp-4bit" else PROFILE
    run = work / "runs" / name
    common = ("--profile", profile, "--params-dir", str(params), "--out", str(run), "--no-eval")
    common += ("--device", s.device, "--results-dir", str(work / "results"), "--name", name, *extra)
    _ran(_lib("train", *common, ranks=ranks), f"train {name}")
    first = json.loads((run / "train.json").read_text())
    _losses_ok(first["losses"], name)
    out = {"run": first}
    if resume:
        _ran(
            _lib("train", *common, "--resume", str(run), "--steps", str(2 * s.steps), ranks=ranks),
            f"resume {name}",
        )
        second = json.loads((run / "train.json").read_text())
        _losses_ok(second["losses"], f"{name} resumed")
        if second["start_step"] != s.steps:
            raise RuntimeError(f"{name}: resumed at step {second['start_step']}, not {s.steps}")
        # the loss continues: the first resumed step is no worse than the first step of the run
        if second["losses"][0] > first["losses"][0] * 1.5:
            raise RuntimeError(
                f"{name}: resumed loss {second['losses'][0]:.3f} vs {first['losses'][0]:.3f} at start"
            )
        out["resumed"] = second
    return out


def captions(params: Path, work: Path, s: Scale) -> dict:
    """captions/s of the ``features`` run's captioner on the test split: batched with the KV cache (how
    ``evaluate`` captions) against one at a time, with and without the cache."""
    art = for_profile(PROFILE, str(params), progress=False, verify_data=False)
    vlm, tok = build(art.spec, device=s.device)
    load_weights(vlm, work / "runs" / "features")
    test = CaptionData(art.features, "test", tok)
    dtype = torch.bfloat16 if s.device == "cuda" else None
    with torch.autocast(s.device, dtype=dtype) if dtype else nullcontext():
        return throughput(vlm, test, n=64 if dtype else 8, device=s.device)


def step(work: Path, s: Scale) -> dict:
    """The one-device full-size step (``bench lm``) of each of STEP_VARIANTS, one run each: tokens/s,
    MFU (visual and caption tokens), peak memory and the seed study's run projected at that rate."""
    gpu = s.device == "cuda"
    base = LMBench(
        size=s.lm,
        batch=64 if gpu else 8,
        steps=20 if gpu else 4,
        amp="bf16" if gpu else "off",
        lengths=str(work / "data"),
    )
    out = {}
    for name, change in STEP_VARIANTS.items():
        cfg = replace(base, **change)
        metrics, _ = measure_lm(cfg, s.device, progress=False)
        keys = ("tokens_per_s", "samples_per_s", "mfu", "step_s", "peak_memory_bytes", "real_token_share")
        out[name] = {k: metrics[k] for k in keys} | {
            "seed_run_projected_hours": metrics["seed_run_projected_hours"],
            "settings": change,
        }
        if gpu:
            torch.cuda.empty_cache()
    return {"variants": out, "batch": base.batch, "steps": base.steps, "runs_each": 1}


def check(name: str, params: Path, work: Path, s: Scale) -> dict:
    if name == "features":
        return train_run(params, work, s, name)
    if name == "pixels":
        return train_run(params, work, s, name, "--source", "pixels")
    if name in ("ddp", "fsdp", "fsdp-4bit"):
        return train_run(params, work, s, name, "--strategy", name.split("-")[0], ranks=s.ranks, resume=True)
    if name == "captions":
        return captions(params, work, s)
    if name == "step":
        return step(work, s)
    if name == "decode":
        return measure_decode(work / "data", s.device, n=64 if s.device == "cpu" else 256, repeats=5)
    raise ValueError(f"unknown check {name!r} ({', '.join(CHECKS)})")


def gpu_check(work: str | Path, results: str | Path, dry_run: bool = False, checks=CHECKS) -> dict[str, dict]:
    """Run the checks; write each one's results file; return {check: {"ok", "seconds", ...}}."""
    s = scale(dry_run)
    work, tag = Path(work) / s.lm, device_tag(dry_run)
    config = {"scale": s.__dict__, "dry_run": dry_run, "weights": "random (architecture only)"}
    start = time.perf_counter()
    params = prepare(work, s)
    outcome = {"prepare": {"ok": True, "seconds": time.perf_counter() - start}}
    for name in checks:
        t = time.perf_counter()
        try:
            metrics = {"ok": True, **check(name, params, work, s)}
        except Exception as e:  # a failed path is a result to record, and the others still run
            metrics = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        metrics["seconds"] = time.perf_counter() - t
        write_results(results, "gpu", f"{tag}-{name}", metrics, {**config, "check": name}, seed=0)
        outcome[name] = metrics
        print(f"{name:>10}: {'ok' if metrics['ok'] else 'FAILED'} ({metrics['seconds']:.0f} s)", flush=True)
    return outcome
