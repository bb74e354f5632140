"""Caption lengths in BioMistral-7B's tokens: the real Mistral-7B v0.1 SentencePiece model from the
mistral-common wheel, offline; unreadable lines are counted, not scored."""

import json

import numpy as np

from lib.data.caption_tokens import (
    MISTRAL_VOCAB,
    caption_tokens,
    length_summary,
    mistral_tokenizer,
    split_caption_tokens,
)


def test_the_tokenizer_is_mistral_7b_v01s():
    sp = mistral_tokenizer()
    assert sp.get_piece_size() == MISTRAL_VOCAB == 32_000
    assert (sp.bos_id(), sp.eos_id()) == (1, 2)  # <s>, </s>: Mistral's ids, which BioMistral keeps
    # SentencePiece splits digits one by one: a size costs a token per digit
    assert sp.encode("a 26 mm nodule", out_type=str) == ["▁a", "▁", "2", "6", "▁mm", "▁nod", "ule"]


def test_counts_include_bos_and_eos_and_are_not_capped():
    text = "Axial CT of the chest showing a 12 mm nodule in the right upper lung zone."
    pieces = mistral_tokenizer().encode(text)
    assert caption_tokens([text, text * 10]).tolist() == [
        len(pieces) + 2,
        len(mistral_tokenizer().encode(text * 10)) + 2,
    ]
    s = length_summary(caption_tokens([text * 10, text]), limit=64)
    assert s["over_limit"] == 0.5 and s["max"] > 64 and s["captions"] == 2


def test_split_counts_skip_unreadable_lines(tmp_path):
    lines = [
        json.dumps({"image": "a.jpg", "caption": "Chest X-ray."}),
        "{not json",
        json.dumps({"image": "b.jpg", "caption": ""}),  # empty caption: validate rejects it too
        json.dumps({"image": "c.jpg", "caption": "Brain MRI with a mass."}),
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    counts, skipped = split_caption_tokens(tmp_path)
    assert skipped == 2
    assert counts.tolist() == caption_tokens(["Chest X-ray.", "Brain MRI with a mass."]).tolist()
    assert np.all(counts >= 3)
