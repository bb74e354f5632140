"""What an evaluation's results file shows: tables of scores, diversity and generation speed, the
gallery of captioned images and the per-modality figure. All drawn from the record alone (the gallery's
images are stored in it), so ``python -m lib report`` redraws them."""

from __future__ import annotations

import base64
import io
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from lib import plots
from lib.data.preprocess import open_shard

WHO = ("model", "blind", "nearest_neighbour", "most_frequent")  # blind: only where one was evaluated
DIVERSITY = (
    "identical_share",
    "top_share",
    "unique_captions",
    "distinct1",
    "distinct2",
    "vocab",
    "vocab_share",
    "generic_share",
    "mean_words",
    "length_ratio",
)


def present(record: dict) -> list[str]:
    """The captioner and the reference points this record has."""
    return [w for w in WHO if w in record]


def _with_interval(x: dict, k: str, ci: dict) -> str:
    return f"{x[k]:.3f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if k in ci else "")


def scores_table(record: dict) -> list[dict]:
    """One row per captioner and reference point: each metric with its 95% interval where there is one."""
    rows = []
    for w in present(record):
        x = record[w]
        rows.append(
            {
                "captions from": w.replace("_", " "),
                **{
                    k: _with_interval(x, k, x.get("ci95", {}))
                    for k in ("bleu1", "bleu4", "meteor", "rouge_l", "cider")
                },
                **{
                    k: _with_interval(x["clip"], k, x["clip"].get("ci95", {}))
                    for k in ("clip_s", "refclip_s")
                    if "clip" in x
                },
            }
        )
    return rows


def facts_table(record: dict) -> list[dict]:
    """Factual correctness of each captioner and reference point (the embedded default's scene facts):
    the categorical F1 (modality, region, finding, location), the F1 over every fact, the hallucination
    rate with intervals, and each fact's F1; empty for data without facts."""
    rows = []
    for w in [*present(record), "references"]:
        f = record[w].get("facts")
        if not f:
            continue
        ci = f.get("ci95", {})
        rows.append(
            {
                "captions from": w.replace("_", " "),
                **{k: _with_interval(f, k, ci) for k in ("categorical_f1", "all_f1", "hallucination_rate")},
                **{k: f["per_fact"][k]["f1"] for k in f["per_fact"]},
            }
        )
    return rows


def probe_table(record: dict) -> list[dict]:
    """Per categorical fact: what a linear probe reads from the frozen features beside how often each
    captioner and reference point states the fact right (its recall); empty without facts."""
    probe = record.get("encoder_probe") or {}
    return [
        {
            "fact": fact,
            "pairs": p["pairs"],
            "linear probe accuracy": _with_interval(
                p, "accuracy", {"accuracy": p["ci95"]} if "ci95" in p else {}
            ),
            **{
                f"{w.replace('_', ' ')} recall": round(record[w]["facts"]["per_fact"][fact]["recall"], 3)
                for w in present(record)
                if record[w].get("facts")
            },
        }
        for fact, p in probe.items()
    ]


def modality_table(record: dict) -> list[dict]:
    """One row per modality: its test pairs, and each captioner's CIDEr-D (and categorical fact F1 where
    the data records facts) with 95% intervals."""
    groups = record["per_modality"]
    rows = []
    for g in sorted(groups["model"]):
        row = {"modality": g, "pairs": groups["model"][g]["n"]}
        for w in [x for x in WHO if x in groups]:
            x = groups[w][g]
            row[f"{w.replace('_', ' ')} CIDEr-D"] = _with_interval(x, "cider", x.get("ci95", {}))
            if "categorical_f1" in x:
                row[f"{w.replace('_', ' ')} fact F1"] = _with_interval(x, "categorical_f1", x.get("ci95", {}))
        rows.append(row)
    return rows


def diversity_table(record: dict) -> list[dict]:
    """Collapse and diversity of the captioner and of every reference point, beside the references' own."""
    m = record["model"]
    rows = [
        {"captions from": w.replace("_", " "), **{k: record[w].get(k) for k in DIVERSITY}}
        for w in present(record)
    ]
    refs = {
        **{k: record["references"].get(k) for k in DIVERSITY},
        "vocab": m["reference_vocab"],
        "vocab_share": 1.0,
        "generic_share": m["reference_generic_share"],
        "mean_words": m["reference_mean_words"],
        "length_ratio": 1.0,
    }
    return rows + [{"captions from": "references", **refs}]


def throughput_table(record: dict) -> list[dict]:
    return [
        {
            "decoding": k.replace("_", " "),
            "captions/s": v["captions_per_s"],
            "same captions as batched": v["same_captions_as_batched"],
        }
        for k, v in record["throughput"].items()
        if isinstance(v, dict)
    ]


