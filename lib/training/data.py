"""Caption batches from the feature cache (or pixel shards), in an order that is a pure function of
(seed, micro-batch number): resuming at step k replays exactly the batches an uninterrupted run sees,
and each rank of a distributed run takes its own slice of the same global batch."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from lib.settings import IMAGES


class CaptionData:
    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        tokenizer,
        source: str = "features",
        max_tokens: int = 64,
        image: str = "real",
    ):
        """root: an ``encode`` output (source="features") or a ``preprocess`` output (source="pixels").
        image: "real", or what a blind captioner sees in its place: "zeros", or "shuffled" (the image of
        another pair of the split, by a fixed permutation)."""
        if source not in ("features", "pixels"):
            raise ValueError(f"source must be 'features' or 'pixels', got {source!r}")
        if image not in IMAGES:
            raise ValueError(f"image must be one of {', '.join(IMAGES)}, got {image!r}")
        self.root, self.source, self.tok, self.max_tokens = Path(root), source, tokenizer, max_tokens
        index = self.root / "index.jsonl"
        if not index.exists():
            raise FileNotFoundError(
                f"{index} is missing: run "
                f"`python -m lib {'encode' if source == 'features' else 'preprocess'}` first"
            )
        self.rows = [r for r in map(json.loads, open(index, encoding="utf-8")) if r["split"] == split]
        if not self.rows:
            raise ValueError(f"{index}: no pairs in split {split!r}")
        ids = Counter(r.get("id") for r in self.rows)
        if None in ids:
            raise ValueError(f"{index} predates pair ids: rebuild it (python -m lib preprocess, then encode)")
        if len(ids) < len(self.rows):  # captions and scores are keyed by id: a repeat would overwrite a pair
            raise ValueError(
                f"{index}: pair ids repeat ({', '.join(i for i, n in ids.items() if n > 1)[:200]})"
            )
        self._arrays: dict[str, np.ndarray] = {}
        self.image = image
        # "shuffled": pairs in a fixed random cycle, each shown the next one's image (never its own)
        order = np.random.default_rng(0).permutation(len(self.rows))
        self._shown = {
            self.rows[a]["id"]: self.rows[b] for a, b in zip(order, np.roll(order, -1), strict=True)
        }

    def __len__(self) -> int:
        return len(self.rows)

    def _array(self, shard: str) -> np.ndarray:
        if shard not in self._arrays:  # memory maps: the OS pages in what is read
            folder = "features" if self.source == "features" else "shards"
            self._arrays[shard] = np.load(self.root / folder / shard, mmap_mode="r")
        return self._arrays[shard]

    def item(self, row: dict) -> np.ndarray:
        """The cached features (or pixels) of one index row, as this view shows them (zeros, or another
        row's, for a blind captioner)."""
        if self.image == "shuffled":
            row = self._shown[row["id"]]
        x = self._array(row["shard"])[row["offset"]]
        return np.zeros_like(x) if self.image == "zeros" else x

    def tokens(self, caption: str) -> list[int]:
        ids = self.tok(caption).input_ids[: self.max_tokens - 1]  # <s> caption
        return ids + [self.tok.eos_token_id]

    def token_lengths(self) -> np.ndarray:
        """Tokens each row's caption takes in a batch (with <s> and </s>, at most max_tokens)."""
        if not hasattr(self, "_lengths"):
            ids = self.tok([r["caption"] for r in self.rows]).input_ids
            self._lengths = np.minimum(self.max_tokens, np.array([len(i) + 1 for i in ids]))
        return self._lengths

    def longest(self) -> int:
        """Tokens in the split's longest caption (with <s> and </s>), at most max_tokens: the one width
        a pipeline pads every batch to."""
        return int(self.token_lengths().max())

    def batch(self, indices, width: int | None = None) -> dict:
        """Right-padded to the longest caption, or to ``width`` (a pipeline needs one shape)."""
        rows = [self.rows[i] for i in indices]
        x = np.stack([self.item(r) for r in rows])
        ids = [self.tokens(r["caption"]) for r in rows]
        width = width or max(map(len, ids))
        input_ids = torch.full((len(ids), width), self.tok.pad_token_id)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, seq in enumerate(ids):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        key = "features" if self.source == "features" else "pixels"
        return {
            key: torch.from_numpy(x),
            "input_ids": input_ids,
            "attention_mask": mask,
            "ids": [r["id"] for r in rows],
        }


class Order:
    """Which rows each rank's micro-batch holds, as a pure function of (step, rank, micro-batch).

    Each epoch is dealt by DistributedSampler (permutation seeded with seed + epoch, ragged tail
    dropped) to ``world * accum`` slots; rank r's micro-batch a is slot ``a * world + r`` and step k
    takes the k-th chunk of every slot. Together the chunks are the global batch ``perm[k*B:(k+1)*B]``
    whatever world and accum are, so one process accumulating 2 micro-batches and 2 ranks with 1 each
    see the same rows in the same groups, and a run resumed at step k sees what an uninterrupted one
    would (indexing by step is what a sampler iterator cannot do mid-epoch).

    With ``lengths`` (each row's caption tokens) batches are grouped by length, as HF Trainer's
    ``group_by_length``: the same permutation is cut into mega-batches of ``group`` batches, each sorted
    by length and cut into batches, and the epoch's batches are shuffled (seeded). A batch then pads its
    captions to a length close to each one's instead of to its longest; the dealing to ranks and
    micro-batches is unchanged, so everything above still holds.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        world: int = 1,
        accum: int = 1,
        lengths: np.ndarray | None = None,
        group: int = 50,
    ):
        slots = world * accum
        if batch_size % slots:
            raise ValueError(
                f"batch size {batch_size} must divide evenly over {world} ranks x {accum} micro-batches"
            )
        self.n, self.bs, self.seed, self.world, self.slots = n, batch_size, seed, world, slots
        self.per_epoch = n // batch_size  # drop the ragged tail: every step sees a full batch
        if self.per_epoch == 0:
            raise ValueError(f"batch size {batch_size} exceeds the {n} training pairs")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} rows")
        self.lengths, self.group = lengths, group
        self._epoch: tuple[int, list[list[int]]] | None = None

    def _grouped(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + epoch)  # DistributedSampler's permutation
        perm = torch.randperm(self.n, generator=g).tolist()[: self.per_epoch * self.bs]
        window, batches = self.group * self.bs, []
        for k in range(0, len(perm), window):
            rows = sorted(perm[k : k + window], key=lambda i: self.lengths[i])  # stable: ties keep order
            batches += [rows[j : j + self.bs] for j in range(0, len(rows), self.bs)]
        flat = [i for b in torch.randperm(len(batches), generator=g).tolist() for i in batches[b]]
        return [flat[s :: self.slots] for s in range(self.slots)]  # as DistributedSampler deals

    def _dealt(self, epoch: int) -> list[list[int]]:
        dealt = []
        for s in range(self.slots):
            sampler = DistributedSampler(
                range(self.n), num_replicas=self.slots, rank=s, shuffle=True, seed=self.seed, drop_last=True
            )
            sampler.set_epoch(epoch)
            dealt.append(list(sampler))
        return dealt

    def _slots(self, epoch: int) -> list[list[int]]:
        if self._epoch is None or self._epoch[0] != epoch:  # one epoch's dealing, kept
            self._epoch = (epoch, self._dealt(epoch) if self.lengths is None else self._grouped(epoch))
        return self._epoch[1]

    def indices(self, step: int, rank: int = 0, micro: int = 0) -> list[int]:
        epoch, k = divmod(step, self.per_epoch)
        share = self.bs // self.slots
        return self._slots(epoch)[micro * self.world + rank][k * share : (k + 1) * share]
