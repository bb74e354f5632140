"""Scores of a captioner on one split, against reference points on the same split.

``score_split``: the captioner and the most frequent training caption, with the diversity of both and
of the references (what `train` reports after training). ``evaluate_split``: all of that plus the
caption of the nearest training image by encoder feature (retrieval, no generation), reference
against reference where images have several, diversity, per-modality scores and generation
throughput (what `evaluate` records).
"""

from __future__ import annotations

import numpy as np
import torch

from lib.data.modality import label
from lib.evaluation.captioning import caption, throughput
from lib.evaluation.scores import (
    by_group,
    collapse,
    diversity,
    most_frequent_caption,
    reference_agreement,
    score,
)
from lib.settings import EvalConfig

SPICE = (
    "unavailable: SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads at first use; "
    "this machine is offline"
)


def score_split(
    vlm,
    train,
    test,
    device: str = "cpu",
    num_beams: int = 1,
    resamples: int = 200,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Scores of the captioner (with seeded 95% bootstrap intervals over ``resamples`` resamples of the
    test pairs) and of the most-frequent-caption baseline on ``test``. Every pair is captioned and
    scored once, by its id; a pair that would be dropped is an error."""
    hyps, per_s = caption(vlm, test, num_beams=num_beams, device=device, progress=progress)
    refs = {r["id"]: [r["caption"]] for r in test.rows}
    if len(refs) != len(test.rows) or hyps.keys() != refs.keys():
        raise RuntimeError(
            f"{len(test.rows)} test pairs, {len(refs)} distinct ids, {len(hyps)} captions: "
            f"pairs would be dropped from the scores"
        )
    frequent = most_frequent_caption([r["caption"] for r in train.rows])
    return {
        "model": {
            **score(refs, hyps, resamples=resamples, seed=seed),
            **collapse(list(hyps.values())),
            "captions_per_s": per_s,
        },
        "most_frequent": {**score(refs, dict.fromkeys(refs, frequent)), "caption": frequent},
        # the same diversity measures on the held-out references: how much repetition the data itself has
        "references": collapse([v[0] for v in refs.values()]),
        "captions": [{"id": k, "reference": refs[k][0], "generated": hyps[k]} for k in refs],
        "test_pairs": len(refs),
    }


def image_vectors(data) -> np.ndarray:
    """One L2-normalised vector per row of a CaptionData split: its cached features, averaged over
    tokens (the CLIP embedding when the cache holds the pooled one)."""
    x = np.stack([data.item(r) for r in data.rows]).astype(np.float32).mean(axis=1)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-8)


def nearest_captions(train, test) -> dict[str, str]:
    """Each test pair gets the caption of the most similar training image (cosine)."""
    a, b = torch.from_numpy(image_vectors(train)), torch.from_numpy(image_vectors(test))
    best = torch.cat([(b[i : i + 1024] @ a.T).argmax(1) for i in range(0, len(b), 1024)]).tolist()
    return {r["id"]: train.rows[j]["caption"] for r, j in zip(test.rows, best, strict=True)}


def evaluate_split(vlm, train, test, cfg: EvalConfig, device: str = "cpu", progress: bool = True) -> dict:
    """Everything `evaluate` records of a captioner on ``test`` (a CaptionData split of cached features)."""
    base = score_split(
        vlm,
        train,
        test,
        device,
        num_beams=cfg.num_beams,
        resamples=cfg.resamples,
        seed=cfg.seed,
        progress=progress,
    )
    refs = {c["id"]: [c["reference"]] for c in base["captions"]}
    hyps = {c["id"]: c["generated"] for c in base["captions"]}
    train_caps, ref_list = [r["caption"] for r in train.rows], [v[0] for v in refs.values()]
    nearest = nearest_captions(train, test)
    modality = {r["id"]: label(r)[0] or "unknown" for r in test.rows}
    frequent = dict.fromkeys(refs, base["most_frequent"]["caption"])
    by_image: dict[str, list[str]] = {}
    for r in test.rows:
        by_image.setdefault(r["image"], []).append(r["caption"])
    return {
        "split": cfg.split,
        "pairs": len(refs),
        "scale": "0-1 (pycocoevalcap's; papers often print x100)",
        "model": {**base["model"], **diversity(list(hyps.values()), ref_list, train_caps)},
        "nearest_neighbour": {
            **score(refs, nearest, resamples=cfg.resamples, seed=cfg.seed),
            **collapse(list(nearest.values())),
            **diversity(list(nearest.values()), ref_list, train_caps),
        },
        "most_frequent": base["most_frequent"],
        "references": base["references"],
        "reference_agreement": reference_agreement(by_image),
        "per_modality": {
            "model": by_group(refs, hyps, modality),
            "nearest_neighbour": by_group(refs, nearest, modality),
            "most_frequent": by_group(refs, frequent, modality),
        },
        "spice": SPICE,
        "throughput": throughput(vlm, test, cfg.throughput_images, device, cfg.num_beams),
        "captions": [
            {
                "id": i,
                "modality": modality[i],
                "reference": refs[i][0],
                "generated": hyps[i],
                "nearest_neighbour": nearest[i],
            }
            for i in refs
        ],
    }
