"""Captions of a whole split from a captioner: batched generation with the KV cache, and how fast it is
against one image at a time with and without the cache."""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm


@torch.no_grad()
def caption(
    vlm,
    data,
    batch_size: int = 64,
    max_new_tokens: int = 48,
    device: str = "cpu",
    indices=None,
    use_cache: bool = True,
    progress: bool = False,
    **decoding,
) -> tuple[dict[str, str], float]:
    """Generated caption per pair id over a whole split (or its rows ``indices``), and captions per second.
    ``decoding``: ``CaptionVLM.generate``'s search settings (num_beams, no_repeat_ngram, ...)."""
    vlm.eval()
    rows = list(range(len(data)) if indices is None else indices)
    out, t0 = {}, time.perf_counter()
    for lo in tqdm(range(0, len(rows), batch_size), desc="caption", unit="batch", disable=not progress):
        batch = data.batch(rows[lo : lo + batch_size])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        for i, ids in zip(
            batch["ids"], vlm.generate(batch, max_new_tokens, use_cache=use_cache, **decoding), strict=True
        ):
            out[i] = data.tok.decode(ids, skip_special_tokens=True).strip()
    return out, len(out) / (time.perf_counter() - t0)


def throughput(vlm, data, n: int, device: str, decoding: dict | None = None, repeats: int = 3) -> dict:
    """captions/s on the first ``n`` images: batched with the KV cache (how `evaluate` captions),
    one at a time with the cache, and one at a time recomputing every position (no cache). Each is
    timed ``repeats`` times, in turn, and the median is reported (one batch of a tiny model takes a
    fraction of a second: single timings swing with whatever else the machine does)."""
    idx, decoding = list(range(min(n, len(data)))), decoding or {}
    ways = {
        "batched_kv_cache": (len(idx), True),
        "one_at_a_time_kv_cache": (1, True),
        "one_at_a_time_no_cache": (1, False),
    }
    for batch, cache in ways.values():  # warm-up: first-call allocations are not generation
        caption(vlm, data, batch_size=batch, device=device, indices=idx[:2], use_cache=cache, **decoding)
    rates: dict[str, list[float]] = {k: [] for k in ways}
    captions = {}
    for _ in range(repeats):
        for name, (batch, cache) in ways.items():
            torch.manual_seed(0)  # sampled captions, if asked for, are the same draws each way
            captions[name], per_s = caption(
                vlm, data, batch_size=batch, device=device, indices=idx, use_cache=cache, **decoding
            )
            rates[name].append(per_s)
    base = captions["batched_kv_cache"]
    out = {
        "images": len(idx),
        "batch": len(idx),
        "repeats": repeats,
        **{
            k: {
                "captions_per_s": float(np.median(rates[k])),
                "runs": rates[k],
                "same_captions_as_batched": sum(captions[k][i] == base[i] for i in base) / len(base),
            }
            for k in ways
        },
    }
    out["speedup"] = (
        out["batched_kv_cache"]["captions_per_s"] / out["one_at_a_time_no_cache"]["captions_per_s"]
    )
    return out
