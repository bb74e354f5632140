"""How fast preprocessing runs, against the floor set by the image decoder.

Three measurements over the same clean index:
  floor      a bare OpenCV loop (read, imdecode, resize to size x size): what one core can do at best, with
             every image decoded at full size (the reference) and with large JPEGs decoded at reduced
             size (what preprocessing does), per image format
  breakdown  where one image's time goes in ``lib.data.preprocess`` (read, decode, resize, write)
  scaling    img/s of every backend at 1..N workers, each run writing real shards to a scratch folder;
             processing time excludes cluster start-up, which is recorded beside it

Every run's shards are hashed: the backends must agree byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib import plots
from lib.config import shown
from lib.data.files import read_data_file
from lib.data.pmcoa import image_root, read_index
from lib.data.preprocess import (
    DECODE_FLAGS,
    _cv2,
    auto_chunk_size,
    decode_factor,
    enhance,
    fit,
    load_pixels,
    preprocess,
    resize_plan,
)
from lib.data.validate import validate
from lib.results import write_jsonl_atomic
from lib.settings import PrepConfig

BACKEND_COLOURS = {
    "sequential": "#4C72B0",
    "dask-processes": "#55A868",
    "dask-threads": "#C44E52",
    "dask-slurm": "#8172B2",
}


def floor(data_dir, index, cfg: PrepConfig, limit: int | None = None, reduced: bool = False) -> dict:
    """A bare OpenCV loop on one core (read, imdecode, resize to the same size with the same interpolation):
    the reference preprocessing is held to. It skips what preprocessing adds: padding, RGB order, the
    write. ``reduced``: a JPEG at least twice the size it is resized to is decoded at reduced size, as
    preprocessing decodes it; else every image at full size. Rates per image format too."""
    cv2 = _cv2()
    root = image_root(data_dir)
    rows = list(islice(read_index(index), limit))
    formats: dict[str, list[float]] = {}
    start = time.perf_counter()
    for row in rows:
        t0 = time.perf_counter()
        f = decode_factor(row["height"], row["width"], cfg) if reduced and row["format"] == "JPEG" else 1
        img = cv2.imdecode(np.frombuffer(read_data_file(root, row["image"]), np.uint8), DECODE_FLAGS[f])
        nh, nw, interp = resize_plan(*img.shape[:2], cfg)
        cv2.resize(img, (nw, nh), interpolation=interp)
        formats.setdefault(row["format"], []).append(time.perf_counter() - t0)
    seconds = time.perf_counter() - start
    return {
        "images": len(rows),
        "seconds": seconds,
        "img_per_s": len(rows) / seconds,
        "ms_per_img": 1e3 * seconds / len(rows),
        "formats": {k: {"images": len(v), "img_per_s": len(v) / sum(v)} for k, v in sorted(formats.items())},
    }


def breakdown(
    data_dir, index, cfg: PrepConfig, scratch: str | os.PathLike, limit: int = 1000, chunk_size: int = 256
) -> dict:
    """Milliseconds per image in each step of ``process_chunk``, on one core, writing to ``scratch``."""
    root = image_root(data_dir)
    rows = list(islice(read_index(index), limit))
    t = dict.fromkeys(("read", "decode", "resize", "write"), 0.0)
    pixels = np.empty((len(rows), cfg.size, cfg.size, 3), np.uint8)
    pixels.fill(0)  # fault the pages in first: process_chunk reuses a warm buffer
    for i, row in enumerate(rows):
        t0 = time.perf_counter()
        data = read_data_file(root, row["image"])
        t1 = time.perf_counter()
        img = load_pixels(data, row, cfg)
        t2 = time.perf_counter()
        fit(enhance(img, cfg), cfg, out=pixels[i])  # enhancement ops (off by default) count as resize time
        t3 = time.perf_counter()
        t["read"] += t1 - t0
        t["decode"] += t2 - t1
        t["resize"] += t3 - t2
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        t0 = time.perf_counter()
        for k in range(0, len(rows), chunk_size):  # as process_chunk writes: one .npy per chunk
            with open(Path(tmp) / f"{k}.npy", "wb") as f:
                np.save(f, pixels[k : k + chunk_size])
        t["write"] = time.perf_counter() - t0
    return {"images": len(rows), "ms_per_img": {k: 1e3 * v / len(rows) for k, v in t.items()}}


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for path in sorted((out / "shards").iterdir()) + [out / "index.jsonl"]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def configurations(backends, max_workers: int) -> list[tuple[str, int]]:
    return [(b, w) for b in backends for w in ([1] if b == "sequential" else range(1, max_workers + 1))]


def _median(samples: list[dict], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def measure_backends(
    data_dir,
    index,
    backends=("sequential", "dask-processes", "dask-threads"),
    max_workers: int = 2,
    chunk_size: int | None = None,
    cfg: PrepConfig | None = None,
    repeats: int = 1,
    limit: int | None = None,
    formats: tuple[str, ...] | None = None,
    scratch: str | os.PathLike = "outputs/bench",
    progress: bool = True,
) -> tuple[dict, dict]:
    """(metrics, config) of the whole benchmark; ``lib.results.write_results`` records them.

    Repeats go round-robin over the configurations (floor included), so a slow spell on a shared machine
    hits all of them alike; each number is the median of its repeats. ``scratch`` should sit on the file
    system real output would use: write speed differs by an order of magnitude between file systems.
    ``limit`` benchmarks the first n pairs only (a full PMC-OA pass per configuration would take hours);
    ``formats`` (e.g. JPEG) only the pairs whose image has one of them. Every run uses one chunk size:
    given, or four chunks a worker at ``max_workers``.
    """
    cfg = cfg or PrepConfig()
    Path(scratch).mkdir(parents=True, exist_ok=True)
    configs = configurations(backends, max_workers)
    floors, reduced, samples, digests = [], [], {c: [] for c in configs}, set()
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        if index is None:  # validate once, outside the timed runs
            index = Path(tmp) / "clean_index.jsonl"
            validate(
                data_dir, Path(tmp) / "validate_report.json", index, workers=max_workers, progress=progress
            )
        if limit or formats:
            chosen = (r for r in read_index(index) if not formats or r["format"] in formats)
            index = Path(tmp) / "bench_index.jsonl"
            write_jsonl_atomic(index, list(islice(chosen, limit)))
        chunk_size = chunk_size or auto_chunk_size(sum(1 for _ in read_index(index)), max_workers)
        floor(data_dir, index, cfg)  # warm the page cache: every run then reads from memory
        cost = breakdown(data_dir, index, cfg, tmp, chunk_size=chunk_size)
        bar = tqdm(total=repeats * len(configs), desc="bench preprocess", unit="run", disable=not progress)
        for _ in range(repeats):
            floors.append(floor(data_dir, index, cfg))
            reduced.append(floor(data_dir, index, cfg, reduced=True))
            for backend, workers in configs:
                bar.set_postfix_str(f"{backend} x{workers}")
                out = Path(tmp) / f"{backend}-{workers}"
                m = preprocess(
                    data_dir,
                    out,
                    backend=backend,
                    workers=workers,
                    chunk_size=chunk_size,
                    cfg=cfg,
                    index=index,
                    progress=False,
                )
                samples[backend, workers].append(
                    {**m["timings"], "images": m["stored"], "chunks": m["chunks"]}
                )
                digests.add(_digest(out))
                shutil.rmtree(out)
                bar.update()
        bar.close()
    rows = []
    for (backend, workers), mine in samples.items():
        process_s, images = _median(mine, "process_s"), mine[0]["images"]
        overhead_s = _median(mine, "cluster_start_s") + _median(mine, "finish_s")
        rows.append(
            {
                "backend": backend,
                "workers": workers,
                "images": images,
                "chunks": mine[0]["chunks"],
                "process_s": process_s,
                "cluster_start_s": _median(mine, "cluster_start_s"),
                "samples": mine,
                "img_per_s": images / process_s,
                "end_to_end_img_per_s": images / (process_s + overhead_s),
            }
        )
    for row in rows:  # speed-up against the same backend on one worker
        one = next(r for r in rows if r["backend"] == row["backend"] and r["workers"] == 1)
        row["speedup"] = row["img_per_s"] / one["img_per_s"]
        row["efficiency"] = row["speedup"] / row["workers"]
    ref, fast = _floor(floors), _floor(reduced)
    best = {w: max(r["img_per_s"] for r in rows if r["workers"] == w) for w in {r["workers"] for r in rows}}
    metrics = {
        "floor_opencv": ref,
        "floor_reduced_decode": fast,
        # what decoding large JPEGs at reduced size buys, per format (PNG has no reduced decode)
        "reduced_vs_full": {
            k: fast["formats"][k]["img_per_s"] / v["img_per_s"] for k, v in ref["formats"].items()
        },
        "breakdown": cost,
        "runs": rows,
        "identical_outputs": len(digests) == 1,
        # the targets: one worker >= 0.8x the bare loop; two workers >= 1.8x one
        "one_worker_vs_floor": best[1] / ref["img_per_s"],
        "two_workers_vs_one": best[2] / best[1] if 2 in best else None,
    }
    config = {
        "data_dir": shown(data_dir),
        "backends": list(backends),
        "max_workers": max_workers,
        "chunk_size": chunk_size,
        "prep": asdict(cfg),
        "repeats": repeats,
        "limit": limit,
        "formats": list(formats) if formats else None,
        "scratch": shown(scratch),
        "floor": "read + cv2.imdecode + cv2.resize (same size and interpolation)",
    }
    return metrics, config


def _floor(runs: list[dict]) -> dict:
    """The median of a floor's repeats (per format too), keeping every repeat."""
    out = {"images": runs[0]["images"], "seconds": _median(runs, "seconds"), "samples": runs}
    out.update(img_per_s=out["images"] / out["seconds"], ms_per_img=1e3 * out["seconds"] / out["images"])
    out["formats"] = {
        k: {"images": v["images"], "img_per_s": statistics.median(r["formats"][k]["img_per_s"] for r in runs)}
        for k, v in runs[0]["formats"].items()
    }
    return out


