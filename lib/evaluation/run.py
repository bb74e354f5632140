"""``python -m lib evaluate``: a trained checkpoint's captions of one split, scored against the
references and against reference points on the same split, with diversity, per-modality scores,
generation throughput and a gallery.

Reference points: the most frequent training caption (what a collapsed model says), the caption
of the nearest training image by encoder feature (retrieval, no generation), and where images
have several references, one reference against the others (the ceiling).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

SPICE = ("unavailable: SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads at first use; "
         "this machine is offline")


@dataclass
class EvalConfig:
    split: str = "test"
    num_beams: int = 1
    resamples: int = 200  # bootstrap resamples of the 95% intervals
    seed: int = 0
    throughput_images: int = 32  # images captioned one at a time without cache (the slow reference)
    gallery: int = 6  # images in the gallery figure, one per modality first


def image_vectors(data) -> np.ndarray:
    """One L2-normalised vector per row of a CaptionData split: its cached features, averaged over
    tokens (the CLIP embedding when the cache holds the pooled one)."""
    x = np.stack([data.item(r) for r in data.rows]).astype(np.float32).mean(axis=1)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-8)


def nearest_captions(train, test) -> dict[str, str]:
    """Each test image gets the caption of the most similar training image (cosine)."""
    a, b = torch.from_numpy(image_vectors(train)), torch.from_numpy(image_vectors(test))
    best = torch.cat([(b[i:i + 1024] @ a.T).argmax(1) for i in range(0, len(b), 1024)]).tolist()
    return {r["id"]: train.rows[j]["caption"] for r, j in zip(test.rows, best, strict=True)}


def throughput(vlm, data, n: int, device: str, num_beams: int = 1, repeats: int = 3) -> dict:
    """captions/s on the first ``n`` images: batched with the KV cache (how `evaluate` captions),
    one at a time with the cache, and one at a time recomputing every position (no cache). Each is
    timed ``repeats`` times, in turn, and the median is reported (one batch of a tiny model takes a
    fraction of a second: single timings swing with whatever else the machine does)."""
    from lib.captioner import caption

    idx = list(range(min(n, len(data))))
    ways = {"batched_kv_cache": (len(idx), True), "one_at_a_time_kv_cache": (1, True),
            "one_at_a_time_no_cache": (1, False)}
    for batch, cache in ways.values():  # warm-up: first-call allocations are not generation
        caption(vlm, data, batch_size=batch, num_beams=num_beams, device=device, indices=idx[:2], use_cache=cache)
    rates: dict[str, list[float]] = {k: [] for k in ways}
    captions = {}
    for _ in range(repeats):
        for name, (batch, cache) in ways.items():
            captions[name], per_s = caption(vlm, data, batch_size=batch, num_beams=num_beams, device=device,
                                            indices=idx, use_cache=cache)
            rates[name].append(per_s)
    base = captions["batched_kv_cache"]
    out = {"images": len(idx), "batch": len(idx), "repeats": repeats,
           **{k: {"captions_per_s": float(np.median(rates[k])), "runs": rates[k],
                  "same_captions_as_batched": sum(captions[k][i] == base[i] for i in base) / len(base)} for k in ways}}
    out["speedup"] = out["batched_kv_cache"]["captions_per_s"] / out["one_at_a_time_no_cache"]["captions_per_s"]
    return out


def evaluate(vlm, train, test, cfg: EvalConfig, device: str = "cpu", progress: bool = True) -> dict:
    from lib.captioner import evaluate as caption_and_score
    from lib.data.modality import label
    from lib.evaluation.captions import by_group, collapse, diversity, reference_agreement, score

    base = caption_and_score(vlm, train, test, device, num_beams=cfg.num_beams, resamples=cfg.resamples,
                             seed=cfg.seed, progress=progress)
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
        "split": cfg.split, "pairs": len(refs), "scale": "0-1 (pycocoevalcap's; papers often print x100)",
        "model": {**base["model"], **diversity(list(hyps.values()), ref_list, train_caps)},
        "nearest_neighbour": {**score(refs, nearest, resamples=cfg.resamples, seed=cfg.seed),
                              **collapse(list(nearest.values())), **diversity(list(nearest.values()), ref_list, train_caps)},
        "most_frequent": base["most_frequent"],
        "references": base["references"],
        "reference_agreement": reference_agreement(by_image),
        "per_modality": {"model": by_group(refs, hyps, modality), "nearest_neighbour": by_group(refs, nearest, modality),
                         "most_frequent": by_group(refs, frequent, modality)},
        "spice": SPICE,
        "throughput": throughput(vlm, test, cfg.throughput_images, device, cfg.num_beams),
        "captions": [{"id": i, "modality": modality[i], "reference": refs[i][0], "generated": hyps[i],
                      "nearest_neighbour": nearest[i]} for i in refs],
    }


WHO = ("model", "nearest_neighbour", "most_frequent")
DIVERSITY = ("identical_share", "top_share", "unique_captions", "distinct1", "distinct2", "vocab", "vocab_share",
             "generic_share", "mean_words", "length_ratio")


def scores_table(record: dict) -> list[dict]:
    """One row per captioner and reference point: each metric with its 95% interval where there is one."""
    rows = []
    for who in WHO:
        x = record[who]
        rows.append({"captions from": who.replace("_", " "),
                     **{k: f"{x[k]:.3f}" + (f" [{x['ci95'][k][0]:.3f}, {x['ci95'][k][1]:.3f}]" if k in x.get("ci95", {}) else "")
                        for k in ("bleu1", "bleu4", "meteor", "rouge_l", "cider")}})
    return rows


def diversity_table(record: dict) -> list[dict]:
    """Collapse and diversity of the captioner and of retrieval, beside the references' own."""
    m = record["model"]
    rows = [{"captions from": who.replace("_", " "), **{k: record[who].get(k) for k in DIVERSITY}}
            for who in WHO[:2]]
    refs = {**{k: record["references"].get(k) for k in DIVERSITY}, "vocab": m["reference_vocab"], "vocab_share": 1.0,
            "generic_share": m["reference_generic_share"], "mean_words": m["reference_mean_words"], "length_ratio": 1.0}
    return rows + [{"captions from": "references", **refs}]


