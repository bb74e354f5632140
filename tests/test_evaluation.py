import pytest

from lib.evaluation.captions import collapse, most_frequent_caption, score, tokenize

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


HYPS = {"a": "Axial CT of the chest with a nodule.", "b": "Radiograph of the knee.",
        "c": "Section of liver with necrosis in the field."}


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
    assert 0 < ours["meteor"] < 1 and 0 < ours["rouge_l"] < 1  # pycocoevalcap's 0-1 scale


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
