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

WHO = ("model", "nearest_neighbour", "most_frequent")
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


def scores_table(record: dict) -> list[dict]:
    """One row per captioner and reference point: each metric with its 95% interval where there is one."""
    rows = []
    for who in WHO:
        x = record[who]
        rows.append(
            {
                "captions from": who.replace("_", " "),
                **{
                    k: f"{x[k]:.3f}"
                    + (f" [{x['ci95'][k][0]:.3f}, {x['ci95'][k][1]:.3f}]" if k in x.get("ci95", {}) else "")
                    for k in ("bleu1", "bleu4", "meteor", "rouge_l", "cider")
                },
            }
        )
    return rows


def diversity_table(record: dict) -> list[dict]:
    """Collapse and diversity of the captioner and of retrieval, beside the references' own."""
    m = record["model"]
    rows = [
        {"captions from": who.replace("_", " "), **{k: record[who].get(k) for k in DIVERSITY}}
        for who in WHO[:2]
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
        f"{who:<18} BLEU-4 {m['bleu4']:.3f}  METEOR {m['meteor']:.3f}  ROUGE-L {m['rouge_l']:.3f}  "
        f"CIDEr-D {m['cider']:.3f}"
        for who, m in ((w, record[w]) for w in WHO)
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
            f"nearest image's: {wrap(c['nearest_neighbour'])}",
            transform=ax.transAxes,
            va="top",
            fontsize=6.5,
        )
    return plots.save(fig, out)


def modality_figure(record: dict, out: Path) -> Path:
    """CIDEr-D and BLEU-4 per modality: the captioner against the two reference points."""
    groups = record["per_modality"]
    names = sorted(groups["model"])
    fig, axes = plots.figure(ncols=2, width=4.6)
    for ax, metric in zip(axes[0], ("cider", "bleu4"), strict=True):
        for k, who in enumerate(("model", "nearest_neighbour", "most_frequent")):
            ax.bar(
                np.arange(len(names)) + (k - 1) * 0.27,
                [groups[who][m][metric] for m in names],
                0.27,
                label=who.replace("_", " "),
            )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title({"cider": "CIDEr-D", "bleu4": "BLEU-4"}[metric] + f" by modality ({record['split']})")
    axes[0][0].legend(fontsize=7)
    return plots.save(fig, out)
