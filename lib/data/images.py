"""The one place that decides whether an image file is usable, and how it is normalised.

``open_image`` returns a decoded 8-bit RGB or L image or raises ``BadImage``
with a stable reason; validation and preprocessing both call it, so the
bad-input policy lives here once.
"""

from __future__ import annotations

import io
import warnings
import zlib

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# PMC-OA figures are ~271x238 px; a declared size beyond this is a decompression bomb, not a figure.
MAX_PIXELS = 40_000_000


class BadImage(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, str, str | None]:
    """Decode image bytes → (image in mode RGB or L, original mode, conversion applied or None)."""
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
        raise BadImage("truncated" if truncated else "corrupt", f"decode: {message or type(e).__name__}") from None
    mode = im.mode
    out, conversion = _normalise_mode(im)
    return out, mode, conversion


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