def throughput_table(record: dict) -> list[dict]:
    return [{"decoding": k.replace("_", " "), "captions/s": v["captions_per_s"],
             "same captions as batched": v["same_captions_as_batched"]}
            for k, v in record["throughput"].items() if isinstance(v, dict)]


def gallery_items(captions: list[dict], preprocessed: Path, rows: list[dict], n: int = 6,
                  size: int = 160) -> list[dict]:
    """n captioned images for the gallery, one per modality first, each with a small PNG of the image
    as the model saw it (base64): the results file then holds all the gallery needs."""
    import base64
    import io

    from PIL import Image

    from lib.data.preprocess import open_shard

    where = {r["id"]: r for r in rows}
    by_modality: dict[str, list[dict]] = {}
    for c in captions:
        by_modality.setdefault(c["modality"], []).append(c)
    turns = [group[k] for k in range(max(map(len, by_modality.values())))  # round robin over modalities
             for _, group in sorted(by_modality.items()) if k < len(group)]
    items = []
    for c in turns[:n]:
        r = where[c["id"]]
        png = io.BytesIO()
        Image.fromarray(np.asarray(open_shard(preprocessed, r["shard"])[r["offset"]])).resize(
            (size, size), Image.BICUBIC).save(png, format="PNG", optimize=True)
        items.append({**c, "png_base64": base64.b64encode(png.getvalue()).decode("ascii")})
    return items


