"""Reader for PMC-OA as released: ``{train,valid,test}.jsonl`` (one ``{"image", "caption"}``
object per line) beside an image folder. Everything streams line by line, so
the 1.65M-pair release is never held in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lib.data.reasons import BadInput

SPLITS = ("train", "valid", "test")
IMAGE_DIR = "images"


@dataclass(frozen=True)
class Record:
    split: str
    line: int  # 1-based line number in <split>.jsonl, so reports point at the file
    image: str  # path relative to the image folder, as written in the JSONL
    caption: str
    modality: str | None = None


def pair_id(split: str, line: int) -> str:
    """A pair's id: its split and line. Unique where the image name is not (one figure with two captions,
    ``a.jpg`` beside ``a.png``); carried from the clean index through shards, features, captions and
    scores."""
    return f"{split}-{line}"


class BadRecord(BadInput):
    """A JSONL line that is not a usable pair; ``reason`` is a stable key for reports."""

    def __init__(self, reason: str, detail: str = "", image: str | None = None):
        super().__init__(reason, detail)
        self.image = image  # known once the line parsed, so reports can name the file


def split_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The split files present in ``data_dir`` (regular files only: a FIFO would block), in train/valid/test
    order."""
    data_dir = Path(data_dir)
    found = {s: data_dir / f"{s}.jsonl" for s in SPLITS if (data_dir / f"{s}.jsonl").is_file()}
    if not found:
        raise FileNotFoundError(
            f"{data_dir}: no PMC-OA split files (expected one of {', '.join(s + '.jsonl' for s in SPLITS)})"
        )
    return found


def image_root(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / IMAGE_DIR


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without the newline) for every non-blank line; a UTF-8 byte-order mark
    (editors on Windows write one) is not part of the first line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\r\n")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if raw.strip():
                yield number, raw


def parse_record(split: str, line: int, raw: bytes, max_caption_chars: int = 10_000) -> Record:
    """One JSONL line → Record, or BadRecord naming what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord("non_utf8", f"byte {e.start} is not UTF-8") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRecord("malformed_json", e.msg) from None
    if not isinstance(obj, dict):
        raise BadRecord("malformed_json", f"expected an object, got {type(obj).__name__}")
    for key in ("image", "caption"):
        if not isinstance(obj.get(key), str):
            raise BadRecord("missing_field", f"{key!r} missing or not a string")
    image, caption = obj["image"], obj["caption"]
    try:
        caption.encode("utf-8")  # JSON escapes can smuggle in lone surrogates
    except UnicodeEncodeError:
        raise BadRecord("non_utf8", "caption holds an unpaired surrogate", image) from None
    if not caption.strip():
        raise BadRecord("empty_caption", "", image)
    if len(caption) > max_caption_chars:
        raise BadRecord("caption_too_long", f"{len(caption)} characters > {max_caption_chars}", image)
    modality = obj.get("modality")
    return Record(split, line, image, caption, modality if isinstance(modality, str) else None)


def read_index(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the clean index that ``validate`` writes (one JSON object per kept pair)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def recorded_facts(data_dir: str | os.PathLike, split: str) -> dict[str, dict]:
    """Scene facts by pair id where the split file records them (the embedded default's generator does;
    real data does not: an empty dict). Lines that are not JSON objects are left to ``validate``."""
    path = Path(data_dir) / f"{split}.jsonl"
    out = {}
    if not path.is_file():
        return out
    for line, raw in iter_lines(path):
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("facts"), dict):
            out[pair_id(split, line)] = obj["facts"]
    return out
