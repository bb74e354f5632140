"""Hand-crafted image features for the CPU modality baseline, extracted in parallel with joblib.

What separates figure modalities without a neural network: colour (stained sections and
fluorescence are coloured, radiology is grey), the intensity distribution (an ultrasound fan sits
on black, a radiograph is mostly mid-grey), edges and texture (speckle, cell boundaries) and how
energy spreads over spatial frequencies. 44 numbers per image, from numpy only, at half the
stored resolution (2x2 means: a quarter of the work, and the texture scales that tell modalities
apart survive it).
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from lib.data.preprocess import open_shard

NAMES = (
    [f"hist{i:02d}" for i in range(16)]
    + ["mean", "std", "skew", "kurtosis", "p05", "p50", "p95", "dark", "bright"]
    + [f"{c}_{s}" for c in "rgb" for s in ("mean", "std")]
    + ["saturation", "saturation_std", "grad_mean", "grad_std", "edges", "laplacian_var"]
    + [f"fft_band{i}" for i in range(4)]
    + ["entropy", "row_var", "col_var"]
)


@lru_cache(maxsize=4)
def _band_masks(h: int, w: int) -> list[np.ndarray]:
    """Rings of the centred spectrum: lowest frequencies to the corners."""
    yy, xx = np.ogrid[:h, :w]
    radius = np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 2)
    return [(radius >= lo) & (radius < hi) for lo, hi in ((0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 2))]


def image_features(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> float32 [len(NAMES)]."""
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    x = rgb[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3), dtype=np.float32) / 255
    gray = x.mean(axis=2)
    hist = np.histogram(gray, bins=16, range=(0, 1))[0] / gray.size
    mu, sd = gray.mean(), gray.std() + 1e-6
    z = (gray - mu) / sd
    p05, p50, p95 = np.percentile(gray, [5, 50, 95])
    channels = [v for c in range(3) for v in (x[..., c].mean(), x[..., c].std())]
    sat = x.max(axis=2) - x.min(axis=2)
    gy, gx = np.gradient(gray)
    grad = np.hypot(gx, gy)
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray - mu))) ** 2
    bands = [power[m].sum() for m in _band_masks(*gray.shape)]
    bands = np.asarray(bands) / (sum(bands) + 1e-12)
    nz = hist[hist > 0]
    return np.asarray(
        [
            *hist,
            mu,
            gray.std(),
            (z**3).mean(),
            (z**4).mean(),
            p05,
            p50,
            p95,
            (gray < 0.1).mean(),
            (gray > 0.9).mean(),
            *channels,
            sat.mean(),
            sat.std(),
            grad.mean(),
            grad.std(),
            (grad > 0.1).mean(),
            lap.var(),
            *bands,
            -(nz * np.log2(nz)).sum(),
            gray.mean(axis=1).var(),
            gray.mean(axis=0).var(),
        ],
        dtype=np.float32,
    )


def _shard_features(preprocessed: str, shard: str, offsets: list[int]) -> np.ndarray:
    pixels = open_shard(Path(preprocessed), shard)
    return np.stack([image_features(pixels[i]) for i in offsets])


def _tasks(rows: list[dict], chunk: int) -> list[tuple[str, list[int], list[int]]]:
    """(shard, offsets, positions in rows) in pieces of at most ``chunk`` images: one joblib task
    each, large enough that dispatch costs little against the numpy work."""
    by_shard: dict[str, list[int]] = {}
    for pos, r in enumerate(rows):
        by_shard.setdefault(r["shard"], []).append(pos)
    return [
        (shard, [rows[p]["offset"] for p in part], part)
        for shard, positions in by_shard.items()
        for part in (positions[i : i + chunk] for i in range(0, len(positions), chunk))
    ]


def extract(
    preprocessed: str | Path, rows: list[dict], n_jobs: int = 1, chunk: int = 64, progress: bool = False
) -> tuple[np.ndarray, float]:
    """Features of ``rows`` (index rows: shard, offset) in their order, and the seconds it took.
    n_jobs=1 runs in this process; more use joblib's loky process pool (started before the clock:
    workers stay warm between calls, as they do in a long session)."""
    tasks = _tasks(rows, chunk)
    pool = Parallel(n_jobs=n_jobs, backend="loky" if n_jobs > 1 else "sequential", return_as="generator")
    if n_jobs > 1:  # warm the pool: process start-up is not feature extraction
        list(Parallel(n_jobs=n_jobs, backend="loky")(delayed(abs)(i) for i in range(n_jobs)))
    t0 = time.perf_counter()
    out = np.zeros((len(rows), len(NAMES)), dtype=np.float32)
    jobs = pool(delayed(_shard_features)(str(preprocessed), shard, offsets) for shard, offsets, _ in tasks)
    bar = tqdm(total=len(tasks), desc=f"features (n_jobs={n_jobs})", unit="chunk", disable=not progress)
    for (_, _, positions), feats in zip(tasks, jobs, strict=True):
        bar.update()
        out[positions] = feats
    bar.close()
    return out, time.perf_counter() - t0
