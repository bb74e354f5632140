import numpy as np
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
    score(REFS, dict.fromkeys(REFS, "Knee MRI."))  # the process's METEOR scorer has scored before
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


def test_a_resample_scores_bleu_exactly_as_pycocoevalcap_scores_the_resampled_captions():
    from pycocoevalcap.bleu.bleu import Bleu

    # several references per image and hypotheses of every length around theirs (brevity penalty)
    refs = {
        f"{k}{i}": [*v, HYPS[k] + " extra words here"][: 1 + i % 2] for i in range(4) for k, v in REFS.items()
    }
    hyps = {f"{k}{i}": " ".join(HYPS[k].split()[: 3 + 2 * i]) for i in range(4) for k in REFS}
    gts, res = tokenize(refs), tokenize({k: [v] for k, v in hyps.items()})
    counts, ids = scores._bleu_counts(gts, res), list(gts)
    rng = np.random.default_rng(0)
    for _ in range(25):  # with replacement: a caption drawn twice counts twice
        pick = rng.integers(0, len(ids), len(ids))
        drawn = Bleu(4).compute_score(
            {str(j): gts[ids[i]] for j, i in enumerate(pick)},
            {str(j): res[ids[i]] for j, i in enumerate(pick)},
            verbose=0,
        )[0][3]
        assert scores._bleu4_of_counts(np.bincount(pick, minlength=len(ids)) @ counts) == drawn


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


def test_a_blind_view_shows_zeros_or_another_pairs_image_never_its_own(world):
    from lib.models.language import load_tokenizer
    from lib.training.data import CaptionData

    tok = load_tokenizer(str(world / "lm"))
    real = CaptionData(world / "features", "train", tok)
    zeros = CaptionData(world / "features", "train", tok, image="zeros")
    shuffled = CaptionData(world / "features", "train", tok, image="shuffled")
    seen = [np.asarray(real.item(r)) for r in real.rows]
    assert not np.any(zeros.batch(range(4))["features"].numpy())
    shown = [np.asarray(shuffled.item(r)) for r in real.rows]
    # a permutation of the split's images with no pair shown its own (rows may share an image's bytes)
    assert sorted(x.tobytes() for x in shown) == sorted(x.tobytes() for x in seen)
    assert all(shuffled._shown[r["id"]]["id"] != r["id"] for r in real.rows)
    assert [r["caption"] for r in shuffled.rows] == [r["caption"] for r in real.rows]  # captions stay
    with pytest.raises(ValueError, match="image must be one of"):
        CaptionData(world / "features", "train", tok, image="blank")


def test_clipscore_matches_its_definition_on_the_studys_encoder(world):
    """CLIP-S = 2.5 max(cos(caption, image), 0); RefCLIP-S = their harmonic mean with the best cosine
    to a reference (Hessel et al.): a reference scored against itself has cosine 1 there."""
    import json

    import torch

    from lib.evaluation.clipscore import ClipScorer
    from lib.models.feature_cache import encode, open_features

    encode(world / "pre", world / "pooled", f"local-dir:{world / 'encoder'}", output="pooled", progress=False)
    rows = [json.loads(line) for line in open(world / "pre" / "index.jsonl")][:20]
    images = {r["id"]: open_features(world / "pooled", r["shard"])[r["offset"]] for r in rows}
    scorer = ClipScorer(f"local-dir:{world / 'encoder'}", images)
    hyps = {r["id"]: r["caption"] for r in rows}
    s = scorer.score(hyps, {k: [v] for k, v in hyps.items()}, resamples=30)
    with torch.no_grad():
        text = scorer.model.encode_text(scorer.tokenizer(list(hyps.values()))).float()
    text = (text / text.norm(dim=-1, keepdim=True)).numpy()
    img = np.stack([images[k].reshape(-1) for k in hyps]).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    clip = 2.5 * np.clip((text * img).sum(1), 0, None)
    assert s["clip_s"] == pytest.approx(clip.mean(), abs=1e-5)
    assert s["refclip_s"] == pytest.approx(np.mean(2 * clip / (clip + 1)), abs=1e-5)
    assert s["ci95"]["clip_s"][0] <= s["clip_s"] <= s["ci95"]["clip_s"][1]
    with pytest.raises(ValueError, match="no image embedding"):
        scorer.score({"nope": "a caption"}, {"nope": ["a caption"]})
