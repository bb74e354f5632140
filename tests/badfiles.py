"""Build a PMC-OA-format folder holding one pair of every bad-input kind validate must catch, and of
every kind it must keep although a careless reader would not (same stem, same image twice, a BOM)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(seed: int, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _frames(fmt: str) -> bytes:
    """An animated GIF or a multi-page TIFF: three frames, of which a figure keeps the first."""
    frames = [_photo(10 + i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _rgb16_png() -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL opens it as 8-bit RGB without saying so)."""
    import cv2

    arr = np.arange(48 * 64 * 3, dtype=np.uint16).reshape(48, 64, 3) * 7
    return cv2.imencode(".png", arr)[1].tobytes()


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny, valid PNG whose header declares width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# expected outcome per image name: ("skip", reason) or ("convert", conversion) or ("keep", None)
def build(root: Path) -> dict[str, tuple[str, str | None]]:
    """Write ``root/{train,valid}.jsonl`` + ``root/images``; return {caption tag: expected outcome}."""
    images = root / "images"
    images.mkdir(parents=True)
    good_jpeg = _encode(_photo(0), "JPEG", quality=90)
    good_png = _encode(_photo(1), "PNG")
    files = {
        "good.jpg": good_jpeg,
        "good_grey.png": _encode(_photo(2).convert("L"), "PNG"),
        "corrupt.jpg": b"this is not an image at all" * 10,
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "truncated.png": good_png[: len(good_png) // 2],
        "empty.jpg": b"",
        "bomb.png": _png_bomb(100_000, 100_000),
        "cmyk.jpg": _encode(_photo(3).convert("CMYK"), "JPEG"),
        "sixteen.png": _encode(
            Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20), "PNG"
        ),
        "palette.png": _encode(_photo(4).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "rgba.png": _encode(_photo(5).convert("RGBA"), "PNG"),
        "dup.jpg": _encode(_photo(6), "JPEG"),
        "a.jpg": _encode(_photo(7), "JPEG"),  # one stem, two files
        "a.png": _encode(_photo(8), "PNG"),
        "rgb16.png": _rgb16_png(),
        "anim.gif": _frames("GIF"),
        "pages.tif": _frames("TIFF"),
    }
    for name, data in files.items():
        (images / name).write_bytes(data)
    (root / "outside.jpg").write_bytes(good_jpeg)  # reachable only by escaping the image folder
    os.mkfifo(images / "pipe.jpg")  # opening it to read would block until a writer came
    with open(
        images / "huge.jpg", "wb"
    ) as f:  # 2 GiB that take no disk: reading it would take 2 GiB of memory
        f.write(good_jpeg)
        f.truncate(2**31)
    (images / "folder.jpg").mkdir()
    os.symlink("loop_b.jpg", images / "loop_a.jpg")
    os.symlink("loop_a.jpg", images / "loop_b.jpg")
    os.symlink(root / "outside.jpg", images / "link_out.jpg")  # a symlink leading out of the image folder
    os.symlink("good.jpg", images / "link_in.jpg")  # one that stays inside it is a file like any other

    def line(image, caption):
        return json.dumps({"image": image, "caption": caption}).encode()

    rows: list[tuple[bytes, str, tuple[str, str | None]]] = [
        # a byte-order mark before the first line, as editors on Windows write
        (b"\xef\xbb\xbf" + line("good.jpg", "A chest radiograph."), "good", ("keep", None)),
        (line("good_grey.png", "A greyscale CT slice."), "grey", ("keep", None)),
        (line("corrupt.jpg", "Corrupt."), "corrupt", ("skip", "corrupt")),
        (line("truncated.jpg", "Truncated JPEG."), "truncated_jpeg", ("skip", "truncated")),
        (line("truncated.png", "Truncated PNG."), "truncated_png", ("skip", "truncated")),
        (line("empty.jpg", "Zero bytes."), "empty", ("skip", "empty_file")),
        (line("bomb.png", "Bomb."), "bomb", ("skip", "decompression_bomb")),
        (line("cmyk.jpg", "CMYK figure."), "cmyk", ("convert", "cmyk_to_rgb")),
        (line("sixteen.png", "16-bit figure."), "sixteen", ("convert", "16bit_to_8bit")),
        (line("palette.png", "Palette figure."), "palette", ("convert", "palette_to_rgb")),
        (line("rgba.png", "RGBA figure."), "rgba", ("convert", "alpha_flattened")),
        (line("nowhere.jpg", "Missing file."), "missing", ("skip", "missing_file")),
        (line("../outside.jpg", "Escapes the root."), "escape", ("skip", "unsafe_path")),
        (line("/etc/hostname", "Absolute path."), "absolute", ("skip", "unsafe_path")),
        (b'{"image": "good.jpg", "caption": "unterminated', "malformed", ("skip", "malformed_json")),
        (line("good.jpg", "   "), "empty_caption", ("skip", "empty_caption")),
        (b'{"image": "good.jpg", "caption": "caf\xe9 latte"}', "non_utf8", ("skip", "non_utf8")),
        (line("good.jpg", "x" * 20_000), "long", ("skip", "caption_too_long")),
        (json.dumps({"image": "good.jpg"}).encode(), "no_caption", ("skip", "missing_field")),
        (line("dup.jpg", "Duplicated pair."), "dup_first", ("keep", None)),
        (line("good.jpg", "The same radiograph, described again."), "same_image", ("keep", None)),
        (line("a.jpg", "Stem a, a JPEG."), "stem_jpg", ("keep", None)),
        (line("a.png", "Stem a, a PNG."), "stem_png", ("keep", None)),
        (line("link_in.jpg", "Through a symlink inside the folder."), "link_in", ("keep", None)),
        (line("rgb16.png", "16-bit RGB figure."), "rgb16", ("convert", "16bit_to_8bit")),
        (line("anim.gif", "Animated figure."), "gif", ("convert", "first_frame+palette_to_rgb")),
        (line("pages.tif", "Multi-page figure."), "tiff", ("convert", "first_frame")),
        (line("pipe.jpg", "A FIFO."), "fifo", ("skip", "not_regular_file")),
        (line("folder.jpg", "A folder."), "folder", ("skip", "not_regular_file")),
        (line("huge.jpg", "2 GiB, sparse."), "huge", ("skip", "too_large")),
        (line("loop_a.jpg", "A symlink loop."), "loop", ("skip", "symlink_loop")),
        (line("link_out.jpg", "A symlink out of the folder."), "link_out", ("skip", "unsafe_path")),
        (line("good.jpg/x.jpg", "A path through a file."), "through_file", ("skip", "missing_file")),
    ]
    dup = (line("dup.jpg", "Duplicated pair."), "dup_second", ("skip", "duplicate_pair"))
    train = b"\n".join(r[0] for r in rows) + b"\n"
    (root / "train.jsonl").write_bytes(train)
    # The duplicate sits in another split: duplicates are found across the whole release.
    (root / "valid.jsonl").write_bytes(dup[0] + b"\n")
    expected = {("train", i + 1): r[2] for i, r in enumerate(rows)}
    expected[("valid", 1)] = dup[2]
    return expected
