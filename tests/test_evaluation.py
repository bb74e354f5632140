import pytest

from lib.evaluation import scores
from lib.evaluation.scores import collapse, most_frequent_caption, score, tokenize

REFS = {
    "a": ["Axial CT of the chest with a 12 mm nodule in the right upper lung zone."],
    "b": ["Plain radiograph of the knee showing no focal abnormality."],
    "c": ["H&E-stained section of liver showing an area of necrosis in the lower left of the field."],
}


def test_exact_captions_score_highest_and_a_constant_answer_scores_low():
    exact = score(REFS, {k: v[0] for k, v in REFS.items()})
    constant = score(REFS, dict.fromkeys(REFS, REFS["b"][0]))
    assert exact["bleu4"] > 0.99 and exact["bleu4"] > constant["bleu4"]
    assert exact["cider"] > constant["cider"]


def test_scores_refuse_mismatched_ids():
    import pytest

    with pytest.raises(ValueError, match="different ids"):
        score(REFS, {"a": "x"})


def test_collapse_counts_repeated_generations():
    m = collapse(["a b", "a b", "a b", "c d", "e"])
    assert m["identical_share"] == 3 / 5 and m["top_share"] == 3 / 5 and m["unique_captions"] == 3
    assert m["distinct1"] == 5 / 9 and m["distinct2"] == 2 / 4
    assert most_frequent_caption(["x", "y", "y"]) == "y"


HYPS = {
    "a": "Axial CT of the chest with a nodule.",
    "b": "Radiograph of the knee.",
    "c": "Section of liver with necrosis in the field.",
}


def test_scores_equal_pycocoevalcap_called_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = tokenize(REFS), tokenize({k: [v] for k, v in HYPS.items()})
    ours = score(REFS, HYPS)
    assert ours["bleu4"] == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    assert ours["cider"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert ours["rouge_l"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert ours["meteor"] == pytest.approx(Meteor().compute_score(gts, res)[0])
    assert 0 < ours["meteor"] < 1 and 0 < ours["rouge_l"] < 1  # pycocoevalcap's 0-1 scale for these
    # CIDEr-D runs 0-10: a caption equal to its reference scores 10
    assert score(REFS, {k: v[0] for k, v in REFS.items()}, meteor=False)["cider"] == pytest.approx(10.0)


def test_bootstrap_is_seeded_and_brackets_the_score():
    refs = {f"{k}{i}": v for i in range(3) for k, v in REFS.items()}
    hyps = {f"{k}{i}": v for i in range(3) for k, v in HYPS.items()}
    point = score(refs, hyps, meteor=False, resamples=60, seed=1)
    first = point["ci95"]
    assert first == score(refs, hyps, meteor=False, resamples=60, seed=1)["ci95"]
    assert first != score(refs, hyps, meteor=False, resamples=60, seed=2)["ci95"]
    assert set(first) == {"bleu4", "cider", "rouge_l"}  # no METEOR asked for, none resampled
    for k in first:
        lo, hi = first[k]
        assert lo <= point[k] <= hi and lo < hi
    exact = score(REFS, {k: v[0] for k, v in REFS.items()}, resamples=20)["ci95"]
    assert exact["bleu4"][0] > 0.99 and exact["rouge_l"] == [1.0, 1.0] and exact["meteor"][0] > 0.9
    # CIDEr-D keeps the whole reference set's document frequencies on every resample: an exact caption
    # scores 10 in each (recomputed on a resample such as [a, a, a], every n-gram would be in every
    # document, weigh nothing, and the exact captions would score 0)
    assert exact["cider"] == pytest.approx([10.0, 10.0])


def test_meteor_interval_brackets_the_corpus_score():
    refs = {f"{k}{i}": v for i in range(4) for k, v in REFS.items()}
    hyps = {f"{k}{i}": v for i in range(4) for k, v in HYPS.items()}
    s = score(refs, hyps, resamples=40)
    assert s["ci95"]["meteor"][0] <= s["meteor"] <= s["ci95"]["meteor"][1]


def test_diversity_on_constructed_captions():
    refs = ["Axial CT of the head.", "H&E section of liver.", "Knee radiograph."]  # 10 distinct words
    train = ["Knee radiograph."] * 3 + ["Axial CT of the head."] * 2 + ["Other."]
    hyps = ["Knee radiograph.", "Knee radiograph.", "Axial CT of the knee."]
    d = scores.diversity(hyps, refs, train, generic_top=1)
    assert scores.words("H&E section, 50 µm.") == ["h&e", "section", "50", "µm"]
    assert (d["vocab"], d["reference_vocab"], d["words_not_in_references"]) == (6, 10, 0)
    assert d["vocab_share"] == 0.6
    assert d["generic_share"] == 2 / 3 and d["reference_generic_share"] == 1 / 3  # "Knee radiograph." only
    assert d["mean_words"] == 3 and d["reference_mean_words"] == pytest.approx(11 / 3)
    assert d["length_ratio"] == pytest.approx(9 / 11)


def test_scores_by_group_equal_scores_of_each_group():
    refs = {f"{k}{i}": v for i in range(2) for k, v in REFS.items()}
    hyps = {f"{k}{i}": v for i in range(2) for k, v in HYPS.items()}
    groups = {k: "ct" if k.startswith("a") else "other" for k in refs}
    out = scores.by_group(refs, hyps, groups)
    assert {g: v["n"] for g, v in out.items()} == {"ct": 2, "other": 4}
    for g, v in out.items():
        ids = [k for k in refs if groups[k] == g]
        alone = score({k: refs[k] for k in ids}, {k: hyps[k] for k in ids}, meteor=False)
        assert v["bleu4"] == pytest.approx(alone["bleu4"]) and v["cider"] == pytest.approx(alone["cider"])


def test_reference_agreement_needs_several_references():
    assert scores.reference_agreement({"x": ["a b c"], "y": ["d e f"]})["images"] == 0
    same = scores.reference_agreement({"x": [REFS["a"][0]] * 2, "y": [REFS["b"][0]] * 3, "z": ["only one"]})
    assert same["images"] == 2 and same["bleu4"] > 0.99 and same["rouge_l"] == pytest.approx(1)
