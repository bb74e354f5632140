"""Factual correctness on the embedded default: what a caption states, read with the generator's own
grammar, scored against the facts of the scene its image was drawn from.

This is the default's counterpart of the factual metrics of radiology report generation (CheXbert and
RadGraph F1 compare the findings a report states with the reference's). Here the truth is exact: the
generator records every pair's scene (``lib.data.scenes.facts``). Real data has no such facts, so on
it these scores are absent.

Each caption is read into statements (modality=ct, finding=nodule, zone=upper left, size=12, arrow,
panel=B, scale bar). A statement is right when the scene has it; precision is right statements over
statements made, recall right statements over the scene's facts, per fact and over the four
categorical facts together (modality, region, finding, location). A size is right within
``SIZE_TOLERANCE`` of the true one.
"""

from __future__ import annotations

import re

import numpy as np

from lib.data.scenes import INTROS, PATIENT_SIDE, REGIONS

CATEGORICAL = ("modality", "region", "finding", "zone")
MARKS = ("arrow", "panel", "scale_bar")
FACTS = (*CATEGORICAL, "size", *MARKS)
# The tiny encoder sees 96-px images: a 10 mm nodule in a 220 mm field is ~4 px across, so one pixel is
# ~25% of a small lesion's size; the tolerance allows that and no more.
SIZE_TOLERANCE = 0.25

# Every opening the generator writes, longest first (so "Contrast-enhanced CT of the chest" wins over a
# shorter prefix), with the modality and region it names.
_INTROS = sorted(
    (
        (template.format(region=r, Region=r.capitalize()).lower(), m, r)
        for m, templates in INTROS.items()
        for template in templates
        for r in REGIONS[m]
    ),
    key=lambda t: -len(t[0]),
)
# Phrases naming each finding, in either branch of the generator (radiology, microscopy, histology).
_FINDING = (
    ("no focal abnormality", "normal"),
    ("normal tissue architecture", "normal"),
    ("calcification", "calcification"),
    ("nest of tumour cells", "tumour"),
    ("inflammatory infiltrate", "infiltrate"),
    ("necrosis", "necrosis"),
    ("cluster of cells", "cluster"),
    ("densely packed", "dense"),
    ("sparse", "sparse"),
    ("nodule", "nodule"),
    ("cyst", "cyst"),
    ("mass", "mass"),
)
_SIDE = {v: k for k, v in PATIENT_SIDE.items()}  # patient's side -> the image's zone


def stated(caption: str) -> dict:
    """The facts a caption states, in ``lib.data.scenes.facts``'s form; None (or False) where it states
    none. Reads the generator's phrasing; anything else states nothing."""
    text = caption.strip()
    out: dict = dict.fromkeys(FACTS)
    panel = re.match(r"\(([A-D])\)\s*", text)
    if panel:
        out["panel"], text = panel.group(1), text[panel.end() :]
    low = text.lower()
    for intro, modality, region in _INTROS:
        if low.startswith(intro):
            out["modality"], out["region"] = modality, region
            break
    for phrase, finding in _FINDING:
        if phrase in low:
            out["finding"] = finding
            break
    size = re.search(r"(\d+)\s*(?:mm|µm)", re.sub(r"scale bar,?\s*\d+\s*µm", "", low))
    out["size"] = int(size.group(1)) if size else None
    side = re.search(r"in the (right|left) (upper|lower)\b", low)
    field = re.search(r"in the (upper left|upper right|lower left|lower right) of the field", low)
    if side:
        out["zone"] = _SIDE[f"{side.group(1)} {side.group(2)}"]
    elif field:
        out["zone"] = field.group(1)
    elif "centrally" in low or "in the centre of the field" in low:
        out["zone"] = "central"
    out["arrow"] = "(arrow)" in low
    out["scale_bar"] = "scale bar" in low
    return out


def _counts(said: dict, truth: dict) -> np.ndarray:
    """[fact, (right, stated, true)] of one caption."""
    rows = []
    for f in FACTS:
        s, t = said.get(f), truth.get(f)
        if f == "size":
            right = s is not None and t is not None and abs(s - t) <= SIZE_TOLERANCE * t
        else:
            right = bool(s) and s == t
        rows.append((right, bool(s), bool(t)))  # sizes are >= 1: stated means not None / False
    return np.asarray(rows, dtype=np.int64)


def _f1(c: np.ndarray) -> tuple[float, float, float]:
    """precision, recall, F1 of summed (right, stated, true) counts; NaN where nothing was stated/true."""
    right, said, true = (float(x) for x in c)
    p = right / said if said else float("nan")
    r = right / true if true else float("nan")
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0) if said and true else float("nan")


def hallucinated(said: dict, truth: dict) -> bool:
    """The caption states an abnormality (any finding but 'normal') that the image does not have."""
    return said["finding"] not in (None, "normal") and said["finding"] != truth["finding"]


def score_facts(
    hyps: dict[str, str], truth: dict[str, dict], resamples: int = 0, seed: int = 0
) -> dict | None:
    """Per-fact precision, recall and F1, the categorical F1 (modality, region, finding, location), the
    F1 over every fact, and the hallucination rate, of ``hyps`` (caption by pair id) against ``truth``
    (scene facts by pair id). With ``resamples``, 95% percentile intervals of the F1s and the rate over
    resamples of the pairs (seeded, as the caption scores' are). None where the pairs have no facts."""
    ids = [i for i in hyps if i in truth]
    if not ids:
        return None
    if len(ids) < len(hyps):
        raise ValueError(f"{len(hyps) - len(ids)} of {len(hyps)} captions have no recorded facts")
    said = [stated(hyps[i]) for i in ids]
    counts = np.stack([_counts(s, truth[i]) for s, i in zip(said, ids, strict=True)])  # [pair, fact, 3]
    halluc = np.array([hallucinated(s, truth[i]) for s, i in zip(said, ids, strict=True)], dtype=float)
    cat = [FACTS.index(f) for f in CATEGORICAL]

    def summary(c: np.ndarray, h: np.ndarray) -> dict[str, float]:
        total = c.sum(0)
        return {
            "categorical_f1": _f1(total[cat].sum(0))[2],
            "all_f1": _f1(total.sum(0))[2],
            "hallucination_rate": float(h.mean()),
        }

    out: dict = {"pairs": len(ids), "size_tolerance": SIZE_TOLERANCE, **summary(counts, halluc)}
    total = counts.sum(0)
    out["per_fact"] = {
        f: dict(zip(("precision", "recall", "f1"), _f1(total[k]), strict=True)) | {"true": int(total[k][2])}
        for k, f in enumerate(FACTS)
    }
    if resamples:
        rng, draws = np.random.default_rng(seed), []
        for _ in range(resamples):
            pick = rng.integers(0, len(ids), len(ids))
            draws.append(summary(counts[pick], halluc[pick]))
        out["ci95"] = {
            k: [float(np.nanpercentile([d[k] for d in draws], q)) for q in (2.5, 97.5)] for k in draws[0]
        }
    return out
