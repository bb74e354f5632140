"""What the frozen encoder's features hold, on the embedded default: a linear probe per categorical scene
fact, fit on the training split's cached features and scored on the evaluated split.

A captioner states a fact only as well as the features it reads hold it. Each probe's accuracy is a
reference its per-fact recall is read against: a captioner well below it does not use what its features
hold. It is not a strict bound: the probe reads the features linearly, and a non-linear reader (the
projector, nearest-neighbour retrieval) can read more. Real data has no scene facts: no probe.
"""

from __future__ import annotations

import numpy as np

from lib.baseline.modality import linear_probe
from lib.evaluation.evaluate import image_vectors
from lib.evaluation.facts import CATEGORICAL


def probe_facts(
    train, test, truth: dict[str, dict], resamples: int = 0, seed: int = 0
) -> dict[str, dict] | None:
    """Per categorical fact: the test accuracy of a logistic-regression probe on the cached features
    (``image_vectors``: the CLIP embedding, or patch tokens averaged; CLIP's linear-probe protocol), over
    the pairs whose scene has the fact (a zone only where the finding has a location, as the captions'
    recall counts it), with a 95% bootstrap interval over those pairs. A fact no test pair has, or with
    one class in training, is left out. ``truth``: scene facts by pair id, for both splits. None where
    the pairs have no facts."""
    if not all(r["id"] in truth for r in (*train.rows, *test.rows)):
        return None
    x_train, x_test = image_vectors(train), image_vectors(test)
    rng, out = np.random.default_rng(seed), {}
    for fact in CATEGORICAL:
        fit = [k for k, r in enumerate(train.rows) if truth[r["id"]][fact] is not None]
        held = [k for k, r in enumerate(test.rows) if truth[r["id"]][fact] is not None]
        y_train = [str(truth[train.rows[k]["id"]][fact]) for k in fit]
        y_test = np.array([str(truth[test.rows[k]["id"]][fact]) for k in held])
        if not held or len(set(y_train)) < 2:  # a split too small to say anything of this fact
            continue
        pred, _ = linear_probe(x_train[fit], y_train, x_test[held], seed)
        out[fact] = scored((np.asarray(pred) == y_test).astype(float), len(set(y_train)), resamples, rng)
    return out


def scored(right: np.ndarray, classes: int, resamples: int, rng: np.random.Generator) -> dict:
    """Accuracy over pairs (``right``: 1.0 where the fact was read right), with a 95% bootstrap interval
    over the pairs when ``resamples``."""
    out = {"accuracy": float(right.mean()), "pairs": len(right), "classes": classes}
    if resamples:
        draws = [right[rng.integers(0, len(right), len(right))].mean() for _ in range(resamples)]
        out["ci95"] = [float(np.percentile(draws, q)) for q in (2.5, 97.5)]
    return out


def accuracy_cells(scores: dict[str, dict]) -> dict[str, str]:
    """A table's cell per fact: accuracy [95% interval], two decimals."""
    cells = {}
    for fact, p in scores.items():
        ci = p.get("ci95")
        cells[fact] = f"{p['accuracy']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return cells
