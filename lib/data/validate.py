"""Check every PMC-OA pair once; write a report of what was skipped and why, and a clean index.

Each bad pair becomes a row ``{"split", "line", "image", "reason", "detail"}``;
images in a mode we can convert safely (CMYK, 16-bit, palette, alpha) are kept
and listed under ``converted``. The clean index (JSONL, one kept pair a line,
with its image's size and mode) is what every later stage reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from lib.data.images import MAX_PIXELS, BadImage, decode
from lib.data.pmcoa import BadRecord, image_root, iter_lines, parse_record, split_files
from lib.results import write_json_atomic


@dataclass(frozen=True)
class Limits:
    max_pixels: int = MAX_PIXELS
    max_caption_chars: int = 10_000


def _resolve_image(root: Path, name: str) -> Path:
    """The image's path under root, or BadRecord if the name could reach outside it."""
    if "\x00" in name or not name.strip():
        raise BadRecord("unsafe_path", "empty name or NUL byte")
    if os.path.isabs(name) or name.startswith("~"):
        raise BadRecord("unsafe_path", "absolute path")
    path = (root / name).resolve()  # resolve() also follows symlinks that point outside
    if not path.is_relative_to(root.resolve()):
        raise BadRecord("unsafe_path", "escapes the image folder")
    return path


def check_line(job: tuple[str, int, bytes], root: Path, limits: Limits) -> dict:
    """Everything that can be decided from one line alone (runs in worker processes)."""
    split, line, raw = job
    row = {"split": split, "line": line}
    try:
        rec = parse_record(split, line, raw, limits.max_caption_chars)
        row.update(image=rec.image, caption=rec.caption, modality=rec.modality)
        path = _resolve_image(root, rec.image)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BadRecord("missing_file", str(path)) from None
        except IsADirectoryError:
            raise BadRecord("missing_file", f"{path} is a folder") from None
        im, mode, conversion = decode(data, limits.max_pixels)
    except (BadRecord, BadImage) as bad:
        if getattr(bad, "image", None):
            row["image"] = bad.image
        return {**row, "reason": bad.reason, "detail": bad.detail}
    except Exception as e:  # noqa: BLE001 - one odd file must not end a 1.65M-pair run
        return {**row, "reason": "unexpected_error", "detail": f"{type(e).__name__}: {e}"}
    # 64-bit key: ~100 B a pair in the duplicate table for the 1.65M release, collisions ~1e-7 likely.
    digest = int.from_bytes(hashlib.blake2b(data + b"\x00" + rec.caption.strip().encode(), digest_size=8).digest(), "big")
    return {
        **row, "width": im.width, "height": im.height, "mode": mode, "format": im.format or _format(data),
        "bytes": len(data), "conversion": conversion, "digest": digest,
    }


def _format(data: bytes) -> str:
    return "PNG" if data[:8] == b"\x89PNG\r\n\x1a\n" else "JPEG" if data[:2] == b"\xff\xd8" else "unknown"


def _jobs(data_dir: Path) -> Iterator[tuple[str, int, bytes]]:
    for split, path in split_files(data_dir).items():
        for line, raw in iter_lines(path):
            yield split, line, raw


def _checked(data_dir: Path, root: Path, limits: Limits, workers: int) -> Iterator[dict]:
    check = partial(check_line, root=root, limits=limits)
    if workers <= 1:
        yield from map(check, _jobs(data_dir))
        return
    # imap keeps file order (reports and the index stay deterministic) and streams in chunks.
    with get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(check, _jobs(data_dir), chunksize=64)


def validate(
    data_dir: str | os.PathLike,
    report_path: str | os.PathLike,
    index_path: str | os.PathLike | None = None,
    workers: int = 1,
    limits: Limits = Limits(),
    progress: bool = True,
) -> dict:
    """Check every pair under ``data_dir``; write the report (and the clean index) atomically."""
    data_dir = Path(data_dir)
    root = image_root(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{data_dir}: no image folder {root.name}/")
    first_seen: dict[int, tuple[str, int]] = {}
    skipped, converted = [], []
    kept = 0
    index_tmp = None
    if index_path:
        index_path = Path(index_path)
        index_path.parent.mkdir(parents=True, exist_ok=True)
        index_tmp = index_path.with_name(f".{index_path.name}.tmp")
        index_file = open(index_tmp, "w", encoding="utf-8")
    try:
        for row in tqdm(_checked(data_dir, root, limits, workers), desc="validate", unit="pair", disable=not progress):
            if "reason" not in row:
                first = first_seen.setdefault(row["digest"], (row["split"], row["line"]))
                if first != (row["split"], row["line"]):
                    row = {**row, "reason": "duplicate_pair", "detail": f"same image and caption as {first[0]} line {first[1]}"}
            if "reason" in row:
                skipped.append({k: row.get(k) for k in ("split", "line", "image", "reason", "detail")})
                continue
            kept += 1
            if row["conversion"]:
                converted.append({k: row[k] for k in ("split", "line", "image", "mode", "conversion")})
            if index_tmp:
                entry = {k: v for k, v in row.items() if k != "digest"}
                index_file.write(json.dumps(entry, ensure_ascii=False) + "\n")
        if index_tmp:
            index_file.close()
            os.replace(index_tmp, index_path)
    finally:
        if index_tmp and not index_file.closed:
            index_file.close()
            index_tmp.unlink(missing_ok=True)
    report = {
        "data": str(data_dir),
        "kept": kept,
        "skipped_count": len(skipped),
        "reasons": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "conversions": dict(sorted(Counter(c["conversion"] for c in converted).items())),
        "limits": {"max_pixels": limits.max_pixels, "max_caption_chars": limits.max_caption_chars},
        "skipped": skipped,
        "converted": converted,
    }
    write_json_atomic(report_path, report)
    return report
