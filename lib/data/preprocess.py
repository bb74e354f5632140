"""Validated pairs → fixed-size uint8 image shards, in chunks, on any Dask backend.

Layout of ``out``:
  shards/shard-00000.npy   uint8 [n, size, size, 3], memory-mappable (np.load(mmap_mode="r"))
  shards/shard-00000.json  the chunk's rows (id, image, caption, modality, split, offset), its quarantine and
                           the digest of the index rows it was made from; written after the .npy, so it
                           marks the chunk complete for exactly those rows
  index.jsonl              every stored image: id, shard, offset, caption, modality, split, image
  quarantine.json          images that failed here, each with its reason
  preprocess.json          config and counts

Each chunk is a pure function of its rows and the config, so every backend
writes byte-identical shards, and a re-run skips a chunk only when it was made from the same rows
(ids, images, their digests, captions) with the same config: another index of the same length is
another job. Every image is read through ``lib.data.files`` (paths re-checked, whatever the index
says) and checked against the digest validate recorded. Normalisation is left to the model's
transform: shards hold plain pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from lib.data.clusters import run_on_dask
from lib.data.files import content_digest, read_data_file
from lib.data.images import decode
from lib.data.pmcoa import image_root, pair_id, read_index
from lib.data.reasons import BadInput, skip_row
from lib.data.validate import ensure_index
from lib.results import temp_file, write_json_atomic
from lib.settings import BACKENDS, MAX_FILE_BYTES, Limits, PrepConfig


def _cv2():
    cv2.setNumThreads(1)  # parallelism comes from the backend; OpenCV's own threads would oversubscribe
    return cv2


def warm() -> None:
    _cv2()  # import OpenCV and this module on every worker before the clock starts


# OpenCV's imdecode flags by JPEG DCT scaling factor
DECODE_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def decode_factor(height: int, width: int, cfg: PrepConfig) -> int:
    """The largest JPEG DCT scaling (1/8, 1/4, 1/2) that still decodes at least the size the image is resized
    to, in both dimensions (so nothing is ever enlarged): the short side for ``crop``, the long side for
    ``pad``. libjpeg-turbo then decodes a fraction of the pixels that resizing would have averaged away."""
    nh, nw, _ = resize_plan(height, width, cfg)
    return next((f for f in (8, 4, 2) if -(-height // f) >= nh and -(-width // f) >= nw), 1)


def load_pixels(data: bytes, row: dict, cfg: PrepConfig | None = None) -> np.ndarray:
    """HxWx3 uint8 in OpenCV's BGR order (swapped to RGB once, after resizing, on fewer pixels).
    OpenCV decodes the common case fast; given ``cfg`` (with ``reduced_decode``), a JPEG at least twice
    the size ``cfg`` resizes it to at reduced size. Anything the index marked for conversion, or that
    OpenCV refuses, goes through the one bad-input policy (lib.data.images)."""
    cv2 = _cv2()
    if not row.get("conversion") and row.get("mode") in ("RGB", "L"):
        reduce = cfg is not None and cfg.reduced_decode and row.get("format") == "JPEG"
        f = decode_factor(row["height"], row["width"], cfg) if reduce else 1
        flags = DECODE_FLAGS[f] | cv2.IMREAD_IGNORE_ORIENTATION  # PIL ignores EXIF orientation too
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        if arr is not None:
            return arr
    arr = np.asarray(decode(data).image)
    return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR if arr.ndim == 2 else cv2.COLOR_RGB2BGR)


def enhance(img: np.ndarray, cfg: PrepConfig) -> np.ndarray:
    """The optional ops, on a BGR image; a no-op with the defaults."""
    cv2 = _cv2()
    if cfg.denoise:
        img = cv2.medianBlur(img, cfg.denoise)
    if cfg.clahe:
        lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
        lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[..., 0])
        img = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    if cfg.gamma != 1.0:
        table = np.round(255 * (np.arange(256) / 255) ** (1 / cfg.gamma)).astype(np.uint8)
        img = cv2.LUT(img, table)
    return img


def resize_plan(h: int, w: int, cfg: PrepConfig) -> tuple[int, int, int]:
    """(height, width, OpenCV interpolation) an h x w image is resized to before padding or cropping."""
    cv2 = _cv2()
    scale = cfg.size / max(h, w) if cfg.fit == "pad" else cfg.size / min(h, w)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC  # area averaging when shrinking: no aliasing
    return max(1, round(h * scale)), max(1, round(w * scale)), interp


def fit(img: np.ndarray, cfg: PrepConfig, out: np.ndarray | None = None) -> np.ndarray:
    """BGR image of any size -> size x size RGB, written into ``out`` when given (a shard's slot)."""
    cv2 = _cv2()
    s = cfg.size
    nh, nw, interp = resize_plan(*img.shape[:2], cfg)
    img = cv2.resize(img, (nw, nh), interpolation=interp)
    if cfg.fit == "pad":
        y, x = (s - nh) // 2, (s - nw) // 2
        img = cv2.copyMakeBorder(img, y, s - nh - y, x, s - nw - x, cv2.BORDER_CONSTANT, value=0)
    else:
        y, x = (nh - s) // 2, (nw - s) // 2
        img = np.ascontiguousarray(img[y : y + s, x : x + s])
    if out is None:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out)
    return out


