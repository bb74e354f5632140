"""The factual-correctness scorer: the caption reader against the generator, and scores of hand-written
captions whose right and wrong facts are known."""

import math

import numpy as np
import pytest

from lib.data.scenes import caption, facts, sample_scene
from lib.evaluation.facts import CATEGORICAL, FACTS, hallucinated, score_facts, stated
from lib.evaluation.probe import probe_facts

# A chest CT with a 12 mm nodule on the image's upper left (the patient's right upper lung zone), arrowed.
TRUTH = {
    "modality": "ct",
    "region": "chest",
    "finding": "nodule",
    "zone": "upper left",
    "size": 12,
    "arrow": True,
    "panel": None,
    "scale_bar": False,
}


def test_the_reader_reads_back_every_fact_the_generator_writes():
    for i in range(3000):
        rng = np.random.default_rng([11, i])
        scene = sample_scene(rng)
        assert stated(caption(scene, rng)) == facts(scene), caption(scene, rng)


def test_hand_written_captions():
    right = stated("Chest CT showing a 14 mm nodule in the right upper lung zone (arrow).")
    assert right == {**TRUTH, "size": 14}  # scored right: within the tolerance of 12 mm
    wrong = stated("(B) Axial CT of the chest demonstrating a 20 mm mass in the left upper lung zone.")
    assert wrong == {
        **TRUTH,
        "finding": "mass",
        "zone": "upper right",
        "size": 20,
        "arrow": False,
        "panel": "B",
    }
    assert stated("Histology of the colon (H&E) showing normal tissue architecture. Scale bar, 50 µm.") == {
        **dict.fromkeys(FACTS),
        "modality": "histology",
        "region": "colon",
        "finding": "normal",
        "arrow": False,
        "scale_bar": True,
    }
    assert stated("a figure.") == {**dict.fromkeys(FACTS), "arrow": False, "scale_bar": False}
    assert hallucinated(wrong, TRUTH) and not hallucinated(right, TRUTH)
    assert not hallucinated(stated("Chest CT showing no focal abnormality."), TRUTH)  # a miss, not invented


def test_scores_of_known_right_and_wrong_facts():
    hyps = {
        "a": "Chest CT showing a 14 mm nodule in the right upper lung zone (arrow).",  # all 6 facts right
        "b": "(B) Axial CT of the chest demonstrating a 20 mm mass in the left upper lung zone.",
        "c": "Chest CT showing no focal abnormality.",
    }
    s = score_facts(hyps, dict.fromkeys(hyps, TRUTH))
    per = s["per_fact"]
    assert per["modality"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "true": 3}
    # finding: right in a, wrong in b and c (3 stated, 3 true, 1 right)
    assert per["finding"]["precision"] == pytest.approx(1 / 3) and per["finding"]["recall"] == pytest.approx(
        1 / 3
    )
    # zone: stated in a (right) and b (wrong), true in all three
    assert per["zone"]["precision"] == 0.5 and per["zone"]["recall"] == pytest.approx(1 / 3)
    # size: 14 is within 25% of 12, 20 is not; arrow: stated once, rightly, of 3; panel: stated, wrongly
    assert per["size"]["precision"] == 0.5 and per["arrow"]["precision"] == 1.0
    assert per["arrow"]["recall"] == pytest.approx(1 / 3) and per["arrow"]["f1"] == pytest.approx(0.5)
    assert per["panel"]["precision"] == 0.0 and math.isnan(per["panel"]["recall"])
    # categorical: right 3+3+1+1 = 8 of 3+3+3+2 = 11 stated and 12 true
    p, r = 8 / 11, 8 / 12
    assert s["categorical_f1"] == pytest.approx(2 * p * r / (p + r))
    assert s["hallucination_rate"] == pytest.approx(1 / 3)  # b invents a mass


def test_references_score_perfectly_with_intervals_and_real_data_has_no_facts():
    truth, hyps = {}, {}
    for i in range(200):
        rng = np.random.default_rng([5, i])
        scene = sample_scene(rng)
        truth[str(i)], hyps[str(i)] = facts(scene), caption(scene, rng)
    s = score_facts(hyps, truth, resamples=50)
    assert s["categorical_f1"] == s["all_f1"] == 1.0 and s["hallucination_rate"] == 0.0
    assert s["ci95"]["categorical_f1"] == [1.0, 1.0]
    assert all(s["per_fact"][f]["f1"] == 1.0 for f in CATEGORICAL)
    assert score_facts(hyps, {}) is None  # no recorded facts: nothing to score
    with pytest.raises(ValueError, match="no recorded facts"):
        score_facts(hyps, {"0": truth["0"]})


class _Split:
    """A split of cached features as ``image_vectors`` reads it: rows, and one [tokens, dim] item each."""

    def __init__(self, ids, features):
        self.rows, self._x = [{"id": i} for i in ids], dict(zip(ids, features, strict=True))

    def item(self, row):
        return self._x[row["id"]][None]


def test_the_probe_reads_a_fact_the_features_hold_and_not_one_they_do_not():
    from lib.data.scenes import FINDINGS

    classes = sorted({f for fs in FINDINGS.values() for f in fs})
    rng, truth, feats = np.random.default_rng(0), {}, {}
    for i in range(600):
        scene = sample_scene(np.random.default_rng([6, i]))
        truth[str(i)] = facts(scene)
        x = rng.normal(0, 0.3, 32)
        x[classes.index(scene.finding)] += 3.0  # the finding is in the features; the location is not
        feats[str(i)] = x.astype(np.float32)
    train, test = (_Split(ids, [feats[i] for i in ids]) for ids in (list(feats)[:400], list(feats)[400:]))
    probe = probe_facts(train, test, truth, resamples=50)
    located = sum(truth[r["id"]]["zone"] is not None for r in test.rows)
    assert probe["finding"]["accuracy"] > 0.95 and probe["finding"]["pairs"] == 200
    assert probe["zone"]["pairs"] == located < 200  # a location only where the finding has one
    assert probe["zone"]["accuracy"] < 0.45 and probe["zone"]["classes"] == 5  # chance is 1/5
    lo, hi = probe["finding"]["ci95"]
    assert lo <= probe["finding"]["accuracy"] <= hi
    assert probe_facts(train, test, {}) is None  # real data: no facts, no probe
