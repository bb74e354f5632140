"""Caption scores with pycocoevalcap (PTB tokenizer, BLEU-1..4, CIDEr-D) and mode-collapse measures.

Scale: pycocoevalcap's 0-1, everywhere in this study (papers often print x100).
"""

from __future__ import annotations

from collections import Counter


def tokenize(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """PTB-tokenised, lower-cased captions (Stanford's tokenizer, run through Java by pycocoevalcap)."""
    import shutil

    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if shutil.which("java") is None:
        raise RuntimeError("pycocoevalcap's PTB tokenizer needs Java: install a JRE (apt-get install default-jre-headless)")
    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def score(refs: dict[str, list[str]], hyps: dict[str, str]) -> dict[str, float]:
    """BLEU-1..4 and CIDEr-D of one generated caption per id against its references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if set(refs) != set(hyps):
        raise ValueError(f"references and hypotheses cover different ids ({len(refs)} vs {len(hyps)})")
    gts, res = tokenize(refs), tokenize({k: [v] for k, v in hyps.items()})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu{i + 1}": float(b) for i, b in enumerate(bleu)}, "cider": float(cider)}


def collapse(hyps: list[str]) -> dict[str, float]:
    """identical_share: share of generations that equal another generation; top_share: share of the
    single commonest one (the seed's "30% collapsed to the same text"); distinct-1/2: unique
    uni/bigrams over all uni/bigrams."""
    counts = Counter(hyps)
    words = [h.split() for h in hyps]
    unigrams = [w for ws in words for w in ws]
    bigrams = [tuple(ws[i:i + 2]) for ws in words for i in range(len(ws) - 1)]
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