def shard_paths(out: Path, k: int) -> tuple[Path, Path]:
    return out / "shards" / f"shard-{k:05d}.npy", out / "shards" / f"shard-{k:05d}.json"


def rows_digest(rows: list[dict]) -> str:
    """Digest of the index rows a chunk is made from: what identifies its input, beside the config."""
    keys = ("id", "split", "line", "image", "caption", "modality", "digest", "mode", "conversion")
    return hashlib.sha256(
        json.dumps([[r.get(k) for k in keys] for r in rows], ensure_ascii=False).encode()
    ).hexdigest()


def is_complete(out: Path, k: int, cfg: PrepConfig, rows: list[dict]) -> bool:
    """Whether chunk k is on disk, made with ``cfg`` from exactly ``rows``."""
    npy, meta = shard_paths(out, k)
    if not (npy.exists() and meta.exists()):
        return False
    try:
        m = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False
    return m.get("config") == cfg.key() and m.get("input") == rows_digest(rows)


_local = threading.local()


def _buffer(n: int, size: int) -> np.ndarray:
    """One chunk-sized pixel buffer per worker thread, reused: first-touch page faults on a fresh
    buffer cost ~0.3 ms per 224x224 image here, a third of the decode."""
    shape = (n, size, size, 3)
    buf = getattr(_local, "pixels", None)
    if buf is None or buf.shape[1:] != shape[1:] or len(buf) < n:
        buf = _local.pixels = np.empty(shape, np.uint8)
    return buf[:n]


