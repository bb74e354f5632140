"""The one place that decides whether image bytes are usable, and how they are normalised.

``decode`` returns a decoded 8-bit RGB or L image, with what was converted to get there, or raises
``BadImage`` with a stable reason; validation and preprocessing both call it, so the bad-input
policy lives here once. (Which files may be read at all is ``lib.data.files``' job.)
"""

from __future__ import annotations

import io
import warnings
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from lib.data.reasons import BadInput
from lib.settings import MAX_PIXELS


class BadImage(BadInput):
    """Image bytes that do not give a usable figure; ``reason`` says why."""


class Decoded(NamedTuple):
    image: Image.Image  # mode RGB or L, 8 bits a channel
    mode: str  # as stored
    format: str  # PNG, JPEG, TIFF, GIF, ... as the file says (not the converted copy's)
    conversion: str | None  # what was changed to reach 8-bit RGB/L ("+"-joined), None if nothing
    frames: int  # frames or pages in the file; only the first is used


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Decoded:
    """Decode image bytes to 8-bit RGB or L, listing every conversion (mode, bit depth, frames)."""
    if not data:
        raise BadImage("empty_file", "0 bytes")
    # A truncated file must fail, not be padded with grey (PIL's lenient mode is global state).
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise BadImage("decompression_bomb", str(e)) from None
    except UnidentifiedImageError:
        raise BadImage("corrupt", "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImage("corrupt", f"header: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise BadImage("decompression_bomb", f"declares {w}x{h} = {w * h} px > {max_pixels}")
    if w < 1 or h < 1:
        raise BadImage("corrupt", f"declares {w}x{h} px")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
    except (OSError, EOFError, SyntaxError, ValueError, zlib.error) as e:
        message = str(e)
        truncated = isinstance(e, EOFError) or "truncat" in message.lower() or "broken data stream" in message
        raise BadImage(
            "truncated" if truncated else "corrupt", f"decode: {message or type(e).__name__}"
        ) from None
    mode, fmt, frames = im.mode, im.format or "unknown", getattr(im, "n_frames", 1)
    out, conversion = _normalise_mode(im)
    if _bits_per_sample(im, data) > 8 and not (conversion or "").startswith(("16bit", "32bit")):
        conversion = "+".join(filter(None, ("16bit_to_8bit", conversion)))  # PIL keeps 16-bit RGB's high byte
    if frames > 1:  # animated GIF, multi-page TIFF: the figure is taken to be the first frame
        conversion = "+".join(filter(None, ("first_frame", conversion)))
    return Decoded(out, mode, fmt, conversion, frames)


def _bits_per_sample(im: Image.Image, data: bytes) -> int:
    """Bit depth the file stores per channel, where the format says so (PIL's RGB mode hides 16 bits)."""
    if im.format == "PNG" and len(data) > 24:
        return data[24]  # IHDR bit depth
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, 8)
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _normalise_mode(im: Image.Image) -> tuple[Image.Image, str | None]:
    """8-bit RGB or L, converting only where it loses nothing a figure needs."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im, None
    if mode == "CMYK":
        return im.convert("RGB"), "cmyk_to_rgb"
    if mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.uint16)
        return Image.fromarray((arr >> 8).astype(np.uint8), "L"), "16bit_to_8bit"
    if mode in ("I", "F"):
        # 32-bit data has no fixed range: stretch what is there into 0..255.
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.round(scaled).astype(np.uint8), "L"), "32bit_to_8bit"
    if mode == "1":
        return im.convert("L"), "bilevel_to_l"
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        if not has_alpha:
            return im.convert("RGB"), "palette_to_rgb"
        im = im.convert("RGBA")
        return _flatten(im), "palette_alpha_to_rgb"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        return _flatten(im.convert("RGBA" if mode.startswith("RGB") else "LA")), "alpha_flattened"
    try:
        return im.convert("RGB"), f"{mode.lower()}_to_rgb"
    except (ValueError, OSError) as e:
        raise BadImage("unsupported_mode", f"{mode}: {e}") from None


def _flatten(im: Image.Image) -> Image.Image:
    """Composite over white: transparent figure backgrounds are white on the page."""
    target = "L" if im.mode == "LA" else "RGB"
    background = Image.new(target, im.size, 255)
    background.paste(im.convert(target), mask=im.getchannel("A"))
    return background
