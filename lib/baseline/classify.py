"""The modality classifiers on one split (hand-crafted features + XGBoost, CLIP zero-shot, a linear
probe and XGBoost on CLIP embeddings), the n_jobs scaling of the CPU baseline, and their tables and
figures."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import seaborn as sns

from lib import plots
from lib.baseline import features as hand
from lib.baseline import modality as mod
from lib.config import shown
from lib.data.modality import TERMS, labelled
from lib.models.feature_cache import open_features
from lib.settings import BaselineConfig


def _rows(preprocessed: Path, split: str) -> list[dict]:
    return [
        r
        for r in map(json.loads, open(preprocessed / "index.jsonl", encoding="utf-8"))
        if r["split"] == split
    ]


def _cached(features: Path, rows: list[dict]) -> np.ndarray:
    return mod.pooled(np.stack([open_features(features, r["shard"])[r["offset"]] for r in rows]))


def classify(
    preprocessed: Path, pooled_features: Path, encoder: str, cfg: BaselineConfig, progress: bool = True
) -> dict:
    """Train on the train split, score on ``cfg.test_split``. ``pooled_features``: an ``encode
    --output pooled`` cache of the same shards (CLIP's joint image-text space, which zero-shot needs)."""
    if 1 not in cfg.n_jobs:
        raise ValueError(f"n_jobs {cfg.n_jobs} must include 1: speed-ups are measured against it")
    train, y_train, train_labels = labelled(_rows(preprocessed, "train"))
    test, y_test, test_labels = labelled(_rows(preprocessed, cfg.test_split))
    if not train or not test:
        raise ValueError(
            f"no labelled images to classify (train {train_labels}, {cfg.test_split} {test_labels})"
        )
    seen = set(y_train) | set(y_test)
    classes = [c for c in TERMS if c in seen] + sorted(seen - set(TERMS))

    # the CPU baseline: joblib feature extraction, then XGBoost, each timed at every n_jobs
    extracted, extract_s = None, {}
    for n in cfg.n_jobs:
        x, extract_s[n] = hand.extract(
            preprocessed, train + test, n_jobs=n, chunk=cfg.chunk, progress=progress
        )
        if extracted is not None and not np.array_equal(x, extracted):
            raise RuntimeError(f"features differ between n_jobs={cfg.n_jobs[0]} and {n}")
        extracted = x
    x_train, x_test = extracted[: len(train)], extracted[len(train) :]
    fit_s, predictions = {}, {}
    for n in cfg.n_jobs:
        predictions[n], fit_s[n] = mod.xgboost(
            x_train, y_train, x_test, classes, n_jobs=n, seed=cfg.seed, rounds=cfg.rounds
        )
    most = max(cfg.n_jobs)
    results = {
        "handcrafted_xgboost": {
            "features": f"{len(hand.NAMES)} hand-crafted",
            "train_s": fit_s[most],
            **mod.scores(y_test, predictions[most], classes),
        }
    }

    # neural reference points on the frozen encoder's image embeddings
    e_train, e_test = _cached(pooled_features, train), _cached(pooled_features, test)
    pred, seconds = mod.xgboost(
        e_train, y_train, e_test, classes, n_jobs=most, seed=cfg.seed, rounds=cfg.rounds
    )
    results["clip_xgboost"] = {
        "features": f"CLIP embedding ({e_train.shape[1]})",
        "train_s": seconds,
        **mod.scores(y_test, pred, classes),
    }
    pred, seconds = mod.linear_probe(e_train, y_train, e_test, seed=cfg.seed)
    results["clip_linear_probe"] = {
        "features": f"CLIP embedding ({e_train.shape[1]})",
        "train_s": seconds,
        **mod.scores(y_test, pred, classes),
    }
    pred, by_template = mod.zero_shot(e_test, encoder, classes)
    results["clip_zero_shot"] = {
        "features": f"CLIP embedding, {len(mod.TEMPLATES)} prompt templates",
        "train_s": 0.0,
        **mod.scores(y_test, pred, classes),
        "templates": {t: mod.scores(y_test, p, classes)["accuracy"] for t, p in by_template.items()},
    }
    return {
        "classifiers": results,
        "classes": classes,
        "labels": {"train": train_labels, cfg.test_split: test_labels},
        "pairs": {"train": len(train), cfg.test_split: len(test)},
        "majority_class_accuracy": max(y_test.count(c) for c in classes) / len(y_test),
        "scaling": {
            "features": mod.scaling(extract_s, len(extracted)),
            "xgboost": mod.scaling(fit_s),
            "images": len(train) + len(test),
            "training_rows": len(train),
            "same_predictions": all(predictions[n] == predictions[most] for n in cfg.n_jobs),
        },
    }


def config(cfg: BaselineConfig, preprocessed: Path, encoder: str) -> dict:
    return {
        **asdict(cfg),
        "preprocessed": shown(preprocessed),
        "encoder": encoder,
        "feature_names": hand.NAMES,
        "templates": list(mod.TEMPLATES),
        "class_names": mod.NAMES,
    }


TITLES = {
    "handcrafted_xgboost": "hand-crafted + XGBoost",
    "clip_xgboost": "CLIP embedding + XGBoost",
    "clip_linear_probe": "CLIP linear probe",
    "clip_zero_shot": "CLIP zero-shot",
}


def table(metrics: dict) -> list[dict]:
    return [
        {
            "classifier": TITLES.get(k, k),
            "features": r["features"],
            "accuracy": r["accuracy"],
            "macro_f1": r["macro_f1"],
            "train_s": r["train_s"],
        }
        for k, r in metrics["classifiers"].items()
    ]


def summary(metrics: dict) -> str:
    """A few lines for the terminal: each classifier's scores and the n_jobs speed-ups."""
    lines = [
        f"{r['classifier']:<26} accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  "
        f"train {r['train_s']:.2f} s"
        for r in table(metrics)
    ]
    lines += [
        f"{key} " + ", ".join(f"n_jobs={r['n_jobs']}: {r['speedup']:.2f}x" for r in metrics["scaling"][key])
        for key in ("features", "xgboost")
    ]
    return "\n".join(lines)


def figures(metrics: dict, out: str | Path, prefix: str = "03_baselines") -> list[Path]:
    """Row-normalised confusion matrices of every classifier, and the n_jobs scaling."""
    out, paths = Path(out), []
    names = list(metrics["classifiers"])
    fig, axes = plots.figure(ncols=len(names), width=3.3, height=3.3)
    for ax, name in zip(axes[0], names, strict=True):
        r = metrics["classifiers"][name]
        cm = np.asarray(r["confusion"], dtype=float)
        sns.heatmap(
            cm / cm.sum(axis=1, keepdims=True).clip(1),  # colour: the share of each true class
            annot=cm.astype(int),
            fmt="d",
            annot_kws={"fontsize": 7},
            mask=cm == 0,
            vmin=0,
            vmax=1,
            cmap="Blues",
            cbar=False,
            square=True,
            linewidths=0.5,
            xticklabels=r["classes"],
            yticklabels=r["classes"] if ax is axes[0][0] else False,
            ax=ax,
        )
        ax.tick_params(axis="x", labelrotation=60)
        ax.grid(False)
        ax.set_title(
            f"{TITLES.get(name, name)}\nacc {r['accuracy']:.2f}, macro-F1 {r['macro_f1']:.2f}", fontsize=8
        )
        ax.set_xlabel("predicted")
    axes[0][0].set_ylabel("true")
    paths.append(plots.save(fig, out / f"{prefix}_confusion.png"))

    fig, axes = plots.figure(ncols=2, width=3.6)
    for ax, key, what in zip(
        axes[0], ("features", "xgboost"), ("feature extraction (joblib)", "XGBoost training"), strict=True
    ):
        rows = metrics["scaling"][key]
        n = [r["n_jobs"] for r in rows]
        ax.plot(n, [r["speedup"] for r in rows], "o-", label="measured")
        ax.plot(n, n, ":", color="grey", label="ideal")
        ax.set_ylim(0, max(n) * 1.1)
        ax.set_xticks(n)
        ax.set_xlabel("n_jobs")
        ax.set_ylabel("speed-up over n_jobs=1")
        ax.set_title(what)
        ax.legend()
    paths.append(plots.save(fig, out / f"{prefix}_njobs.png"))
    return paths
