"""``python -m lib bench tower``: what the default encoder's image tower learns of the scene facts in a
pre-training's steps when it is trained on the facts themselves, against a small convolutional tower.

The frozen tiny CLIP reads the finding and the location far less often than the modality (``bench
encoder``), and a captioner states a fact only as well as its features hold it. This separates the
recipe from the tower. Each run trains one tower from scratch with a linear head per categorical fact,
the facts as labels (supervised: not CLIP's recipe, the most direct signal these images can give), on
the pre-training's images (the training split plus ``generated`` pairs of the corpus's own stream), and
scores it on ``split``'s images with intervals. "vit" is the tiny CLIP's image tower (``TINY_CLIP``);
"cnn" is timm's resnet10t, a small ResNet, with the same output width. Each run's result is kept in the
scratch folder, keyed by what it was made from, so a killed bench resumes at the run it was in.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import open_clip
import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lib.config import resolve, shown
from lib.data.generate import scene_facts
from lib.data.pmcoa import read_index, recorded_facts
from lib.data.preprocess import open_shard, split_digest
from lib.evaluation.facts import CATEGORICAL
from lib.evaluation.probe import accuracy_cells, scored
from lib.jobs.artefacts import for_profile, settings
from lib.models import encoder as enc
from lib.models import warmup_share
from lib.results import write_json_atomic, write_results

TOWERS = {
    "vit": "the tiny CLIP's image tower (open_clip ViT, TINY_CLIP's vision_cfg)",
    "cnn": "timm resnet10t (a small ResNet), the same output width",
}
BATCH, LR, WEIGHT_DECAY = 128, 1e-3, 0.1  # the encoder pre-training's (EncoderPretrain)


def parse_runs(text: str) -> list[tuple[str, int]]:
    """'vit:324,cnn:324' -> [(tower, steps), ...]."""
    runs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        tower, _, steps = part.partition(":")
        if tower not in TOWERS or not steps.isdigit() or int(steps) < 10:
            raise ValueError(
                f"--runs takes TOWER:STEPS pairs, towers {'/'.join(TOWERS)}, steps >= 10 (got {part!r})"
            )
        runs.append((tower, int(steps)))
    if not runs:
        raise ValueError("--runs is empty")
    return runs


def build(tower: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    width = enc.TINY_CLIP["embed_dim"]
    if tower == "vit":
        return open_clip.CLIP(**enc.TINY_CLIP).visual
    return timm.create_model("resnet10t", num_classes=width)


def _at_side(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 [N, H, W, 3] -> uint8 [N, side, side, 3], resized as the corpus is (antialiased bilinear)."""
    out = [
        enc.resize(torch.from_numpy(images[i : i + 256]).permute(0, 3, 1, 2).float().div_(255), side)
        .mul_(255)
        .round_()
        .to(torch.uint8)
        .permute(0, 2, 3, 1)
        .numpy()
        for i in range(0, len(images), 256)
    ]
    return np.concatenate(out) if out else np.zeros((0, side, side, 3), np.uint8)


def _split(preprocessed: Path, split: str, truth: dict, side: int) -> tuple[np.ndarray, list[dict]]:
    rows = [r for r in read_index(preprocessed / "index.jsonl") if r["split"] == split]
    images = np.stack([open_shard(preprocessed, r["shard"])[r["offset"]] for r in rows])
    return _at_side(images, side), [truth[r["id"]] for r in rows]


def _labels(facts: list[dict], classes: dict[str, list[str]]) -> torch.Tensor:
    """[N, facts] class indices; a value no training pair has is -1 (ignored by the loss)."""
    index = {f: {c: k for k, c in enumerate(cs)} for f, cs in classes.items()}
    return torch.tensor([[index[f].get(str(x[f]), -1) for f in CATEGORICAL] for x in facts])


