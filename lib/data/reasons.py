"""Why a pair is skipped: every reason the data stages can give, defined once.

``validate`` lists each skipped pair with one of these keys, ``preprocess`` each quarantined image;
the README's table of bad inputs is checked against this mapping by a test, and ``BadInput``
refuses any other key, so a report never holds a reason nobody documented.
"""

from __future__ import annotations

REASONS: dict[str, str] = {
    # the JSONL line
    "malformed_json": "the line is not one JSON object (a UTF-8 byte-order mark at the start of a file is "
    "accepted)",
    "missing_field": "`image` or `caption` is missing or not a string",
    "non_utf8": "the line, or an escape in the caption, is not valid UTF-8",
    "empty_caption": "the caption is empty or only whitespace",
    "caption_too_long": "the caption is longer than `--max-caption-chars` (default 10,000)",
    # the image path, checked where the file is opened (lib/data/files.py)
    "unsafe_path": "absolute, empty, `..` outside the image folder, a symlink leading out of it, or a file "
    "swapped for a symlink after it was checked",
    "symlink_loop": "the path runs into a loop of symbolic links",
    "missing_file": "no file at that path (or a path through a file)",
    "not_regular_file": "a folder, FIFO, socket or device: reading it could block or never end",
    "too_large": "larger than `--max-file-bytes` (default 256 MiB), refused before it is read",
    "unreadable": "the operating system refused to read it (permissions, I/O error)",
    # the image bytes (lib/data/images.py)
    "empty_file": "0 bytes",
    "corrupt": "not a recognised image, or its data do not decode",
    "truncated": "the image data end early",
    "decompression_bomb": "declares more than `--max-pixels` pixels (default 40 M)",
    "unsupported_mode": "a pixel mode that cannot be converted to RGB without guessing",
    # across pairs and stages
    "duplicate_pair": "the same image bytes and caption as an earlier pair (in any split)",
    "changed_since_validation": "preprocess found other bytes than validate checked (the file changed in "
    "between)",
    "unexpected_error": "an error this study does not anticipate: a bug, please report it with the file",
}


class BadInput(ValueError):
    """A pair that is skipped, with a stable ``reason`` from ``REASONS`` and a human ``detail``."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise KeyError(f"{reason!r} is not a documented skip reason (lib/data/reasons.py)")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def skip_row(reason: str, detail: str, **where) -> dict:
    """A report row for a skipped pair: where it is, and why (only documented reasons)."""
    if reason not in REASONS:
        raise KeyError(f"{reason!r} is not a documented skip reason (lib/data/reasons.py)")
    return {**where, "reason": reason, "detail": detail}
