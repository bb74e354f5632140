"""The feature cache: the encoder is frozen, so every image is encoded once.

``out/features/shard-NNNNN.npy`` holds fp16 features [n, T, D] for the pixel shard of the same name
(row i = offset i), ``out/features/shard-NNNNN.json`` marks it complete for one encoder (weights
digest) and one pixel shard (digest of its record), and ``out/index.jsonl`` is the preprocessed index.
Each shard is written atomically and skipped when already done, so a killed run resumes; training
reads these files, never pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from lib.config import shown
from lib.data.preprocess import open_shard
from lib.models import files_digest
from lib.models.encoder import load_encoder
from lib.results import temp_file, write_json_atomic


def weights_digest(encoder: str) -> str | None:
    """sha256 over a local encoder's files: features from other weights (a rebuilt encoder in the
    same folder) are never reused. Hub ids are pinned by name."""
    folder = Path(encoder.removeprefix("local-dir:"))
    if not encoder.startswith("local-dir:") and not folder.is_dir():
        return None
    return files_digest(folder, "open_clip_")


def shards(preprocessed: Path) -> list[str]:
    return sorted(p.name for p in (preprocessed / "shards").glob("shard-*.npy"))


def encode(
    preprocessed: str | os.PathLike,
    out: str | os.PathLike,
    encoder: str,
    output: str = "pooled",
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    preprocessed, out = Path(preprocessed), Path(out)
    model = load_encoder(encoder, output).to(device)
    key = {"encoder": encoder, "weights": weights_digest(encoder), "output": output, "dim": model.dim}
    (out / "features").mkdir(parents=True, exist_ok=True)
    names, done = shards(preprocessed), 0
    for name in tqdm(names, desc="encode", unit="shard", disable=not progress):
        npy, meta = out / "features" / name, out / "features" / name.replace(".npy", ".json")
        # keyed by the encoder and by the pixel shard's own record (its rows, their sources, its config):
        # features of a shard that was rebuilt from other images are never reused
        shard_key = {
            **key,
            "pixels": hashlib.sha256((preprocessed / "shards" / meta.name).read_bytes()).hexdigest(),
        }
        if meta.exists() and json.loads(meta.read_text()) == shard_key:
            done += 1
            continue
        pixels = open_shard(preprocessed, name)
        feats = [
            model(torch.from_numpy(np.array(pixels[i : i + batch_size])).to(device))  # copy out of the map
            .to(torch.float16)
            .cpu()
            .numpy()
            for i in range(0, len(pixels), batch_size)
        ]
        fd, tmp = temp_file(npy.parent, prefix=f".{name}.", suffix=".npy")
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.concatenate(feats) if feats else np.zeros((0, 1, model.dim), np.float16))
        os.replace(tmp, npy)
        write_json_atomic(meta, shard_key)
    shutil.copyfile(preprocessed / "index.jsonl", out / ".index.jsonl.tmp")
    os.replace(out / ".index.jsonl.tmp", out / "index.jsonl")
    manifest = {**key, "shards": len(names), "resumed_shards": done, "preprocessed": shown(preprocessed)}
    write_json_atomic(out / "encode.json", manifest)
    return manifest


def open_features(out: str | os.PathLike, shard: str) -> np.ndarray:
    return np.load(Path(out) / "features" / shard, mmap_mode="r")