def process_chunk(
    k: int, rows: list[dict], data_dir: str, out: str, cfg: PrepConfig, max_file_bytes: int = MAX_FILE_BYTES
) -> dict:
    """Decode, enhance and fit one chunk; write its shard atomically. Pure in (rows, cfg)."""
    out_p = Path(out)
    if is_complete(out_p, k, cfg, rows):
        return {"chunk": k, "skipped": True, **_counts(json.loads(shard_paths(out_p, k)[1].read_text()))}
    root = image_root(data_dir)
    pixels = _buffer(len(rows), cfg.size)
    kept, quarantined = [], []
    for row in rows:
        where = {
            "id": row.get("id") or pair_id(row["split"], row["line"]),
            "image": row["image"],
            "split": row["split"],
            "line": row["line"],
        }
        try:
            data = read_data_file(root, row["image"], max_file_bytes)
            if row.get("digest") and content_digest(data) != row["digest"]:
                raise BadInput(
                    "changed_since_validation", f"{row['image']}: its bytes differ from the validated file"
                )
            img = load_pixels(data, row, cfg)
            fit(enhance(img, cfg), cfg, out=pixels[len(kept)])
        except BadInput as e:
            quarantined.append(skip_row(e.reason, e.detail, **where))
            continue
        kept.append(
            {**where, "caption": row["caption"], "modality": row.get("modality"), "offset": len(kept)}
        )
    npy, meta = shard_paths(out_p, k)
    npy.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(npy.parent, prefix=f".{npy.name}.", suffix=".npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, pixels[: len(kept)])
    os.replace(tmp, npy)
    record = {
        "chunk": k,
        "config": cfg.key(),
        "input": rows_digest(rows),
        "rows": kept,
        "quarantined": quarantined,
    }
    write_json_atomic(meta, record)
    return {"chunk": k, "skipped": False, **_counts(record)}


def _counts(meta: dict) -> dict:
    return {"stored": len(meta["rows"]), "quarantined": len(meta["quarantined"])}


def auto_chunk_size(n_rows: int, workers: int) -> int:
    """At least four chunks a worker (so the last ones do not leave the others idle), at most 256 images a
    chunk (38 MB of pixels at 224 px), at least 16 (a chunk's fixed cost)."""
    return max(16, min(256, -(-n_rows // (4 * workers))))


def chunks(index_path: str | os.PathLike, chunk_size: int) -> Iterator[tuple[int, list[dict]]]:
    """(chunk number, rows) streamed from the clean index: never the whole index in memory."""
    rows = read_index(index_path)
    k = 0
    while batch := list(islice(rows, chunk_size)):
        yield k, batch
        k += 1


def preprocess(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    backend: str = "sequential",
    workers: int = 1,
    chunk_size: int | None = None,
    cfg: PrepConfig = PrepConfig(),
    index: str | os.PathLike | None = None,
    slurm: dict | None = None,
    progress: bool = True,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> dict:
    """Turn the clean index into shards under ``out``; resumes where a previous run stopped."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if (chunk_size is not None and chunk_size < 1) or workers < 1:
        raise ValueError("--chunk-size and --workers must be positive")
    out = Path(out)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for stale in (out / "shards").glob(".shard-*"):  # temp files of a killed run
        stale.unlink()
    timings = {"validate_s": 0.0, "cluster_start_s": 0.0}
    if index is None:  # validate into out/ first, or reuse what was validated from this very data
        t = time.perf_counter()
        index = ensure_index(
            data_dir,
            out / "clean_index.jsonl",
            out / "validate_report.json",
            workers,
            Limits(max_file_bytes=max_file_bytes),
            progress,
        )
        timings["validate_s"] = time.perf_counter() - t
    n_rows = sum(1 for _ in read_index(index))
    chunk_size = chunk_size or auto_chunk_size(n_rows, workers)
    n_chunks = -(-n_rows // chunk_size)
    task = partial(
        process_chunk, data_dir=str(data_dir), out=str(out), cfg=cfg, max_file_bytes=max_file_bytes
    )
    jobs = chunks(index, chunk_size)
    with tqdm(total=n_chunks, desc=f"preprocess ({backend})", unit="chunk", disable=not progress) as bar:
        if backend == "sequential":
            t, results = time.perf_counter(), []
            for k, rows in jobs:
                results.append(task(k, rows))
                bar.update()
            timings["process_s"] = time.perf_counter() - t
        else:
            results = run_on_dask(backend, workers, slurm, jobs, task, bar, timings, warm)
    t = time.perf_counter()
    manifest = _finish(out, n_chunks, cfg, backend, workers, chunk_size, results)
    manifest["timings"] = {**timings, "finish_s": time.perf_counter() - t}  # wall seconds per phase
    write_json_atomic(out / "preprocess.json", manifest)
    return manifest


def _finish(out: Path, n_chunks: int, cfg: PrepConfig, backend, workers, chunk_size, results) -> dict:
    """Merge chunk records, in chunk order, into the index and the quarantine list."""
    quarantine, stored = [], 0
    tmp = out / ".index.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for k in range(n_chunks):
            npy, meta_path = shard_paths(out, k)
            meta = json.loads(meta_path.read_text())
            for row in meta["rows"]:
                entry = {"id": row["id"], "shard": npy.name, **row}
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            stored += len(meta["rows"])
            quarantine += meta["quarantined"]
    os.replace(tmp, out / "index.jsonl")
    write_json_atomic(out / "quarantine.json", quarantine)
    manifest = {
        "config": asdict(cfg),
        "chunk_size": chunk_size,
        "chunks": n_chunks,
        "stored": stored,
        "quarantined": len(quarantine),
        "resumed_chunks": sum(r["skipped"] for r in results),
        "backend": backend,
        "workers": workers,
    }
    return manifest


def split_digest(out: str | os.PathLike, split: str) -> str:
    """What a model trained on ``split`` of these shards saw: its rows (ids, captions, where their pixels
    are) and each shard's own record (config and input digest)."""
    out, h, shards = Path(out), hashlib.sha256(), set()
    for row in read_index(out / "index.jsonl"):
        if row["split"] == split:
            h.update(
                json.dumps(
                    [row["id"], row["caption"], row.get("modality"), row["shard"], row["offset"]]
                ).encode()
            )
            shards.add(row["shard"])
    for shard in sorted(shards):
        meta = json.loads((out / "shards" / shard).with_suffix(".json").read_text())
        h.update(f"{shard}\0{meta['config']}\0{meta['input']}".encode())
    return h.hexdigest()


def open_shard(out: str | os.PathLike, shard: str) -> np.ndarray:
    """A shard as a read-only memory map (the encoder and trainer read pixels this way)."""
    return np.load(Path(out) / "shards" / shard, mmap_mode="r")
