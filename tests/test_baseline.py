"""The modality baselines: labels and skips, metrics and scaling arithmetic, hand-crafted features,
and all four classifiers on a constructed split whose answer is known."""

import json

import numpy as np
import pytest

from lib.baseline import modality
from lib.baseline.classify import classify, figures
from lib.baseline.features import NAMES, extract, image_features
from lib.data.modality import labelled
from lib.settings import BaselineConfig


def test_labels_come_from_the_dataset_or_one_caption_term_and_skips_are_counted():
    rows = [
        {"caption": "whatever", "modality": "ct"},
        {"caption": "Axial CT of the head."},
        {"caption": "Plain radiograph of the knee."},
        {"caption": "A diagram of the pathway."},
        {"caption": "CT and MRI of the brain."},
    ]
    keep, labels, info = labelled(rows)
    assert labels == ["ct", "ct", "xray"] and keep == rows[:3]
    assert info == {
        "sources": {"dataset": 1, "caption terms": 2},
        "skipped": {"no modality term in caption": 1, "several modality terms in caption": 1},
    }


def test_scores_on_a_known_confusion():
    s = modality.scores(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert s["accuracy"] == 0.75 and s["confusion"] == [[1, 1], [0, 2]]
    assert s["recall"] == {"a": 0.5, "b": 1.0}
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # F1(a) = 2/3, F1(b) = 2*(2/3)/(5/3)


def test_scaling_is_against_one_job():
    rows = modality.scaling({4: 4.0, 1: 10.0, 2: 6.0})
    assert [r["n_jobs"] for r in rows] == [1, 2, 4]
    assert [r["speedup"] for r in rows] == pytest.approx([1, 10 / 6, 2.5])
    assert [r["efficiency"] for r in rows] == pytest.approx([1, 10 / 12, 0.625])
    assert modality.scaling({1: 4.0, 2: 2.5}, items=100)[1]["images_per_s"] == 40
    with pytest.raises(ValueError, match="n_jobs=1"):
        modality.scaling({2: 1.0, 4: 0.6})


def test_hand_crafted_features_see_colour_darkness_and_texture():
    grey = np.full((64, 64, 3), 128, np.uint8)
    pink = grey.copy()
    pink[..., 0], pink[..., 1], pink[..., 2] = 230, 150, 200
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    f = {
        name: dict(zip(NAMES, image_features(x), strict=True))
        for name, x in (("grey", grey), ("pink", pink), ("black", grey * 0), ("noise", noise))
    }
    assert len(NAMES) == len(set(NAMES)) == 44
    assert f["grey"]["saturation"] == 0 and f["pink"]["saturation"] > 0.3
    assert f["black"]["dark"] == 1 and f["grey"]["dark"] == 0
    assert f["noise"]["grad_mean"] > 0.05 and f["grey"]["grad_mean"] == 0
    assert sum(f["noise"][f"hist{i:02d}"] for i in range(16)) == pytest.approx(1)


def _constructed(root, world, n_per_class=20, test_per_class=8):
    """Pink noisy 'histology' and smooth grey 'xray' images; their cached CLIP embeddings are the
    classes' own prompt embeddings plus a little noise, so every classifier has a known answer."""
    rng = np.random.default_rng(0)
    classes = ["xray", "histology"]
    text = modality.prompt_embeddings(f"local-dir:{world / 'encoder'}", classes).mean(0)
    images, emb, rows = [], [], []
    for c, cls in enumerate(classes):
        for i in range(n_per_class):
            img = np.full((32, 32, 3), 100 + i, np.uint8)
            if cls == "histology":
                img = (np.array([230, 150, 200]) - rng.integers(0, 60, (32, 32, 1))).astype(np.uint8)
            images.append(img)
            emb.append(text[c] + rng.normal(0, 0.002, text.shape[1]))
            rows.append(
                {
                    "id": f"{cls}{i}",
                    "image": f"{cls}{i}.jpg",
                    "caption": "a figure",
                    "modality": cls,
                    "split": "test" if i < test_per_class else "train",
                    "shard": "shard-00000.npy",
                    "offset": len(rows),
                }
            )
    (root / "pre" / "shards").mkdir(parents=True)
    (root / "feats" / "features").mkdir(parents=True)
    np.save(root / "pre" / "shards" / "shard-00000.npy", np.stack(images))
    np.save(root / "feats" / "features" / "shard-00000.npy", np.stack(emb)[:, None].astype(np.float16))
    (root / "pre" / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_every_classifier_gets_a_constructed_split_right(world, tmp_path):
    rows = _constructed(tmp_path, world)
    features, _ = extract(tmp_path / "pre", rows, n_jobs=2, chunk=7)
    assert np.array_equal(
        features[5], image_features(np.load(tmp_path / "pre" / "shards" / "shard-00000.npy")[5])
    )
    m = classify(
        tmp_path / "pre",
        tmp_path / "feats",
        f"local-dir:{world / 'encoder'}",
        BaselineConfig(n_jobs=(1, 2), rounds=20, chunk=7),
        progress=False,
    )
    assert m["classes"] == ["xray", "histology"] and m["pairs"] == {"train": 24, "test": 16}
    assert m["labels"]["train"] == {"sources": {"dataset": 24}, "skipped": {}}
    for name, r in m["classifiers"].items():
        assert (r["accuracy"], r["macro_f1"], r["confusion"]) == (1.0, 1.0, [[8, 0], [0, 8]]), name
    assert set(m["classifiers"]["clip_zero_shot"]["templates"]) == set(modality.TEMPLATES)
    assert [r["n_jobs"] for r in m["scaling"]["features"]] == [1, 2] and m["scaling"]["same_predictions"]
    assert m["majority_class_accuracy"] == 0.5
    paths = figures(m, tmp_path / "figures")
    assert all(p.stat().st_size > 1000 for p in paths)
