"""Caption batches from the feature cache (or pixel shards), in an order that is a pure function of
(seed, micro-batch number): resuming at step k replays exactly the batches an uninterrupted run sees,
and each rank of a distributed run takes its own slice of the same global batch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch


class CaptionData:
    def __init__(self, root: str | os.PathLike, split: str, tokenizer, source: str = "features",
                 max_tokens: int = 64):
        """root: an ``encode`` output (source="features") or a ``preprocess`` output (source="pixels")."""
        if source not in ("features", "pixels"):
            raise ValueError(f"source must be 'features' or 'pixels', got {source!r}")
        self.root, self.source, self.tok, self.max_tokens = Path(root), source, tokenizer, max_tokens
        index = self.root / "index.jsonl"
        if not index.exists():
            raise FileNotFoundError(f"{index} is missing: run `python -m lib {'encode' if source == 'features' else 'preprocess'}` first")
        self.rows = [r for r in map(json.loads, open(index, encoding="utf-8")) if r["split"] == split]
        if not self.rows:
            raise ValueError(f"{index}: no pairs in split {split!r}")
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _array(self, shard: str) -> np.ndarray:
        if shard not in self._arrays:  # memory maps: the OS pages in what is read
            folder = "features" if self.source == "features" else "shards"
            self._arrays[shard] = np.load(self.root / folder / shard, mmap_mode="r")
        return self._arrays[shard]

    def tokens(self, caption: str) -> list[int]:
        ids = self.tok(caption).input_ids[: self.max_tokens - 1]  # <s> caption
        return ids + [self.tok.eos_token_id]

    def batch(self, indices) -> dict:
        rows = [self.rows[i] for i in indices]
        x = np.stack([self._array(r["shard"])[r["offset"]] for r in rows])
        ids = [self.tokens(r["caption"]) for r in rows]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), self.tok.pad_token_id)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, seq in enumerate(ids):
            input_ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
        key = "features" if self.source == "features" else "pixels"
        return {key: torch.from_numpy(x), "input_ids": input_ids, "attention_mask": mask,
                "ids": [r.get("id", r["image"]) for r in rows]}


class Order:
    """Which rows micro-batch m holds: epoch e = m // per_epoch is a seeded permutation of all rows."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} must divide evenly over {world} ranks")
        self.n, self.bs, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.per_epoch = n // batch_size  # drop the ragged tail: every step sees a full batch
        if self.per_epoch == 0:
            raise ValueError(f"batch size {batch_size} exceeds the {n} training pairs")
        self._perm: tuple[int, torch.Tensor] | None = None

    def indices(self, m: int) -> list[int]:
        epoch, k = divmod(m, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch)))
        batch = self._perm[1][k * self.bs:(k + 1) * self.bs]
        share = self.bs // self.world
        return batch[self.rank * share:(self.rank + 1) * share].tolist()