def summary(record: dict) -> str:
    """A few lines for the terminal: each captioner's scores, collapse, vocabulary, decoding speed."""
    lines = [
        f"{w:<18} BLEU-4 {m['bleu4']:.3f}  METEOR {m['meteor']:.3f}  ROUGE-L {m['rouge_l']:.3f}  "
        f"CIDEr-D {m['cider']:.3f}"
        + (f"  facts F1 {m['facts']['categorical_f1']:.3f}" if m.get("facts") else "")
        for w, m in ((w, record[w]) for w in present(record))
    ]
    m, t = record["model"], record["throughput"]
    lines.append(
        f"identical captions {m['identical_share']:.1%} (references "
        f"{record['references']['identical_share']:.1%}), vocabulary {m['vocab']}/{m['reference_vocab']}, "
        f"generic {m['generic_share']:.1%}; batched KV-cache generation {t['speedup']:.1f}x one-at-a-time "
        f"without cache"
    )
    return "\n".join(lines)


def gallery_items(
    captions: list[dict], preprocessed: Path, rows: list[dict], n: int = 6, size: int = 160
) -> list[dict]:
    """n captioned images for the gallery, one per modality first, each with a small PNG of the image
    as the model saw it (base64): the results file then holds all the gallery needs."""
    where = {r["id"]: r for r in rows}
    by_modality: dict[str, list[dict]] = {}
    for c in captions:
        by_modality.setdefault(c["modality"], []).append(c)
    turns = [
        group[k]
        for k in range(max(map(len, by_modality.values())))  # round robin over modalities
        for _, group in sorted(by_modality.items())
        if k < len(group)
    ]
    items = []
    for c in turns[:n]:
        r = where[c["id"]]
        png = io.BytesIO()
        Image.fromarray(np.asarray(open_shard(preprocessed, r["shard"])[r["offset"]])).resize(
            (size, size), Image.BICUBIC
        ).save(png, format="PNG", optimize=True)
        items.append({**c, "png_base64": base64.b64encode(png.getvalue()).decode("ascii")})
    return items


def gallery(items: list[dict], out: Path) -> Path:
    """Images with their reference, generated and retrieved captions (from ``gallery_items``)."""
    fig, axes = plots.figure(ncols=3, nrows=(len(items) + 2) // 3, width=4.2, height=6.2)
    for ax in axes.flat:
        ax.axis("off")
    wrap = lambda s: "\n".join(textwrap.wrap(s, 48)[:3])  # noqa: E731
    for ax, c in zip(axes.flat, items, strict=False):
        ax.imshow(np.asarray(Image.open(io.BytesIO(base64.b64decode(c["png_base64"])))))
        ax.set_title(f"[{c['modality']}]", fontsize=8)
        ax.text(
            0,
            -0.02,
            f"reference: {wrap(c['reference'])}\n\ngenerated: {wrap(c['generated'])}\n\n"
            f"nearest image's: {wrap(c['nearest_neighbour'])}"
            + (f"\n\nblind: {wrap(c['blind'])}" if "blind" in c else ""),
            transform=ax.transAxes,
            va="top",
            fontsize=6.5,
        )
    return plots.save(fig, out)


def modality_figure(record: dict, out: Path) -> Path:
    """CIDEr-D and the categorical fact F1 (BLEU-4 for data without facts) per modality, with 95%
    intervals where recorded: the captioner against the reference points."""
    groups = record["per_modality"]
    names = sorted(groups["model"])
    metrics = ("cider", "categorical_f1" if "categorical_f1" in groups["model"][names[0]] else "bleu4")
    points = [w for w in WHO if w in groups]
    width = 0.8 / len(points)
    fig, axes = plots.figure(ncols=2, width=4.6)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for k, w in enumerate(points):
            values = [groups[w][m][metric] for m in names]
            ci = [groups[w][m].get("ci95", {}).get(metric) for m in names]
            err = np.abs(np.array(ci).T - np.array(values)) if all(c is not None for c in ci) else None
            ax.bar(
                np.arange(len(names)) + (k - (len(points) - 1) / 2) * width,
                values,
                width,
                yerr=err,
                capsize=1.5,
                label=w.replace("_", " "),
            )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        title = {"cider": "CIDEr-D", "bleu4": "BLEU-4", "categorical_f1": "fact F1 (categorical)"}[metric]
        ax.set_title(f"{title} by modality ({record['split']})")
    axes[0][0].legend(fontsize=7)
    return plots.save(fig, out)