def gallery(items: list[dict], out: Path) -> Path:
    """Images with their reference, generated and retrieved captions (from ``gallery_items``)."""
    import base64
    import io
    import textwrap

    from PIL import Image

    from lib import plots

    fig, axes = plots.figure(ncols=3, nrows=(len(items) + 2) // 3, width=4.2, height=6.2)
    for ax in axes.flat:
        ax.axis("off")
    wrap = lambda s: "\n".join(textwrap.wrap(s, 48)[:3])  # noqa: E731
    for ax, c in zip(axes.flat, items, strict=False):
        ax.imshow(np.asarray(Image.open(io.BytesIO(base64.b64decode(c["png_base64"])))))
        ax.set_title(f"[{c['modality']}]", fontsize=8)
        ax.text(0, -0.02, f"reference: {wrap(c['reference'])}\n\ngenerated: {wrap(c['generated'])}\n\n"
                f"nearest image's: {wrap(c['nearest_neighbour'])}", transform=ax.transAxes, va="top", fontsize=6.5)
    return plots.save(fig, out)


def modality_figure(record: dict, out: Path) -> Path:
    """CIDEr-D and BLEU-4 per modality: the captioner against the two reference points."""
    from lib import plots

    groups = record["per_modality"]
    names = sorted(groups["model"])
    fig, axes = plots.figure(ncols=2, width=4.6)
    for ax, metric in zip(axes[0], ("cider", "bleu4"), strict=True):
        for k, who in enumerate(("model", "nearest_neighbour", "most_frequent")):
            ax.bar(np.arange(len(names)) + (k - 1) * 0.27, [groups[who][m][metric] for m in names], 0.27,
                   label=who.replace("_", " "))
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title({"cider": "CIDEr-D", "bleu4": "BLEU-4"}[metric] + f" by modality ({record['split']})")
    axes[0][0].legend(fontsize=7)
    return plots.save(fig, out)


def job(checkpoint: str, out: str, profile_name: str = "default", params_dir: str | None = None,
        cfg: EvalConfig | None = None, *, run_name: str | None = None, figures_dir: str | None = None,
        results_dir: str | None = None, device: str = "auto", progress: bool = True) -> tuple[dict, Path]:
    """Evaluate ``checkpoint`` (a run folder, its ckpt/ or a step-N folder, from any strategy) with the
    profile's model; write ``out/eval.json``, ``out/captions.jsonl`` and ``results/evaluation/<run>.json``."""
    from lib.captioner import build, prepare
    from lib.config import load_profile, resolve
    from lib.results import write_json_atomic, write_jsonl_atomic, write_results
    from lib.training.checkpoint import load_weights
    from lib.training.data import CaptionData

    cfg = cfg or EvalConfig()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    profile = load_profile(profile_name, params_dir)
    profile.apply_env()
    params = profile.notebook_params("train")
    art, spec = prepare(profile, params, progress=progress, pretrain_cfg=params.get("pretrain"))
    torch.manual_seed(cfg.seed)
    vlm, tok = build(spec, device=device)
    found = load_weights(vlm, resolve(checkpoint))
    train, test = CaptionData(art.features, "train", tok), CaptionData(art.features, cfg.split, tok)
    t0 = time.perf_counter()
    record = evaluate(vlm, train, test, cfg, device, progress)
    record["checkpoint"], record["seconds"] = str(found), time.perf_counter() - t0
    out_dir = resolve(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    captions = record.pop("captions")
    record["examples"] = captions[:8]  # all of them beside the run
    record["gallery"] = gallery_items(captions, art.preprocessed, test.rows, cfg.gallery)
    write_jsonl_atomic(out_dir / "captions.jsonl", captions)
    write_json_atomic(out_dir / "eval.json", record)
    if figures_dir:
        gallery(record["gallery"], resolve(figures_dir) / "07_gallery.png")
        modality_figure(record, resolve(figures_dir) / "07_per_modality.png")
    config = {"profile": profile_name, "checkpoint": str(found), "model": asdict(spec), "device": device, **asdict(cfg)}
    path = write_results(resolve(results_dir or params["results_dir"]), "evaluation", run_name or profile_name,
                         record, config, cfg.seed)
    return record, path
