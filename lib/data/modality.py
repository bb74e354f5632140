"""Image-modality labels: the dataset's ``modality`` field where it has one (the generated data
does); otherwise the one modality whose terms the caption names (PMC-OA has no labels). Captions
naming none or several are skipped and counted, never guessed."""

from __future__ import annotations

import re
from collections import Counter

# caption terms per modality, for data without labels; order is the order of classes in tables
TERMS = {
    "xray": r"radiograph|x-ray|xray|roentgen",
    "ct": r"\bct\b|computed tomograph",
    "mri": r"\bmri\b|\bmr image|magnetic resonance|\bt[12]-weighted|flair",
    "ultrasound": r"ultrasound|sonograph|doppler|echocardiogra",
    "microscopy": r"micrograph|microscop|confocal|fluorescen|immunofluorescen",
    "histology": r"h&e|histolog|haematoxylin|hematoxylin|stained section|biopsy",
}


def label(row: dict) -> tuple[str | None, str]:
    """(modality or None, where it came from or why there is none)."""
    if row.get("modality"):
        return row["modality"], "dataset"
    text = row["caption"].lower()
    found = [m for m, pattern in TERMS.items() if re.search(pattern, text)]
    if len(found) == 1:
        return found[0], "caption terms"
    return None, "no modality term in caption" if not found else "several modality terms in caption"


def labelled(rows: list[dict]) -> tuple[list[dict], list[str], dict]:
    """Rows with a label, their labels, and the counts of label sources and of skips by reason."""
    keep, labels, sources, skipped = [], [], Counter(), Counter()
    for r in rows:
        m, why = label(r)
        if m is None:
            skipped[why] += 1
            continue
        keep.append(r)
        labels.append(m)
        sources[why] += 1
    return keep, labels, {"sources": dict(sources), "skipped": dict(skipped)}
