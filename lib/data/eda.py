"""Exploratory statistics of a validated PMC-OA index: captions, terms, modalities, image geometry.

Streams the clean index once; what it keeps grows with the number of pairs
only as two small integer arrays per pair (fine for the 1.65M release). The figures are drawn
from the summary alone (histogram counts, a fixed sample of image sizes), so ``python -m lib
report`` redraws them from the results file.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from lib import plots
from lib.data.caption_tokens import caption_tokens
from lib.data.pmcoa import read_index

WORD = re.compile(r"[a-zµ][a-zµ0-9\-]+")
# Function words and figure boilerplate: what is left is the medical vocabulary.
STOPWORDS = frozenset(
    """a an the and or of in on at to for with without by from as is are was were be been this that
    these those it its into than then there which who whom whose what when where while also both each
    other such no not only same so very can may show shows showing shown demonstrating demonstrates
    reveals revealed image images figure fig panel panels arrow arrows arrowhead left right upper lower
    central centre center about across scale bar representative respectively indicate indicates
    indicated see using used after before between within via per two three one mm µm cm field region
    zone""".split()
)


def _describe(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"count": 0}
    p = np.percentile(values, [5, 25, 50, 75, 95])
    return {
        "count": int(values.size),
        "mean": round(float(values.mean()), 2),
        "std": round(float(values.std()), 2),
        "min": int(values.min()),
        **{k: round(float(v), 2) for k, v in zip(("p5", "p25", "median", "p75", "p95"), p, strict=True)},
        "max": int(values.max()),
    }


def _histogram(values: np.ndarray, bins: int = 40) -> dict:
    counts, edges = np.histogram(values, bins=bins) if values.size else (np.zeros(0), np.zeros(1))
    return {"edges": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]}


def _sample(widths: np.ndarray, heights: np.ndarray, n: int = 2000) -> list[list[int]]:
    """A fixed (seeded) sample of image sizes: enough for a scatter plot, small at 1.65M pairs."""
    pick = (
        np.random.default_rng(0).permutation(len(widths))[:n] if len(widths) > n else np.arange(len(widths))
    )
    return [[int(widths[i]), int(heights[i])] for i in np.sort(pick)]


def summarize(index_path: str | os.PathLike, top_k: int = 25) -> tuple[dict, dict]:
    """(summary numbers for the results file, the raw arrays)."""
    captions, chars, words, widths, heights = [], [], [], [], []
    terms, modality, modes, formats, splits = Counter(), Counter(), Counter(), Counter(), Counter()
    for row in read_index(index_path):
        text = row["caption"]
        captions.append(text)
        chars.append(len(text))
        words.append(len(text.split()))
        terms.update(w for w in WORD.findall(text.lower()) if w not in STOPWORDS and not w.isdigit())
        modality[row.get("modality") or "unknown"] += 1
        widths.append(row["width"])
        heights.append(row["height"])
        modes[row["mode"]] += 1
        formats[row["format"]] += 1
        splits[row["split"]] += 1
    arrays = {
        k: np.asarray(v, dtype=np.int64)
        for k, v in {"chars": chars, "words": words, "width": widths, "height": heights}.items()
    }
    arrays["tokens"] = caption_tokens(captions) if captions else np.zeros(0, dtype=np.int64)
    n = len(chars)
    summary = {
        "pairs": n,
        "splits": dict(splits),
        "caption_chars": _describe(arrays["chars"]),
        "caption_words": _describe(arrays["words"]),
        # in BioMistral-7B's tokens, <s> and </s> included: what a training sequence holds
        "caption_tokens": _describe(arrays["tokens"]),
        "top_terms": terms.most_common(top_k),
        "vocabulary_size": len(terms),
        "modalities": dict(modality.most_common()),
        "image_width": _describe(arrays["width"]),
        "image_height": _describe(arrays["height"]),
        "colour_modes": {m: {"count": c, "share": round(c / n, 4)} for m, c in modes.most_common()}
        if n
        else {},
        "formats": dict(formats.most_common()),
        "histograms": {k: _histogram(arrays[k]) for k in ("chars", "words")},
        "image_size_sample": _sample(arrays["width"], arrays["height"]),
    }
    return summary, arrays


def figures(summary: dict, out_dir: str | os.PathLike, prefix: str = "01_eda") -> list[Path]:
    """The EDA figures from a summary (a results file's metrics), written to ``out_dir``; returns their
    paths."""
    out_dir = Path(out_dir)
    paths = []

    fig, ax = plots.figure(ncols=2)
    for a, key, label in ((ax[0, 0], "chars", "characters"), (ax[0, 1], "words", "words")):
        h = summary["histograms"][key]
        a.stairs(h["counts"], h["edges"], fill=True, color="#4C72B0")
        median = summary[f"caption_{key}"].get("median", 0)
        a.axvline(median, color="k", ls="--", lw=1, label=f"median {median:.0f}")
        a.set(xlabel=f"caption length ({label})", ylabel="pairs")
        a.legend()
    paths.append(plots.save(fig, out_dir / f"{prefix}_caption_length.png"))

    fig, ax = plots.figure(ncols=2, width=5.5)
    terms = summary["top_terms"][:20][::-1]
    ax[0, 0].barh([t for t, _ in terms], [c for _, c in terms], color="#55A868")
    ax[0, 0].set(xlabel="occurrences", title="most frequent medical terms")
    mods = summary["modalities"]
    ax[0, 1].bar(list(mods), list(mods.values()), color="#C44E52")
    ax[0, 1].set(ylabel="pairs", title="modalities")
    ax[0, 1].tick_params(axis="x", rotation=30)
    paths.append(plots.save(fig, out_dir / f"{prefix}_terms_modalities.png"))

    fig, ax = plots.figure(ncols=2)
    sizes = np.asarray(summary["image_size_sample"]).reshape(-1, 2)
    ax[0, 0].scatter(sizes[:, 0], sizes[:, 1], s=3, alpha=0.3, color="#8172B2")
    ax[0, 0].set(
        xlabel="width (px)",
        ylabel="height (px)",
        title=f"mean {summary['image_width'].get('mean', 0):.0f} x "
        f"{summary['image_height'].get('mean', 0):.0f} px",
    )
    modes = summary["colour_modes"]
    ax[0, 1].bar(list(modes), [m["share"] * 100 for m in modes.values()], color="#937860")
    ax[0, 1].set(ylabel="% of images", title="colour modes (as stored)")
    paths.append(plots.save(fig, out_dir / f"{prefix}_images.png"))
    return paths
