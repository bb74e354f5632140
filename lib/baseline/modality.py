"""Image-modality classification, the study's CPU baseline and its neural reference points.

Three classifiers on the same train/test split:
- hand-crafted features (``features.py``, joblib) + XGBoost ``hist``: the seed's CPU baseline;
- CLIP zero-shot: prompt templates per modality, no training (the MMML paper's CLIP experiment);
- a linear probe (logistic regression) on the frozen CLIP image embeddings of the feature cache.
Plus the n_jobs scaling of feature extraction and of XGBoost training.

Labels come from ``lib.data.modality``: the dataset's field, or the one modality a caption names.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from xgboost import XGBClassifier

from lib.models.encoder import create

# What the classes are called in zero-shot prompts: the words a caption uses for them.
NAMES = {
    "xray": "radiograph",
    "ct": "CT",
    "mri": "MRI",
    "ultrasound": "ultrasound",
    "microscopy": "fluorescence micrograph",
    "histology": "H&E-stained histology section",
}
TEMPLATES = ("{}", "a {} image", "{} of the patient", "a medical figure: {}", "an example of a {}")


def scores(truth: list[str], pred: list[str], classes: list[str]) -> dict:
    """Accuracy, macro-F1 (every class weighs the same, however rare), per-class recall, confusion
    matrix (rows: true class, columns: predicted, in ``classes`` order)."""
    cm = confusion_matrix(truth, pred, labels=classes)
    recall = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, labels=classes, average="macro", zero_division=0)),
        "recall": dict(zip(classes, map(float, recall), strict=True)),
        "confusion": cm.tolist(),
        "classes": classes,
        "n": len(truth),
    }


def xgboost(
    x_train, y_train, x_test, classes: list[str], n_jobs: int = 1, seed: int = 0, rounds: int = 200
) -> tuple[list[str], float]:
    """Predicted classes of ``x_test`` from an XGBoost ``hist`` model, and its training seconds."""
    code = {c: i for i, c in enumerate(classes)}
    model = XGBClassifier(
        tree_method="hist",
        n_estimators=rounds,
        max_depth=6,
        learning_rate=0.1,
        subsample=0.9,
        colsample_bytree=0.9,
        n_jobs=n_jobs,
        random_state=seed,
    )
    t0 = time.perf_counter()
    model.fit(x_train, np.asarray([code[y] for y in y_train]))
    seconds = time.perf_counter() - t0
    return [classes[i] for i in model.predict(x_test)], seconds


def linear_probe(x_train, y_train, x_test, seed: int = 0) -> tuple[list[str], float]:
    """Logistic regression on L2-normalised embeddings (CLIP's linear-probe protocol)."""
    norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-8)  # noqa: E731
    model = LogisticRegression(max_iter=3000, C=10.0, random_state=seed)
    t0 = time.perf_counter()
    model.fit(norm(x_train), y_train)
    return list(model.predict(norm(x_test))), time.perf_counter() - t0


def prompt_embeddings(encoder: str, classes: list[str], templates: tuple[str, ...] = TEMPLATES) -> np.ndarray:
    """[templates, classes, D] L2-normalised text embeddings of every template filled with every
    class name, from the CLIP text tower."""
    model, tokenizer = create(encoder)
    model.eval()
    with torch.no_grad():
        text = torch.stack(
            [
                model.encode_text(tokenizer([t.format(NAMES.get(c, c)) for c in classes])).float()
                for t in templates
            ]
        )
    return (text / text.norm(dim=-1, keepdim=True)).numpy()


def zero_shot(
    image_emb: np.ndarray, encoder: str, classes: list[str], templates: tuple[str, ...] = TEMPLATES
) -> tuple[list[str], dict[str, list[str]]]:
    """Each image's class by cosine similarity to the mean text embedding of its prompts (CLIP's
    prompt ensembling), and the predictions of each template alone, to show how much wording moves
    the result: {template: predictions}."""
    text = prompt_embeddings(encoder, classes, templates)
    img = np.asarray(image_emb, dtype=np.float32)
    img = img / np.linalg.norm(img, axis=1, keepdims=True).clip(1e-8)
    pick = lambda t: [classes[i] for i in (img @ t.T).argmax(1)]  # noqa: E731
    ensemble = text.mean(0)
    ensemble /= np.linalg.norm(ensemble, axis=1, keepdims=True)
    return pick(ensemble), {t: pick(e) for t, e in zip(templates, text, strict=True)}


def pooled(features: np.ndarray) -> np.ndarray:
    """[n, T, D] cached features -> [n, D]: the CLIP embedding (T=1) or the mean patch token."""
    return np.asarray(features, dtype=np.float32).mean(axis=1)


def scaling(timings: dict[int, float], items: int | None = None, unit: str = "images") -> list[dict]:
    """{n_jobs: seconds} -> rows with speed-up over n_jobs=1, efficiency (speed-up / n_jobs) and,
    given how many ``items`` each run did, their rate (``<unit>_per_s``)."""
    if 1 not in timings:
        raise ValueError(f"scaling is measured against n_jobs=1, which is not among {sorted(timings)}")
    base = timings[1]
    return [
        {
            "n_jobs": n,
            "seconds": s,
            "speedup": base / s,
            "efficiency": base / s / n,
            **({f"{unit}_per_s": items / s} if items else {}),
        }
        for n, s in sorted(timings.items())
    ]
