"""The frozen image encoder: BiomedCLIP through open_clip, or the embedded default's tiny CLIP.

Both load the same way, ``open_clip.create_model("hf-hub:..." | "local-dir:...")``. The tiny one is
saved in open_clip's Hugging Face layout (``open_clip_config.json`` + ``open_clip_model.safetensors``),
exactly as BiomedCLIP is when pre-downloaded for an air-gapped cluster.

The default has no pretrained weights to download, so ``pretrain`` follows BiomedCLIP's recipe
(contrastive image-caption training with open_clip's own ClipLoss), scaled down to the generated
training split. A random frozen encoder would make captions and zero-shot results meaningless.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from lib.data.generate import figure
from lib.data.preprocess import fit, load_pixels, open_shard, split_digest
from lib.models import ModelUnavailable, pretrain_step, warmup_share
from lib.results import write_json_atomic
from lib.settings import EncoderPretrain, PrepConfig

BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"

# A ViT image tower and a transformer text tower, like ViT-B-16, at a size a laptop trains in minutes.
TINY_CLIP = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 96, "patch_size": 16, "width": 192, "layers": 4, "head_width": 64},
    "text_cfg": {"context_length": 64, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}
# 2: the image tower is trained (version 1 froze it by mistake: only the text tower learned, against a
# random image tower); a folder pre-trained by version 1 is trained again
PRETRAIN_VERSION = 2
# The stream of the generated pre-training corpus: its own, so its figures are never the embedded
# dataset's (generated from its profile's seed, 0) nor any split's.
CORPUS_SEED = 1729
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _hub_error(spec: str, err: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"cannot load {spec!r} ({type(err).__name__}: {err}). Without network access, download the model "
        f"where there is network and pass its folder as 'local-dir:/path/to/folder' (HF_HUB_OFFLINE=1 makes "
        f"the hub fail at once instead of retrying)"
    )


def create(spec: str):
    """(open_clip model, tokenizer, preprocess config) from 'hf-hub:org/name' or 'local-dir:/path'."""
    if not spec.startswith(("hf-hub:", "local-dir:")) and Path(spec).is_dir():
        spec = f"local-dir:{spec}"
    try:
        model = open_clip.create_model(spec, pretrained=None, load_weights=True)
        tokenizer = open_clip.get_tokenizer(spec)
    except FileNotFoundError:
        raise
    except Exception as e:  # the hub raises several types (connection, offline mode, missing repo)
        if spec.startswith("hf-hub:"):
            raise _hub_error(spec, e) from e
        raise
    return model, tokenizer


def _same(cached: dict, record: dict, keys: tuple[str, ...]) -> bool:
    return all(cached.get(k) == record[k] for k in keys)


def pixel_transform(clip) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(side, mean [1,3,1,1], std [1,3,1,1]) of a CLIP's image tower."""
    size = clip.visual.image_size
    mean = getattr(clip.visual, "image_mean", None) or CLIP_MEAN
    std = getattr(clip.visual, "image_std", None) or CLIP_STD
    side = size[0] if isinstance(size, (tuple, list)) else size
    return side, torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


def resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """float [B, 3, H, W] -> [B, 3, side, side], antialiased bilinear (a no-op at that side already)."""
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def to_pixels(images: torch.Tensor, side: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> normalised float [B, 3, side, side] (antialiased bilinear resize)."""
    return (resize(images.permute(0, 3, 1, 2).float().div_(255), side) - mean) / std


class FrozenEncoder(nn.Module):
    """uint8 NHWC pixels -> features; frozen and in eval mode whatever the caller does.

    output="pooled": the CLIP image embedding [B, 1, embed_dim];
    output="tokens": the patch tokens of the last block [B, n_patches, width] (196 x 768 for BiomedCLIP).
    """

    def __init__(self, clip, output: str = "pooled"):
        super().__init__()
        if output not in ("pooled", "tokens"):
            raise ValueError(f"encoder output must be 'pooled' or 'tokens', got {output!r}")
        self.visual, self.output = clip.visual, output
        self.image_size, mean, std = pixel_transform(clip)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.requires_grad_(False)  # the tower is shared with ``clip``: freezes it there too
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: dropout and norms stay in eval mode

    @property
    def dim(self) -> int:
        if self.output == "pooled":
            return self.visual.output_dim
        trunk = getattr(self.visual, "trunk", None)  # timm towers (BiomedCLIP)
        return trunk.num_features if trunk is not None else self.visual.transformer.width

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] -> normalised float [B, 3, S, S] at the tower's resolution."""
        return to_pixels(images, self.image_size, self.mean, self.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pixels(images.to(self.mean.device))
        if self.output == "pooled":
            return self.visual(x).unsqueeze(1)
        trunk = getattr(self.visual, "trunk", None)
        if trunk is not None:
            return trunk.forward_features(x)[:, getattr(trunk, "num_prefix_tokens", 1) :]
        self.visual.output_tokens = True
        try:
            return self.visual(x)[1]
        finally:
            self.visual.output_tokens = False


def load_encoder(spec: str, output: str = "pooled") -> FrozenEncoder:
    return FrozenEncoder(create(spec)[0], output=output)


def save_clip(model, model_cfg: dict, out: str | os.PathLike) -> Path:
    """An open_clip model in the local-dir layout ``create("local-dir:...")`` loads (BiomedCLIP's, when
    pre-downloaded)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), out / "open_clip_model.safetensors")
    write_json_atomic(
        out / "open_clip_config.json",
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD}},
    )
    return out


def _corpus_pair(side: int, index: int) -> tuple[np.ndarray, str]:
    _, _, text, data, scene = figure(CORPUS_SEED, index)
    row = {"mode": scene.mode, "format": scene.fmt, "height": scene.height, "width": scene.width}
    cfg = PrepConfig()  # decoded, resized and padded as the study's shards are
    img = torch.from_numpy(fit(load_pixels(data, row, cfg), cfg)).permute(2, 0, 1)[None].float().div_(255)
    return resize(img, side)[0].permute(1, 2, 0).mul_(255).round_().to(torch.uint8).numpy(), text


def generated_corpus(
    n: int, side: int, workers: int = 1, progress: bool = True
) -> tuple[np.ndarray, list[str]]:
    """``n`` generated figure-caption pairs from the corpus's own stream, padded to a square as the
    study's shards are and resized to the tower's side: (uint8 [n, side, side, 3], captions). The embedded
    default's counterpart of BiomedCLIP's pre-training corpus (PMC-15M), which is not PMC-OA."""
    # one torch thread a worker: the workers are the parallelism, torch's own threads would oversubscribe
    pool = (
        get_context("spawn").Pool(workers, torch.set_num_threads, (1,)) if workers > 1 and n >= 64 else None
    )
    pairs = pool.imap(partial(_corpus_pair, side), range(n), chunksize=32) if pool else None
    try:
        out = list(
            tqdm(
                pairs or (_corpus_pair(side, i) for i in range(n)),
                total=n,
                desc="generate pre-training corpus",
                unit="fig",
                disable=not progress,
            )
        )
    finally:
        if pool:
            pool.terminate()
    return np.stack([o[0] for o in out]), [o[1] for o in out]


def _train_rows(preprocessed: Path) -> list[dict]:
    rows = [json.loads(line) for line in open(preprocessed / "index.jsonl", encoding="utf-8")]
    return [r for r in rows if r["split"] == "train"]


def pretrain(
    preprocessed: str | os.PathLike,
    out: str | os.PathLike,
    cfg: EncoderPretrain | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """Train the tiny CLIP contrastively on the training split of preprocessed shards, plus
    ``cfg.generated`` pairs of the generated corpus (drawn in ``workers`` processes); save it to ``out``
    in open_clip's local-dir layout. Cached: a folder already holding this config is returned as is."""
    cfg = cfg or EncoderPretrain()
    out, preprocessed = Path(out), Path(preprocessed)
    # cached only for the same settings and the same training images and captions: a folder pre-trained on
    # other data is trained again, never reused. No corpus: the settings are recorded as before it existed,
    # so a folder pre-trained then is still the same one.
    record = {
        "version": PRETRAIN_VERSION,
        "model_cfg": TINY_CLIP,
        "pretrain": {k: v for k, v in asdict(cfg).items() if k != "generated" or v},
        "trained_on": split_digest(preprocessed, "train"),
    }
    done = out / "pretrain.json"
    if done.exists():
        if _same(json.loads(done.read_text()), record, ("version", "pretrain", "trained_on")):
            return json.loads(done.read_text())
        print(f"{out} was pre-trained on other data or settings: training it again", file=sys.stderr)
        done.unlink()  # not complete until trained again
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = open_clip.CLIP(**TINY_CLIP, output_dict=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=TINY_CLIP["text_cfg"]["context_length"])
    rows = _train_rows(preprocessed)
    if not rows:
        raise ValueError(f"{preprocessed}: no training pairs to pre-train the tiny encoder on")
    images = np.stack([open_shard(preprocessed, r["shard"])[r["offset"]] for r in rows])
    texts = tokenizer([r["caption"] for r in rows])
    # the pixel transform alone: a FrozenEncoder would freeze the image tower this trains (it shares it)
    side, mean, std = pixel_transform(model)
    corpus = np.zeros((0, side, side, 3), np.uint8)
    if cfg.generated:  # stored at the tower's side: 224-px copies of a large corpus would not fit memory
        corpus, captions = generated_corpus(cfg.generated, side, workers, progress)
        texts = torch.cat([texts, tokenizer(captions)])
    n = len(rows) + len(corpus)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, n)  # a small folder of one's own: one batch of everything
    steps = cfg.epochs * (n // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=steps, pct_start=warmup_share(steps)
    )
    loss_fn, gen, losses = ClipLoss(), torch.Generator().manual_seed(cfg.seed), []
    model.train()
    bar = tqdm(total=steps, desc="pretrain tiny CLIP", unit="step", disable=not progress)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for k in range(n // batch):
            idx = order[k * batch : (k + 1) * batch]
            own = idx < len(rows)
            x = torch.empty(len(idx), 3, side, side)
            x[own] = to_pixels(torch.from_numpy(images[idx[own].numpy()]), side, mean, std)
            if not own.all():
                x[~own] = to_pixels(
                    torch.from_numpy(corpus[(idx[~own] - len(rows)).numpy()]), side, mean, std
                )
            feats = model(x, texts[idx])
            loss = loss_fn(feats["image_features"], feats["text_features"], feats["logit_scale"])
            pretrain_step(loss, opt, sched, losses, bar)
    bar.close()
    save_clip(model, TINY_CLIP, out)
    record.update(
        pairs=len(rows),
        generated_pairs=len(corpus),
        steps=steps,
        seconds=time.perf_counter() - t0,  # the corpus's drawing included
        first_loss=losses[0],
        final_loss=float(np.mean(losses[-10:])),
    )
    write_json_atomic(done, record)  # last: marks the folder complete
    return record