def table(metrics: dict) -> list[dict]:
    """One row per (backend, workers): the throughput / speed-up / efficiency table."""
    ref = metrics["floor_opencv"]["img_per_s"]
    return [
        {
            "backend": r["backend"],
            "workers": r["workers"],
            "img/s": round(r["img_per_s"], 1),
            "img/s incl. start-up": round(r["end_to_end_img_per_s"], 1),
            "start-up s": round(r["cluster_start_s"], 2),
            "speed-up": round(r["speedup"], 2),
            "efficiency": round(r["efficiency"], 2),
            "x bare OpenCV": round(r["img_per_s"] / ref, 2),
        }
        for r in metrics["runs"]
    ]


def figures(metrics: dict, out_dir: str | os.PathLike, prefix: str = "02_preprocess") -> list[Path]:
    out_dir = Path(out_dir)
    runs = metrics["runs"]
    fig, ax = plots.figure(ncols=2, width=4.6)
    sp, tp = ax[0, 0], ax[0, 1]
    top = max(r["workers"] for r in runs)
    sp.plot([1, top], [1, top], color="k", ls="--", lw=1, label="ideal")
    for backend in dict.fromkeys(r["backend"] for r in runs):
        mine = [r for r in runs if r["backend"] == backend]
        w = [r["workers"] for r in mine]
        colour = BACKEND_COLOURS.get(backend)
        sp.plot(w, [r["speedup"] for r in mine], marker="o", color=colour, label=backend)
        tp.plot(w, [r["img_per_s"] for r in mine], marker="o", color=colour, label=backend)
    tp.axhline(metrics["floor_opencv"]["img_per_s"], color="grey", ls=":", label="bare OpenCV, 1 core")
    sp.set(xlabel="workers", ylabel="speed-up vs 1 worker", xticks=range(1, top + 1))
    tp.set(xlabel="workers", ylabel="images / s", xticks=range(1, top + 1), ylim=(0, None))
    sp.legend()
    tp.legend()
    paths = [plots.save(fig, out_dir / f"{prefix}_scaling.png")]

    fig, ax = plots.figure(width=6.5, height=3.0)
    cost = metrics["breakdown"]["ms_per_img"]
    left = 0.0
    for (step, ms), colour in zip(cost.items(), ("#8172B2", "#4C72B0", "#55A868", "#C44E52"), strict=True):
        ax[0, 0].barh(["lib preprocess"], [ms], left=left, color=colour, label=f"{step} {ms:.2f} ms")
        left += ms
    ax[0, 0].barh(
        ["bare OpenCV"],
        [metrics["floor_opencv"]["ms_per_img"]],
        color="grey",
        label=f"read+decode+resize {metrics['floor_opencv']['ms_per_img']:.2f} ms",
    )
    ax[0, 0].set(xlabel="ms per image, one core")
    ax[0, 0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8)
    paths.append(plots.save(fig, out_dir / f"{prefix}_breakdown.png"))
    return paths
