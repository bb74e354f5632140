"""Scores of a captioner on one split, against reference points on the same split.

``score_split``: the captioner and the most frequent training caption, with the diversity of both and
of the references (what `train` reports after training). ``evaluate_split``: all of that plus the
caption of the nearest training image by encoder feature (retrieval, no generation), a blind
captioner (the same recipe without the image) where one is given, reference against reference where
images have several, diversity, per-modality scores and generation throughput (what `evaluate`
records). Every pair is scored against all the captions its image has in the split, and, where the
data records scene facts (the embedded default), on the facts its caption states.
"""

from __future__ import annotations

import numpy as np
import torch

from lib.data.modality import label
from lib.evaluation.captioning import caption, throughput
from lib.evaluation.clipscore import ClipScorer
from lib.evaluation.facts import score_facts
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


def captions_by_image(split) -> dict[str, list[str]]:
    """Every caption each image of the split has."""
    by_image: dict[str, list[str]] = {}
    for r in split.rows:
        by_image.setdefault(r["image"], []).append(r["caption"])
    return by_image


def references(split) -> dict[str, list[str]]:
    """Every caption the pair's image has in the split, by pair id (a figure captioned twice is scored
    against both captions, for either of its pairs)."""
    by_image = captions_by_image(split)
    return {r["id"]: by_image[r["image"]] for r in split.rows}


def assess(
    refs: dict[str, list[str]],
    hyps: dict[str, str],
    truth: dict[str, dict] | None = None,
    resamples: int = 0,
    seed: int = 0,
    meteor: bool = True,
) -> dict:
    """One captioner's (or reference point's) caption scores, collapse and, where ``truth`` holds scene
    facts, factual correctness; with ``resamples``, seeded 95% bootstrap intervals of both."""
    return {
        **score(refs, hyps, meteor=meteor, resamples=resamples, seed=seed),
        **collapse(list(hyps.values())),
        **({"facts": score_facts(hyps, truth, resamples, seed)} if truth else {}),
    }


def score_split(
    vlm,
    train,
    test,
    device: str = "cpu",
    decoding: dict | None = None,
    resamples: int = 200,
    seed: int = 0,
    progress: bool = False,
    truth: dict[str, dict] | None = None,
) -> dict:
    """Scores of the captioner (with seeded 95% bootstrap intervals over ``resamples`` resamples of the
    test pairs) and of the most-frequent-caption baseline on ``test``. Every pair is captioned and
    scored once, by its id; a pair that would be dropped is an error. ``decoding``: keyword arguments
    of ``CaptionVLM.generate`` (``EvalConfig.decoding()``); ``truth``: scene facts by pair id."""
    torch.manual_seed(seed)  # nucleus sampling, if asked for, draws the same captions every time
    hyps, per_s = caption(vlm, test, device=device, progress=progress, **(decoding or {}))
    refs = references(test)
    if len(refs) != len(test.rows) or hyps.keys() != refs.keys():
        raise RuntimeError(
            f"{len(test.rows)} test pairs, {len(refs)} distinct ids, {len(hyps)} captions: "
            f"pairs would be dropped from the scores"
        )
    frequent = most_frequent_caption([r["caption"] for r in train.rows])
    own = {r["id"]: r["caption"] for r in test.rows}
    return {
        "model": {**assess(refs, hyps, truth, resamples, seed), "captions_per_s": per_s},
        "most_frequent": {
            **assess(refs, dict.fromkeys(refs, frequent), truth, resamples, seed),
            "caption": frequent,
        },
        # the same measures of the held-out references: the repetition the data itself has, and (a check of
        # the fact reader) their own facts
        "references": {
            **collapse(list(own.values())),
            **({"facts": score_facts(own, truth)} if truth else {}),
        },
        "captions": [{"id": k, "reference": own[k], "generated": hyps[k]} for k in refs],
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


def evaluate_split(
    vlm,
    train,
    test,
    cfg: EvalConfig,
    device: str = "cpu",
    progress: bool = True,
    truth: dict[str, dict] | None = None,
    blind: tuple | None = None,
    clip: ClipScorer | None = None,
) -> dict:
    """Everything `evaluate` records of a captioner on ``test`` (a CaptionData split of cached features).
    ``truth``: scene facts by pair id (None for real data); ``blind``: (a blind captioner, the test split
    as it sees it), scored as one more reference point; ``clip``: CLIP-S and RefCLIP-S of each."""
    base = score_split(
        vlm, train, test, device, cfg.decoding(), cfg.resamples, cfg.seed, progress=progress, truth=truth
    )
    refs = references(test)
    hyps = {c["id"]: c["generated"] for c in base["captions"]}
    train_caps, ref_list = [r["caption"] for r in train.rows], [c["reference"] for c in base["captions"]]
    points = {
        "model": hyps,
        "nearest_neighbour": nearest_captions(train, test),
        "most_frequent": dict.fromkeys(refs, base["most_frequent"]["caption"]),
    }
    record = {
        "model": {**base["model"], **diversity(list(hyps.values()), ref_list, train_caps)},
        "nearest_neighbour": {
            **assess(refs, points["nearest_neighbour"], truth, cfg.resamples, cfg.seed),
            **diversity(list(points["nearest_neighbour"].values()), ref_list, train_caps),
        },
    }
    if blind:
        torch.manual_seed(cfg.seed)
        points["blind"] = caption(blind[0], blind[1], device=device, progress=progress, **cfg.decoding())[0]
        record["blind"] = {
            **assess(refs, points["blind"], truth, cfg.resamples, cfg.seed),
            **diversity(list(points["blind"].values()), ref_list, train_caps),
            "image": blind[1].image,
        }
    record["most_frequent"] = base["most_frequent"]
    if clip:
        for w, p in points.items():
            record[w]["clip"] = clip.score(p, refs, cfg.resamples, cfg.seed)
    modality = {r["id"]: label(r)[0] or "unknown" for r in test.rows}
    by_image = captions_by_image(test)
    return {
        "split": cfg.split,
        "pairs": len(refs),
        "scale": "0-1 (pycocoevalcap's; papers often print x100)",
        "references_per_image": sum(map(len, by_image.values())) / len(by_image),
        **record,
        "references": base["references"],
        "reference_agreement": reference_agreement(by_image),
        "per_modality": {
            who: by_group(refs, hyps_, modality, truth, cfg.resamples, cfg.seed)
            for who, hyps_ in points.items()
        },
        "spice": SPICE,
        "throughput": throughput(vlm, test, cfg.throughput_images, device, cfg.decoding()),
        "captions": [
            {
                "id": i,
                "modality": modality[i],
                "reference": base["captions"][k]["reference"],
                **{
                    ("generated" if who == "model" else who): p[i]
                    for who, p in points.items()
                    if who != "most_frequent"
                },
            }
            for k, i in enumerate(refs)
        ],
    }
