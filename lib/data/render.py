"""Drawing a ``Scene`` as a figure: anatomy or a specimen, the finding where the scene puts it, an
arrow, a panel letter and a scale bar, at PMC-OA's sizes and colour modes."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lib.data.scenes import RADIOLOGY, REGIONS, SCALE_BAR_UM, STAIN_COLOUR, Scene


class Canvas:
    """Float intensity layers drawn with PIL (fast) and mixed with numpy."""

    def __init__(self, w: int, h: int, rng: np.random.Generator):
        self.w, self.h, self.s, self.rng = w, h, min(w, h), rng

    def mask(self, draw_fn) -> np.ndarray:
        layer = Image.new("L", (self.w, self.h), 0)
        draw_fn(ImageDraw.Draw(layer), self)
        return np.asarray(layer, dtype=np.float32) / 255.0

    def px(self, fx: float, fy: float) -> tuple[float, float]:
        return fx * self.w, fy * self.h

    def ellipse(self, fx, fy, rx, ry, width=0):
        """Mask of an ellipse centred at fractional (fx, fy), radii as fractions of the short side."""
        x, y = self.px(fx, fy)
        box = [x - rx * self.s, y - ry * self.s, x + rx * self.s, y + ry * self.s]
        if width:
            return self.mask(lambda d, c: d.ellipse(box, outline=255, width=max(1, int(width * self.s))))
        return self.mask(lambda d, c: d.ellipse(box, fill=255))

    def blob(self, fx, fy, r, roughness=0.3):
        """An irregular lesion outline (what makes a 'mass' look unlike a round 'nodule')."""
        x, y = self.px(fx, fy)
        n = 18
        radii = r * self.s * (1 + roughness * (self.rng.random(n) - 0.5))
        pts = [
            (x + rr * math.cos(2 * math.pi * k / n), y + rr * math.sin(2 * math.pi * k / n))
            for k, rr in enumerate(radii)
        ]
        return self.mask(lambda d, c: d.polygon(pts, fill=255))

    def dots(self, centres, r):
        rad = max(1.0, r * self.s)

        def draw(d, c):
            for x, y in centres:
                d.ellipse([x - rad, y - rad, x + rad, y + rad], fill=255)

        return self.mask(draw)

    def scatter(self, n, fx=0.5, fy=0.5, spread=None):
        """n pixel positions: uniform over the field, or normal around (fx, fy) with the given spread."""
        if spread is None:
            return np.c_[self.rng.uniform(0, self.w, n), self.rng.uniform(0, self.h, n)]
        x, y = self.px(fx, fy)
        return np.c_[self.rng.normal(x, spread * self.s, n), self.rng.normal(y, spread * self.s, n)]


def _paint(base: np.ndarray, mask: np.ndarray, value) -> np.ndarray:
    """Alpha-blend ``value`` into ``base`` where ``mask`` is set (works for grey and RGB)."""
    m = mask[..., None] if base.ndim == 3 else mask
    return base * (1 - m) + np.asarray(value, dtype=np.float32) * m


def _anatomy(c: Canvas, modality: str, region: str) -> np.ndarray:
    img = np.full((c.h, c.w), 0.04, np.float32)
    if modality == "ultrasound":
        cx, top = c.w / 2, 0.04 * c.h
        fan = [(cx, top)] + [
            (cx + 1.1 * c.h * math.sin(a), top + 1.1 * c.h * math.cos(a)) for a in np.linspace(-0.6, 0.6, 12)
        ]
        sector = c.mask(lambda d, _: d.polygon(fan, fill=255))
        img = _paint(img, sector, 0.32)
        organ = {
            "liver": c.ellipse(0.5, 0.6, 0.55, 0.35),
            "thyroid": c.ellipse(0.5, 0.55, 0.38, 0.18),
            "kidney": c.ellipse(0.5, 0.55, 0.34, 0.2),
        }[region] * sector
        img = _paint(img, organ, 0.48)
        if region == "kidney":
            img = _paint(img, c.ellipse(0.5, 0.55, 0.16, 0.07), 0.75)  # echogenic sinus
        if region == "thyroid":
            img = _paint(img, c.ellipse(0.5, 0.42, 0.09, 0.09, width=0.03), 0.85)  # trachea ring
        return img * sector
    if region in ("chest",):
        img = _paint(img, c.ellipse(0.5, 0.52, 0.62, 0.46), 0.42 if modality == "xray" else 0.5)
        for side in (0.3, 0.7):
            img = _paint(img, c.ellipse(side, 0.48, 0.17, 0.33), 0.1)
        if modality == "xray":
            for k in range(6):
                rib = c.mask(
                    lambda d, _, k=k: d.arc(
                        [0.12 * c.w, (0.16 + 0.1 * k) * c.h, 0.88 * c.w, (0.36 + 0.1 * k) * c.h],
                        200,
                        340,
                        fill=255,
                        width=2,
                    )
                )
                img = _paint(img, rib, 0.3)
            img = _paint(
                img,
                c.mask(lambda d, _: d.rectangle([0.47 * c.w, 0.05 * c.h, 0.53 * c.w, 0.95 * c.h], fill=255)),
                0.62,
            )
        else:
            img = _paint(img, c.ellipse(0.55, 0.55, 0.14, 0.12), 0.58)  # heart
            img = _paint(img, c.ellipse(0.5, 0.86, 0.06, 0.05), 0.92)  # vertebra
    elif region in ("head", "brain"):
        img = _paint(img, c.ellipse(0.5, 0.5, 0.42, 0.46), 0.85 if modality == "mri" else 0.95)
        img = _paint(img, c.ellipse(0.5, 0.5, 0.38, 0.42), 0.45)
        img = _paint(img, c.ellipse(0.44, 0.48, 0.05, 0.12), 0.15)  # ventricles
        img = _paint(img, c.ellipse(0.56, 0.48, 0.05, 0.12), 0.15)
    elif region == "abdomen":
        img = _paint(img, c.ellipse(0.5, 0.52, 0.6, 0.42), 0.48)
        img = _paint(img, c.ellipse(0.32, 0.45, 0.2, 0.18), 0.58)  # liver (patient's right)
        for side in (0.36, 0.64):
            img = _paint(img, c.ellipse(side, 0.7, 0.06, 0.09), 0.66)  # kidneys
        img = _paint(img, c.ellipse(0.5, 0.8, 0.06, 0.05), 0.92)
    elif region == "hand":
        img = _paint(img, c.ellipse(0.5, 0.68, 0.3, 0.3), 0.3)
        for k in range(5):
            fx = 0.3 + 0.1 * k
            img = _paint(
                img,
                c.mask(
                    lambda d, _, fx=fx: d.rectangle(
                        [(fx - 0.03) * c.w, 0.1 * c.h, (fx + 0.03) * c.w, 0.7 * c.h], fill=255
                    )
                ),
                0.72,
            )
    elif region == "knee":
        tissue, bone = (0.3, 0.75) if modality == "xray" else (0.75, 0.4)
        img = _paint(
            img, c.mask(lambda d, _: d.rectangle([0.22 * c.w, 0, 0.78 * c.w, c.h], fill=255)), tissue
        )
        img = _paint(img, c.ellipse(0.5, 0.22, 0.22, 0.3), bone)
        img = _paint(
            img, c.mask(lambda d, _: d.rectangle([0.3 * c.w, 0.58 * c.h, 0.7 * c.w, c.h], fill=255)), bone
        )
    elif region == "spine":
        img = _paint(img, c.mask(lambda d, _: d.rectangle([0.25 * c.w, 0, 0.75 * c.w, c.h], fill=255)), 0.35)
        for k in range(6):
            y = (0.08 + 0.16 * k) * c.h
            img = _paint(
                img,
                c.mask(lambda d, _, y=y: d.rectangle([0.3 * c.w, y, 0.52 * c.w, y + 0.12 * c.h], fill=255)),
                0.55,
            )
            img = _paint(
                img,
                c.mask(
                    lambda d, _, y=y: d.rectangle(
                        [0.31 * c.w, y + 0.12 * c.h, 0.51 * c.w, y + 0.16 * c.h], fill=255
                    )
                ),
                0.85,
            )
        img = _paint(
            img, c.mask(lambda d, _: d.rectangle([0.56 * c.w, 0, 0.64 * c.w, c.h], fill=255)), 0.2
        )  # cord
    return img


def _radiology(c: Canvas, s: Scene) -> np.ndarray:
    img = _anatomy(c, s.modality, s.region)
    us = s.modality == "ultrasound"
    if s.finding == "mass":
        img = _paint(img, c.blob(s.cx, s.cy, s.radius, 0.45), 0.12 if us else 0.82)
    elif s.finding == "nodule":
        img = _paint(img, c.ellipse(s.cx, s.cy, s.radius, s.radius), 0.85 if us else 0.88)
    elif s.finding == "cyst":
        if not us:
            img = _paint(img, c.ellipse(s.cx, s.cy, s.radius * 1.15, s.radius * 1.15), 0.8)  # enhancing rim
        img = _paint(img, c.ellipse(s.cx, s.cy, s.radius, s.radius), 0.0 if us else 0.12)
        if us:  # posterior acoustic enhancement below an anechoic cyst
            band = c.mask(
                lambda d, _: d.rectangle(
                    [(s.cx - s.radius) * c.w, s.cy * c.h + s.radius * c.s, (s.cx + s.radius) * c.w, c.h],
                    fill=255,
                )
            )
            img = _paint(img, band * (img > 0.05), 0.6)
    elif s.finding == "calcification":
        pts = c.scatter(7, s.cx, s.cy, spread=s.radius / 2)
        img = _paint(img, c.dots(pts, 0.012), 1.0)
    noise = c.rng.normal(0, 0.035, img.shape).astype(np.float32)
    if us:  # speckle is multiplicative
        img = img * c.rng.rayleigh(0.8, img.shape).astype(np.float32)
    img = np.clip(img + noise, 0, 1)
    return np.repeat(img[..., None], 3, axis=2)


def _microscopy(c: Canvas, s: Scene) -> np.ndarray:
    n_cells = {"dense": 140, "sparse": 14, "cluster": 18}[s.finding]
    cells = c.dots(c.scatter(n_cells), 0.022)
    if s.finding == "cluster":
        cells = np.maximum(cells, c.dots(c.scatter(45, s.cx, s.cy, spread=s.radius / 2.2), 0.02))
    glow = (
        np.asarray(
            Image.fromarray((cells * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5)), np.float32
        )
        / 255
    )
    intensity = np.clip(glow * c.rng.uniform(0.7, 1.0) + c.rng.normal(0.03, 0.02, glow.shape), 0, 1)
    return intensity[..., None] * np.asarray(STAIN_COLOUR[s.region], np.float32)


def _histology(c: Canvas, s: Scene) -> np.ndarray:
    img = np.empty((c.h, c.w, 3), np.float32)
    img[:] = (0.93, 0.72, 0.83)  # eosin-pink stroma
    img = img - c.rng.normal(0, 0.04, (c.h, c.w, 1)).astype(np.float32)
    purple = (0.42, 0.22, 0.58)
    if s.region == "liver":
        img = _paint(img, c.dots(c.scatter(90), 0.012), purple)
    elif s.region == "colon":
        for k in range(6):
            fx, fy = 0.2 + 0.3 * (k % 3), 0.28 + 0.45 * (k // 3)
            img = _paint(img, c.ellipse(fx, fy, 0.11, 0.15, width=0.035), purple)
            img = _paint(img, c.ellipse(fx, fy, 0.07, 0.11), (0.98, 0.96, 0.97))  # gland lumen
    else:  # skin: epidermis along the top edge
        edge = [(x, (0.18 + 0.04 * math.sin(x / c.w * 12)) * c.h) for x in np.linspace(0, c.w, 24)]
        img = _paint(
            img, c.mask(lambda d, _: d.polygon([(0, 0), *edge, (c.w, 0)], fill=255)), (0.55, 0.3, 0.6)
        )
    if s.finding == "tumour":
        img = _paint(img, c.blob(s.cx, s.cy, s.radius, 0.4), (0.35, 0.15, 0.5))
        img = _paint(img, c.dots(c.scatter(40, s.cx, s.cy, spread=s.radius / 2), 0.01), (0.2, 0.05, 0.3))
    elif s.finding == "infiltrate":
        img = _paint(img, c.dots(c.scatter(90, s.cx, s.cy, spread=s.radius / 2), 0.009), (0.18, 0.12, 0.45))
    elif s.finding == "necrosis":
        img = _paint(img, c.blob(s.cx, s.cy, s.radius, 0.3), (0.86, 0.8, 0.8))
        img = _paint(img, c.dots(c.scatter(12, s.cx, s.cy, spread=s.radius / 2), 0.005), (0.3, 0.2, 0.35))
    return np.clip(img, 0, 1)


def render(scene: Scene, rng: np.random.Generator) -> Image.Image:
    c = Canvas(scene.width, scene.height, rng)
    draw_fn = (
        _radiology
        if scene.modality in RADIOLOGY
        else _microscopy
        if scene.modality == "microscopy"
        else _histology
    )
    rgb = draw_fn(c, scene)
    im = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(0.6))
    d = ImageDraw.Draw(im)
    ink = (20, 20, 20) if scene.modality == "histology" else (255, 255, 255)
    if scene.arrow:
        _arrow(d, c, scene, (255, 230, 40) if scene.modality in ("microscopy", "histology") else ink)
    if scene.scale_bar:
        length = c.s * SCALE_BAR_UM / REGIONS[scene.modality][scene.region]
        x1, y1 = c.w - 0.06 * c.s, c.h - 0.06 * c.s
        d.rectangle([x1 - length, y1 - max(2, 0.015 * c.s), x1, y1], fill=ink)
    if scene.panel:
        d.text((0.03 * c.s, 0.02 * c.s), scene.panel, fill=ink, font_size=max(12, int(0.09 * c.s)))
    if scene.mode == "L":
        return im.convert("L")
    if scene.mode == "RGBA":  # transparent margin, as figures exported from slides often have
        alpha = Image.new("L", im.size, 0)
        ImageDraw.Draw(alpha).rectangle([4, 4, c.w - 5, c.h - 5], fill=255)
        im.putalpha(alpha)
    return im


def _arrow(d: ImageDraw.ImageDraw, c: Canvas, s: Scene, colour) -> None:
    """Point at the lesion from outside it, from the side with the most room."""
    tx, ty = c.px(s.cx, s.cy)
    angle = math.atan2(0.5 - s.cy, 0.5 - s.cx) + (math.pi / 4 if s.zone == "central" else 0)
    r = s.radius * c.s
    tip = (tx + math.cos(angle) * (r + 3), ty + math.sin(angle) * (r + 3))
    tail = (tip[0] + math.cos(angle) * 0.18 * c.s, tip[1] + math.sin(angle) * 0.18 * c.s)
    d.line([tail, tip], fill=colour, width=max(2, int(0.012 * c.s)))
    head = 0.05 * c.s
    left = (tip[0] + head * math.cos(angle + 0.45), tip[1] + head * math.sin(angle + 0.45))
    right = (tip[0] + head * math.cos(angle - 0.45), tip[1] + head * math.sin(angle - 0.45))
    d.polygon([tip, left, right], fill=colour)
