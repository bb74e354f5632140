"""Deterministic development subsets of PMC-OA (the seed study's 10k / 100k pairs).

Each line gets a key = hash(seed, line bytes); a split keeps its lines with the
smallest keys. So a subset does not depend on file order or on the machine,
and for one seed the 10k subset lies inside the 100k one. Memory holds only
the chosen line numbers, never the release.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from lib.data.files import BadFile, checked_path
from lib.data.pmcoa import IMAGE_DIR, image_root, iter_lines, split_files
from lib.results import write_json_atomic


def _key(seed: int, raw: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8, key=str(seed).encode()).digest(), "big")


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split n across splits in proportion to their sizes (largest remainder, so it sums to n)."""
    total = sum(sizes.values())
    if n >= total:
        return dict(sizes)
    exact = {s: n * size / total for s, size in sizes.items()}
    alloc = {s: int(x) for s, x in exact.items()}
    for s in sorted(exact, key=lambda s: (alloc[s] - exact[s], s))[: n - sum(alloc.values())]:
        alloc[s] += 1
    return alloc


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)  # no copy of the bytes when on the same filesystem
    except OSError:
        shutil.copy2(src, dst)


def subset(
    data_dir: str | os.PathLike, n: int, out: str | os.PathLike, seed: int = 0, progress: bool = True
) -> dict:
    """Write an ``n``-pair subset of ``data_dir`` to ``out`` (same layout; images hard-linked or copied)."""
    if n < 1:
        raise ValueError(f"--n must be positive, got {n}")
    data_dir, out = Path(data_dir), Path(out)
    if out.resolve() == data_dir.resolve():
        raise ValueError("--out must differ from --data")
    files = split_files(data_dir)
    sizes = {s: sum(1 for _ in iter_lines(p)) for s, p in files.items()}
    want = allocate(sizes, n)
    src_root, dst_root = image_root(data_dir), out / IMAGE_DIR
    dst_root.mkdir(parents=True, exist_ok=True)
    summary = {
        "source": str(data_dir),
        "n": n,
        "seed": seed,
        "splits": {},
        "images_linked": 0,
        "images_not_found": 0,
    }
    bar = tqdm(total=sum(want.values()), desc="subset", unit="pair", disable=not progress)
    for split, path in files.items():
        heap: list[tuple[int, int]] = []  # (-key, line): a max-heap of the want[split] smallest keys
        for line, raw in iter_lines(path):
            item = (-_key(seed, raw), line)
            if len(heap) < want[split]:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
        chosen = {line for _, line in heap}
        tmp = out / f".{split}.jsonl.tmp"
        with open(tmp, "wb") as f:
            for line, raw in iter_lines(path):
                if line not in chosen:
                    continue
                f.write(raw + b"\n")
                bar.update()
                name = _image_name(raw)
                src = _source(src_root, name)
                # Only safe, existing files are carried over; validate reports the rest on the subset.
                if src:
                    _link(src, dst_root / name)
                    summary["images_linked"] += 1
                else:
                    summary["images_not_found"] += 1
        os.replace(tmp, out / f"{split}.jsonl")
        summary["splits"][split] = len(chosen)
    bar.close()
    write_json_atomic(out / "subset.json", summary)
    return summary


def _image_name(raw: bytes) -> str | None:
    try:
        name = json.loads(raw).get("image")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _source(root: Path, name: str | None) -> Path | None:
    """The image file a line names, if it is a regular file inside the image folder (lib.data.files)."""
    if name is None:
        return None
    try:
        path = checked_path(root, name)
    except BadFile:
        return None
    return path if path.is_file() else None
