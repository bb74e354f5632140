"""The embedded default: a generated dataset in PMC-OA's exact format.

Each figure is drawn from a ``Scene`` (modality, region, finding, size,
location, arrow, panel letter, scale bar) and its caption is written from the
same scene, so everything a caption says can be seen in its image and a
captioner has something real to learn. Image sizes and colour modes follow
PMC-OA's (mean about 271x238 px, ~91% RGB, ~8% greyscale, JPEG and PNG).

Every figure has its own random stream ``default_rng([seed, i])``: the same
seed gives byte-identical files, and a dataset of n figures is the first n of
any larger one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
from dataclasses import asdict
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib.data.pmcoa import IMAGE_DIR, SPLITS
from lib.data.render import render
from lib.data.scenes import MODALITIES, Scene, caption, facts, sample_scene
from lib.results import write_json_atomic

GENERATOR_VERSION = 2  # 2: each row records its scene's facts
MANIFEST = "dataset.json"


def _draw(seed: int, index: int) -> tuple[np.random.Generator, str, Scene]:
    """Figure ``index``'s stream, split and scene: the draws that come before its caption and pixels."""
    rng = np.random.default_rng([seed, index])
    u = rng.random()
    return rng, "train" if u < 0.8 else "valid" if u < 0.9 else "test", sample_scene(rng)


def scene_facts(seed: int, index: int) -> dict:
    """The scene facts of figure ``index`` (``figure(seed, index)[4]``'s), without rendering it."""
    return facts(_draw(seed, index)[2])


def figure(seed: int, index: int, large: float = 0.0) -> tuple[str, str, str, bytes, Scene]:
    """(split, image name, caption, encoded bytes, scene) of figure ``index``; pure in (seed, index, large).
    A share ``large`` of the figures is drawn at 1-4 megapixels (scans and photographs as users have
    them), chosen from a stream of its own: ``large=0`` gives the same bytes as the generator always did."""
    rng, split, scene = _draw(seed, index)
    if large:
        big = np.random.default_rng([seed, index, 1])
        if big.random() < large:
            k = math.sqrt(big.uniform(1e6, 4e6) / (scene.width * scene.height))
            scene = dataclasses.replace(scene, width=round(scene.width * k), height=round(scene.height * k))
    text = caption(scene, rng)
    im = render(scene, rng)
    buf = io.BytesIO()
    if scene.fmt == "JPEG":
        im.save(buf, "JPEG", quality=scene.quality)
    else:
        im.save(buf, "PNG")
    pmcid = 1_000_000 + int(rng.integers(9_000_000))
    name = f"PMC{pmcid}_Fig{1 + index % 7}_{index}.{'jpg' if scene.fmt == 'JPEG' else 'png'}"
    return split, name, text, buf.getvalue(), scene


def is_complete(out: str | os.PathLike, n: int, seed: int, large: float = 0.0) -> bool:
    path = Path(out) / MANIFEST
    if not path.exists():
        return False
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    made = (m.get("n"), m.get("seed"), m.get("large", 0.0), m.get("generator_version"))
    return made == (n, seed, large, GENERATOR_VERSION)


def generate(
    out: str | os.PathLike,
    n: int = 3000,
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    large: float = 0.0,
) -> dict:
    """Write ``n`` figure-caption pairs to ``out`` in PMC-OA's layout; a no-op when already complete.

    The manifest is written last, so an interrupted run is detected and redone. Figures are
    drawn in ``workers`` processes (default: all cores); each is pure in (seed, index), so the
    files do not depend on the worker count. ``large``: the share of figures drawn at 1-4 megapixels.
    """
    out = Path(out)
    if not force and is_complete(out, n, seed, large):
        return json.loads((out / MANIFEST).read_text())
    if out.exists():
        (out / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(out / IMAGE_DIR, ignore_errors=True)
    images = out / IMAGE_DIR
    images.mkdir(parents=True, exist_ok=True)
    files = {s: open(out / f".{s}.jsonl.tmp", "w", encoding="utf-8") for s in SPLITS}
    counts = {s: 0 for s in SPLITS}
    modalities = {m: 0 for m in MODALITIES}
    workers = max(1, workers or os.cpu_count() or 1)
    pool = get_context("spawn").Pool(workers) if workers > 1 and n >= 64 else None
    figures = (
        pool.imap(partial(figure, seed, large=large), range(n), chunksize=32)
        if pool
        else (figure(seed, i, large) for i in range(n))
    )
    try:
        for split, name, text, data, scene in tqdm(
            figures, total=n, desc="generate", unit="fig", disable=not progress
        ):
            (images / name).write_bytes(data)
            row = {"image": name, "caption": text, "modality": scene.modality, "facts": facts(scene)}
            files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[split] += 1
            modalities[scene.modality] += 1
    finally:
        if pool:
            pool.terminate()
        for f in files.values():
            f.close()
    for s in SPLITS:
        os.replace(out / f".{s}.jsonl.tmp", out / f"{s}.jsonl")
    manifest = {
        "n": n,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        **({"large": large} if large else {}),  # absent when 0: the default's manifest stays as it was
        "splits": counts,
        "modalities": modalities,
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def describe(seed: int, index: int) -> dict:
    """The scene behind figure ``index`` (for tests and the gallery: what the caption must say)."""
    return asdict(figure(seed, index)[4])
