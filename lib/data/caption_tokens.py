"""Caption lengths in BioMistral-7B's tokens, exact and offline.

BioMistral-7B keeps Mistral-7B v0.1's SentencePiece model (vocabulary 32,000). The ``mistral-common``
wheel ships that file as ``mistral_common/data/tokenizer.model.v1``, so real captions can be counted in
the tokens the cluster's LM trains on without downloading the model. The EDA reports these counts for
the profile's data (PMC-OA on the cluster profile), and ``bench lm --lengths`` draws its captions'
lengths from them instead of padding every caption to 64.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np

from lib.data.pmcoa import BadRecord, iter_lines, parse_record, split_files

MISTRAL_V1 = "tokenizer.model.v1"
MISTRAL_VOCAB = 32_000


@lru_cache(maxsize=1)
def mistral_tokenizer():
    """Mistral-7B v0.1's SentencePiece processor, from the file the mistral-common wheel ships."""
    import sentencepiece as spm

    path = files("mistral_common") / "data" / MISTRAL_V1
    if not path.is_file():
        raise FileNotFoundError(f"{path}: this mistral-common has no {MISTRAL_V1} (reinstall: make setup)")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    if sp.get_piece_size() != MISTRAL_VOCAB:
        raise ValueError(f"{path}: vocabulary {sp.get_piece_size()}, not Mistral-7B v0.1's {MISTRAL_VOCAB}")
    return sp


def caption_tokens(captions) -> np.ndarray:
    """Tokens each caption takes in a training sequence: <s>, its pieces, </s> (as ``CaptionData`` makes
    them), uncapped, so a length limit's truncation can be counted."""
    pieces = mistral_tokenizer().encode([str(c) for c in captions])
    return np.array([len(p) + 2 for p in pieces], dtype=np.int64)


def length_summary(lengths: np.ndarray, limit: int = 64) -> dict:
    """Mean, quantiles and the share a ``limit``-token cap would truncate (the training default)."""
    x = np.asarray(lengths)
    if not len(x):
        return {"captions": 0}
    q = np.percentile(x, [5, 25, 50, 75, 95, 99])
    return {
        "captions": len(x),
        "tokenizer": f"Mistral-7B v0.1 SentencePiece ({MISTRAL_V1}, vocabulary {MISTRAL_VOCAB})",
        "mean": float(x.mean()),
        **{f"p{p}": float(v) for p, v in zip((5, 25, 50, 75, 95, 99), q, strict=True)},
        "max": int(x.max()),
        "limit": limit,
        "over_limit": float((x > limit).mean()),
    }


def split_caption_tokens(data_dir: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, int]:
    """(token counts of the split's captions, lines skipped as unreadable) of a PMC-OA-format folder;
    the lines ``validate`` would reject are counted, not scored."""
    path = split_files(data_dir).get(split)
    if path is None:
        raise FileNotFoundError(f"{Path(data_dir) / (split + '.jsonl')}: no such split file")
    captions, skipped = [], 0
    for line, raw in iter_lines(path):
        try:
            captions.append(parse_record(split, line, raw).caption)
        except BadRecord:
            skipped += 1
    return caption_tokens(captions), skipped
