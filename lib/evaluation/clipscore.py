"""CLIPScore and RefCLIPScore (Hessel et al., 2021) with the study's own image encoder, as the
ImageCLEFmedical caption task reports them: how well a caption matches its image in the encoder's joint
image-text space, with no reference (CLIP-S), and with the references too (RefCLIP-S).

CLIP-S(c, v) = 2.5 * max(cos(text(c), image(v)), 0); RefCLIP-S is the harmonic mean of CLIP-S and
max(max over references r of cos(text(c), text(r)), 0). On the default the encoder is the tiny CLIP
pre-trained on the training split; on a cluster, BiomedCLIP. Scores are comparable across captioners
with one encoder, not across encoders.
"""

from __future__ import annotations

import numpy as np
import torch

from lib.models.encoder import create

WEIGHT = 2.5  # Hessel et al.'s w: rescales CLIP-S to about 0-1 for their CLIP


class ClipScorer:
    """Image embeddings by pair id (a pooled feature cache) and the encoder's text tower."""

    def __init__(self, encoder: str, image_embeddings: dict[str, np.ndarray], batch_size: int = 256):
        self.model, self.tokenizer = create(encoder)
        self.model.eval()
        self.batch_size = batch_size
        self.images = {k: _unit(np.asarray(v, np.float32).reshape(-1)) for k, v in image_embeddings.items()}
        self._text: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def text(self, captions: list[str]) -> np.ndarray:
        """L2-normalised text embeddings, cached by caption (references are embedded once)."""
        new = sorted({c for c in captions if c not in self._text})
        for lo in range(0, len(new), self.batch_size):
            part = new[lo : lo + self.batch_size]
            emb = self.model.encode_text(self.tokenizer(part)).float().numpy()
            self._text.update(zip(part, map(_unit, emb), strict=True))
        return np.stack([self._text[c] for c in captions])

    def score(
        self, hyps: dict[str, str], refs: dict[str, list[str]], resamples: int = 0, seed: int = 0
    ) -> dict:
        """Mean CLIP-S and RefCLIP-S of ``hyps`` (caption by pair id), with seeded 95% percentile
        intervals over ``resamples`` resamples of the pairs."""
        ids = list(hyps)
        missing = [i for i in ids if i not in self.images]
        if missing:
            raise ValueError(f"{len(missing)} captions have no image embedding (e.g. {missing[0]})")
        c = self.text([hyps[i] for i in ids])
        v = np.stack([self.images[i] for i in ids])
        clip = WEIGHT * np.clip((c * v).sum(1), 0, None)
        ref = np.array([max(0.0, float((self.text(refs[i]) @ c[k]).max())) for k, i in enumerate(ids)])
        refclip = np.where(clip + ref > 0, 2 * clip * ref / np.maximum(clip + ref, 1e-12), 0.0)
        out = {"clip_s": float(clip.mean()), "refclip_s": float(refclip.mean())}
        if resamples:
            rng = np.random.default_rng(seed)
            picks = [rng.integers(0, len(ids), len(ids)) for _ in range(resamples)]
            out["ci95"] = {
                k: [float(np.percentile([x[p].mean() for p in picks], q)) for q in (2.5, 97.5)]
                for k, x in (("clip_s", clip), ("refclip_s", refclip))
            }
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-8)
