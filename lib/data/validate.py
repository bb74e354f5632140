"""Check every PMC-OA pair once; write a report of what was skipped and why, and a clean index.

Each bad pair becomes a row ``{"split", "line", "image", "reason", "detail"}`` with a reason from
``lib.data.reasons``; images in a mode we can convert safely (CMYK, 16-bit, palette, alpha, the
first frame of several) are kept and listed under ``converted``. The report also says, per split,
whether its file was there and how many lines it held. The clean index (JSONL, one kept pair a line,
with its id, its image's size, mode, format and a digest of its bytes) is what every later stage reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from functools import partial
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from lib.config import shown
from lib.data.files import content_digest, read_data_file
from lib.data.images import decode
from lib.data.pmcoa import SPLITS, image_root, iter_lines, pair_id, parse_record, split_files
from lib.data.reasons import BadInput, skip_row
from lib.results import write_json_atomic
from lib.settings import Limits


def check_line(job: tuple[str, int, bytes], root: Path, limits: Limits) -> dict:
    """Everything that can be decided from one line alone (runs in worker processes)."""
    split, line, raw = job
    where = {"split": split, "line": line}
    row = {**where, "id": pair_id(split, line)}
    try:
        rec = parse_record(split, line, raw, limits.max_caption_chars)
        row.update(image=rec.image, caption=rec.caption, modality=rec.modality)
        data = read_data_file(root, rec.image, limits.max_file_bytes)
        im = decode(data, limits.max_pixels)
    except BadInput as bad:
        return skip_row(
            bad.reason, bad.detail, **where, image=getattr(bad, "image", None) or row.get("image")
        )
    except Exception as e:  # noqa: BLE001 - one odd file must not end a 1.65M-pair run
        return skip_row("unexpected_error", f"{type(e).__name__}: {e}", **where, image=row.get("image"))
    digest = content_digest(data)
    # 64-bit key: ~100 B a pair in the duplicate table for the 1.65M release, collisions ~1e-7 likely.
    pair_key = int.from_bytes(
        hashlib.blake2b(f"{digest}\x00{rec.caption.strip()}".encode(), digest_size=8).digest(), "big"
    )
    return {
        **row,
        "width": im.image.width,
        "height": im.image.height,
        "mode": im.mode,
        "format": im.format,
        "bytes": len(data),
        "conversion": im.conversion,
        "frames": im.frames,
        "digest": digest,
        "pair_key": pair_key,
    }


def _jobs(data_dir: Path) -> Iterator[tuple[str, int, bytes]]:
    for split, path in split_files(data_dir).items():
        for line, raw in iter_lines(path):
            yield split, line, raw


def _splits(data_dir: Path, counts: Counter, kept: Counter) -> tuple[dict, list[str]]:
    """Per split: whether its file is there, its non-blank lines and kept pairs; and warnings for
    splits a study needs that are missing or empty (training wants train, evaluation test)."""
    splits, warnings = {}, []
    for split in SPLITS:
        path = data_dir / f"{split}.jsonl"
        state = "missing" if not path.is_file() else "empty" if counts[split] == 0 else "present"
        splits[split] = {"file": state, "lines": counts[split], "kept": kept[split]}
        if state != "present":
            warnings.append(f"{path.name} is {'missing' if state == 'missing' else 'empty (no pair in it)'}")
        elif kept[split] == 0:
            warnings.append(f"{path.name}: none of its {counts[split]} pairs was kept")
    return splits, warnings


def _checked(data_dir: Path, root: Path, limits: Limits, workers: int) -> Iterator[dict]:
    check = partial(check_line, root=root, limits=limits)
    if workers <= 1:
        yield from map(check, _jobs(data_dir))
        return
    # imap keeps file order (reports and the index stay deterministic) and streams in chunks.
    with get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(check, _jobs(data_dir), chunksize=64)


def data_digest(data_dir: str | os.PathLike) -> str:
    """What a clean index is made from: the split files' bytes and the image folder's listing (each
    entry's path, size and modification time; no image is read). Another dataset, an edited caption or
    a replaced image gives another digest."""
    data_dir, h = Path(data_dir), hashlib.sha256()
    for split, path in split_files(data_dir).items():
        h.update(f"{split}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    root = image_root(data_dir)
    for folder, dirs, names in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(names):
            st = os.lstat(os.path.join(folder, name))
            rel = os.path.relpath(os.path.join(folder, name), root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def ensure_index(
    data_dir: str | os.PathLike,
    index: str | os.PathLike,
    report: str | os.PathLike,
    workers: int = 1,
    limits: Limits = Limits(),
    progress: bool = True,
) -> Path:
    """The clean index of ``data_dir`` at ``index``: reused only when its ``report`` says it was made
    from exactly this data (``data_digest``), else validated again, saying why."""
    index, report = Path(index), Path(report)
    if index.exists() and report.exists():
        if json.loads(report.read_text()).get("source") == data_digest(data_dir):
            return index
        print(f"{index} was made from other data than {shown(data_dir)}: validating again", file=sys.stderr)
    validate(data_dir, report, index, workers=workers, limits=limits, progress=progress)
    return index


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
    source = data_digest(data_dir)  # before reading: a change while validating shows as stale next time
    first_seen: dict[int, tuple[str, int]] = {}
    skipped, converted = [], []
    lines, kept = Counter(), Counter()
    index_tmp = None
    if index_path:
        index_path = Path(index_path)
        index_path.parent.mkdir(parents=True, exist_ok=True)
        index_tmp = index_path.with_name(f".{index_path.name}.tmp")
        index_file = open(index_tmp, "w", encoding="utf-8")
    try:
        for row in tqdm(
            _checked(data_dir, root, limits, workers), desc="validate", unit="pair", disable=not progress
        ):
            lines[row["split"]] += 1
            if "reason" not in row:
                first = first_seen.setdefault(row.pop("pair_key"), (row["split"], row["line"]))
                if first != (row["split"], row["line"]):
                    row = skip_row(
                        "duplicate_pair",
                        f"same image and caption as {first[0]} line {first[1]}",
                        **{k: row[k] for k in ("split", "line", "image")},
                    )
            if "reason" in row:
                skipped.append({k: row.get(k) for k in ("split", "line", "image", "reason", "detail")})
                continue
            kept[row["split"]] += 1
            if row["conversion"]:
                converted.append(
                    {k: row[k] for k in ("split", "line", "image", "mode", "format", "conversion")}
                )
            if index_tmp:
                index_file.write(json.dumps(row, ensure_ascii=False) + "\n")
        if index_tmp:
            index_file.close()
            os.replace(index_tmp, index_path)
    finally:
        if index_tmp and not index_file.closed:
            index_file.close()
            index_tmp.unlink(missing_ok=True)
    splits, warnings = _splits(data_dir, lines, kept)
    report = {
        "data": shown(data_dir),
        "source": source,
        "kept": sum(kept.values()),
        "skipped_count": len(skipped),
        "reasons": dict(sorted(Counter(s["reason"] for s in skipped).items())),
        "conversions": dict(sorted(Counter(c["conversion"] for c in converted).items())),
        "splits": splits,
        "warnings": warnings,
        "limits": {
            "max_pixels": limits.max_pixels,
            "max_caption_chars": limits.max_caption_chars,
            "max_file_bytes": limits.max_file_bytes,
        },
        "skipped": skipped,
        "converted": converted,
    }
    write_json_atomic(report_path, report)
    return report