def train_and_score(tower, steps, images, labels, classes, test, test_facts, seed, resamples, progress):
    model = build(tower, seed)
    heads = nn.ModuleList(nn.Linear(enc.TINY_CLIP["embed_dim"], len(classes[f])) for f in CATEGORICAL)
    params = [*model.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=warmup_share(steps))
    # the tiny CLIP's pixel transform (its saved preprocess config), for both towers
    side = enc.TINY_CLIP["vision_cfg"]["image_size"]
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (enc.CLIP_MEAN, enc.CLIP_STD))
    gen, order, losses = torch.Generator().manual_seed(seed), torch.zeros(0, dtype=torch.long), []
    batch = min(BATCH, len(images))
    t0 = time.perf_counter()
    model.train()
    for _ in tqdm(range(steps), desc=f"bench tower {tower}", unit="step", disable=not progress):
        if len(order) < batch:  # a new pass over the images, in a new order
            order = torch.cat([order, torch.randperm(len(images), generator=gen)])
        idx, order = order[:batch], order[batch:]
        x = enc.to_pixels(torch.from_numpy(images[idx.numpy()]), side, mean, std)
        out = model(x)
        loss = sum(F.cross_entropy(h(out), labels[idx, k], ignore_index=-1) for k, h in enumerate(heads))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - t0
    model.eval()
    rng, scores = np.random.default_rng(seed), {}
    with torch.no_grad():
        feats = torch.cat(
            [
                model(enc.to_pixels(torch.from_numpy(test[i : i + 256]), side, mean, std))
                for i in range(0, len(test), 256)
            ]
        )
        for k, fact in enumerate(CATEGORICAL):
            held = [i for i, x in enumerate(test_facts) if x[fact] is not None]  # a zone where located
            if not held:  # a split too small to say anything of this fact
                continue
            pred = heads[k](feats[held]).argmax(1).tolist()  # a located pair read as "None" is wrong
            right = [classes[fact][p] == str(test_facts[i][fact]) for p, i in zip(pred, held, strict=True)]
            scores[fact] = scored(np.array(right, float), len(classes[fact]), resamples, rng)
    return {
        "tower": tower,
        "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": seconds,
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-10:])),
        "scores": scores,
    }


def bench_tower(
    runs: list[tuple[str, int]],
    profile: str = "default",
    params_dir: str | None = None,
    scratch: str | None = None,
    generated: int = 8000,
    split: str = "test",
    resamples: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> tuple[dict, dict]:
    if not settings(profile, params_dir).profile.generate:  # --data: a user's folder has no scene facts
        raise ValueError("bench tower measures the embedded default's encoder, whose data has scene facts")
    art = for_profile(profile, params_dir, progress=progress)
    side = enc.TINY_CLIP["vision_cfg"]["image_size"]
    own, own_facts = _split(art.preprocessed, "train", recorded_facts(art.data, "train"), side)
    test, test_facts = _split(art.preprocessed, split, recorded_facts(art.data, split), side)
    workers = art.settings.params.get("workers", 1)
    corpus = enc.generated_corpus(generated, side, workers, progress)[0] if generated else own[:0]
    facts = own_facts + [scene_facts(enc.CORPUS_SEED, i) for i in range(generated)]
    images = np.concatenate([own, corpus])
    classes = {f: sorted({str(x[f]) for x in facts}) for f in CATEGORICAL}  # a zone's "None": no location
    labels = _labels(facts, classes)
    root = resolve(scratch) if scratch else resolve(art.settings.params["work_dir"]) / "bench" / "tower"
    made_from = {
        "trained_on": split_digest(art.preprocessed, "train"),
        "scored_on": split_digest(art.preprocessed, split),
        "generated": generated,
        "batch_size": BATCH,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "seed": seed,
        "resamples": resamples,
        "vision_cfg": enc.TINY_CLIP["vision_cfg"],
    }
    out = []
    for tower, steps in runs:
        done = root / f"{tower}-steps{steps}.json"
        kept = json.loads(done.read_text()) if done.is_file() else None
        if kept and kept.get("made_from") == made_from:  # the same run, from the same images and settings
            out.append(kept["result"])
            continue
        result = train_and_score(
            tower, steps, images, labels, classes, test, test_facts, seed, resamples, progress
        )
        write_json_atomic(done, {"made_from": made_from, "result": result})
        out.append(result)
    metrics = {"split": split, "pairs": len(images), "runs": out}
    config = {"profile": profile, "runs": [list(r) for r in runs], "split": split, "towers": TOWERS}
    config.update({k: v for k, v in made_from.items() if k not in ("trained_on", "scored_on")})
    config["scratch"] = shown(root)
    return metrics, config


def record(metrics: dict, config: dict, results_dir: str | Path, name: str, seed: int) -> Path:
    return write_results(resolve(results_dir), "tower", name, metrics, config, seed)


def table(metrics: dict) -> list[dict]:
    """One row per run: the tower, its steps and seconds a step, each fact's accuracy [95% interval]."""
    rows = []
    for r in metrics["runs"]:
        row = {"tower": r["tower"], "parameters": f"{r['parameters'] / 1e6:.1f}M", "steps": r["steps"]}
        row["s/step"] = f"{r['seconds'] / r['steps']:.2f}"
        row.update(accuracy_cells(r["scores"]))
        rows.append(row)
    return rows
