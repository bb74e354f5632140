from lib.evaluation.captions import collapse, most_frequent_caption, score

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
