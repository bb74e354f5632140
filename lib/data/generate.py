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

import io
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from lib.data.pmcoa import IMAGE_DIR, SPLITS
from lib.results import write_json_atomic

GENERATOR_VERSION = 1
MANIFEST = "dataset.json"

# Field of view of the image's short side: mm for radiology, µm for microscopy and histology.
REGIONS = {
    "xray": {"chest": 350, "hand": 200, "knee": 220},
    "ct": {"head": 220, "chest": 380, "abdomen": 400},
    "mri": {"brain": 220, "knee": 180, "spine": 300},
    "ultrasound": {"liver": 160, "thyroid": 60, "kidney": 140},
    "microscopy": {"DAPI-stained nuclei": 400, "GFP-expressing cells": 400, "CD31 immunofluorescence": 400},
    "histology": {"liver": 800, "colon": 800, "skin": 800},
}
MODALITIES = tuple(REGIONS)
RADIOLOGY = ("xray", "ct", "mri", "ultrasound")
FINDINGS = {
    **{m: ("mass", "nodule", "cyst", "calcification", "normal") for m in RADIOLOGY},
    "microscopy": ("cluster", "dense", "sparse"),
    "histology": ("tumour", "infiltrate", "necrosis", "normal"),
}
# Lesion radius as a fraction of the short side; findings absent here cover the whole field.
RADIUS = {
    "mass": (0.09, 0.17), "nodule": (0.03, 0.06), "cyst": (0.05, 0.11), "calcification": (0.04, 0.07),
    "cluster": (0.09, 0.15), "tumour": (0.10, 0.18), "infiltrate": (0.08, 0.14), "necrosis": (0.08, 0.14),
}
ZONES = {
    "upper left": (0.32, 0.32), "upper right": (0.68, 0.32), "lower left": (0.32, 0.68),
    "lower right": (0.68, 0.68), "central": (0.5, 0.5),
}
# Radiology is read as if facing the patient: the image's left is the patient's right.
PATIENT_SIDE = {
    "upper left": "right upper", "upper right": "left upper", "lower left": "right lower",
    "lower right": "left lower", "central": "central",
}
INTROS = {
    "xray": ("{Region} radiograph", "{Region} X-ray", "Plain radiograph of the {region}"),
    "ct": ("Axial CT of the {region}", "{Region} CT", "Contrast-enhanced CT of the {region}"),
    "mri": ("Axial MRI of the {region}", "{Region} MRI", "MR image of the {region}"),
    "ultrasound": ("Ultrasound of the {region}", "{Region} ultrasound", "Sonographic image of the {region}"),
    "microscopy": ("Fluorescence micrograph of {region}", "Confocal image of {region}"),
    "histology": ("H&E-stained section of {region}", "Histology of the {region} (H&E)",
                  "Photomicrograph of {region} tissue, H&E stain"),
}
STAIN_COLOUR = {
    "DAPI-stained nuclei": (0.35, 0.45, 1.0), "GFP-expressing cells": (0.25, 1.0, 0.35),
    "CD31 immunofluorescence": (1.0, 0.25, 0.3),
}
SCALE_BAR_UM = 50


@dataclass(frozen=True)
class Scene:
    modality: str
    region: str
    finding: str
    radius: float  # lesion radius / short side; 0 for findings without one
    zone: str  # key of ZONES, "" for findings without a location
    cx: float
    cy: float
    arrow: bool
    panel: str  # "" or the panel letter drawn in the corner
    scale_bar: bool
    width: int
    height: int
    mode: str  # RGB, L or RGBA
    fmt: str  # JPEG or PNG
    quality: int

    @property
    def size(self) -> int:
        """Lesion diameter in the region's unit (mm or µm), as the caption states it."""
        return max(1, round(2 * self.radius * REGIONS[self.modality][self.region]))


def sample_scene(rng: np.random.Generator) -> Scene:
    modality = MODALITIES[rng.integers(len(MODALITIES))]
    regions = list(REGIONS[modality])
    region = regions[rng.integers(len(regions))]
    finding = FINDINGS[modality][rng.integers(len(FINDINGS[modality]))]
    located = finding in RADIUS
    zone = list(ZONES)[rng.integers(len(ZONES))] if located else ""
    radius = float(rng.uniform(*RADIUS[finding])) if located else 0.0
    cx, cy = ZONES[zone] if located else (0.5, 0.5)
    cx, cy = cx + rng.uniform(-0.05, 0.05), cy + rng.uniform(-0.05, 0.05)
    width = int(np.clip(rng.normal(271, 75), 112, 640))
    height = int(np.clip(rng.normal(238, 65), 112, 640))
    u = rng.random()
    mode = "RGB" if u < 0.91 else "L" if u < 0.99 else "RGBA"
    fmt = "PNG" if mode == "RGBA" or rng.random() < 0.2 else "JPEG"
    return Scene(
        modality=modality, region=region, finding=finding, radius=radius, zone=zone, cx=float(cx), cy=float(cy),
        arrow=located and finding != "calcification" and rng.random() < 0.4,
        panel="ABCD"[rng.integers(4)] if rng.random() < 0.2 else "",
        scale_bar=modality in ("microscopy", "histology") and rng.random() < 0.6,
        width=width, height=height, mode=mode, fmt=fmt, quality=int(rng.choice([80, 85, 90, 95])),
    )


# ---------------------------------------------------------------- captions
def caption(scene: Scene, rng: np.random.Generator) -> str:
    m, region = scene.modality, scene.region
    intro = INTROS[m][rng.integers(len(INTROS[m]))].format(region=region, Region=region.capitalize())
    verb = ("showing", "demonstrating", "with")[rng.integers(3)]
    text = f"{intro} {verb} {_finding_phrase(scene)}"
    if scene.arrow:
        text += " (arrow)"
    text += "."
    if scene.scale_bar:
        text += f" Scale bar, {SCALE_BAR_UM} µm."
    return f"({scene.panel}) {text}" if scene.panel else text


def _finding_phrase(s: Scene) -> str:
    f, size = s.finding, s.size
    lo, hi = RADIUS.get(f, (0, 1))
    adjective = "small " if s.radius < lo + (hi - lo) / 3 else "large " if s.radius > hi - (hi - lo) / 3 else ""
    a = "an" if not adjective and (str(size).startswith("8") or size in (11, 18)) else "a"
    if s.modality in RADIOLOGY:
        echo = s.modality == "ultrasound"
        where = ("centrally" if s.zone == "central" else
                 f"in the {PATIENT_SIDE[s.zone]} {_zone_word(s.region)}" if s.zone else "")
        return {
            "mass": f"{a} {adjective}{size} mm {'hypoechoic ' if echo else ''}mass {where}",
            "nodule": f"{a} {size} mm nodule {where}",
            "cyst": f"{a} {size} mm {'anechoic ' if echo else ''}cyst {where}",
            "calcification": f"clustered calcifications {where}",
            "normal": "no focal abnormality",
        }[f]
    where = ("in the centre of the field" if s.zone == "central" else
             f"in the {s.zone} of the field" if s.zone else "")
    return {
        "cluster": f"a cluster of cells about {size} µm across {where}",
        "dense": "densely packed cells throughout the field",
        "sparse": "sparse, scattered cells",
        "tumour": f"{a} {adjective}{size} µm nest of tumour cells {where}",
        "infiltrate": f"a dense inflammatory infiltrate {where}",
        "necrosis": f"an area of necrosis {where}",
        "normal": "normal tissue architecture",
    }[f]


def _zone_word(region: str) -> str:
    return {"chest": "lung zone", "abdomen": "quadrant"}.get(region, "region")


# ---------------------------------------------------------------- drawing
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
        pts = [(x + rr * math.cos(2 * math.pi * k / n), y + rr * math.sin(2 * math.pi * k / n)) for k, rr in enumerate(radii)]
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
        organ = {"liver": c.ellipse(0.5, 0.6, 0.55, 0.35), "thyroid": c.ellipse(0.5, 0.55, 0.38, 0.18),
                 "kidney": c.ellipse(0.5, 0.55, 0.34, 0.2)}[region] * sector
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
                rib = c.mask(lambda d, _, k=k: d.arc(
                    [0.12 * c.w, (0.16 + 0.1 * k) * c.h, 0.88 * c.w, (0.36 + 0.1 * k) * c.h], 200, 340, fill=255, width=2))
                img = _paint(img, rib, 0.3)
            img = _paint(img, c.mask(lambda d, _: d.rectangle([0.47 * c.w, 0.05 * c.h, 0.53 * c.w, 0.95 * c.h], fill=255)), 0.62)
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
            img = _paint(img, c.mask(lambda d, _, fx=fx: d.rectangle(
                [(fx - 0.03) * c.w, 0.1 * c.h, (fx + 0.03) * c.w, 0.7 * c.h], fill=255)), 0.72)
    elif region == "knee":
        tissue, bone = (0.3, 0.75) if modality == "xray" else (0.75, 0.4)
        img = _paint(img, c.mask(lambda d, _: d.rectangle([0.22 * c.w, 0, 0.78 * c.w, c.h], fill=255)), tissue)
        img = _paint(img, c.ellipse(0.5, 0.22, 0.22, 0.3), bone)
        img = _paint(img, c.mask(lambda d, _: d.rectangle([0.3 * c.w, 0.58 * c.h, 0.7 * c.w, c.h], fill=255)), bone)
    elif region == "spine":
        img = _paint(img, c.mask(lambda d, _: d.rectangle([0.25 * c.w, 0, 0.75 * c.w, c.h], fill=255)), 0.35)
        for k in range(6):
            y = (0.08 + 0.16 * k) * c.h
            img = _paint(img, c.mask(lambda d, _, y=y: d.rectangle([0.3 * c.w, y, 0.52 * c.w, y + 0.12 * c.h], fill=255)), 0.55)
            img = _paint(img, c.mask(lambda d, _, y=y: d.rectangle([0.31 * c.w, y + 0.12 * c.h, 0.51 * c.w, y + 0.16 * c.h], fill=255)), 0.85)
        img = _paint(img, c.mask(lambda d, _: d.rectangle([0.56 * c.w, 0, 0.64 * c.w, c.h], fill=255)), 0.2)  # cord
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
            band = c.mask(lambda d, _: d.rectangle([(s.cx - s.radius) * c.w, s.cy * c.h + s.radius * c.s,
                                                    (s.cx + s.radius) * c.w, c.h], fill=255))
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
    glow = np.asarray(Image.fromarray((cells * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5)), np.float32) / 255
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
        img = _paint(img, c.mask(lambda d, _: d.polygon([(0, 0), *edge, (c.w, 0)], fill=255)), (0.55, 0.3, 0.6))
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
    draw_fn = _radiology if scene.modality in RADIOLOGY else _microscopy if scene.modality == "microscopy" else _histology
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


# ---------------------------------------------------------------- dataset
def figure(seed: int, index: int) -> tuple[str, str, str, bytes, Scene]:
    """(split, image name, caption, encoded bytes, scene) of figure ``index``; pure in (seed, index)."""
    rng = np.random.default_rng([seed, index])
    u = rng.random()
    split = "train" if u < 0.8 else "valid" if u < 0.9 else "test"
    scene = sample_scene(rng)
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


def is_complete(out: str | os.PathLike, n: int, seed: int) -> bool:
    path = Path(out) / MANIFEST
    if not path.exists():
        return False
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return (m.get("n"), m.get("seed"), m.get("generator_version")) == (n, seed, GENERATOR_VERSION)


def generate(
    out: str | os.PathLike, n: int = 3000, seed: int = 0, workers: int | None = None, force: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``n`` figure-caption pairs to ``out`` in PMC-OA's layout; a no-op when already complete.

    The manifest is written last, so an interrupted run is detected and redone. Figures are
    drawn in ``workers`` processes (default: all cores); each is pure in (seed, index), so the
    files do not depend on the worker count.
    """
    out = Path(out)
    if not force and is_complete(out, n, seed):
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
    figures = pool.imap(partial(figure, seed), range(n), chunksize=32) if pool else (figure(seed, i) for i in range(n))
    try:
        for split, name, text, data, scene in tqdm(figures, total=n, desc="generate", unit="fig", disable=not progress):
            (images / name).write_bytes(data)
            row = {"image": name, "caption": text, "modality": scene.modality}
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
    manifest = {"n": n, "seed": seed, "generator_version": GENERATOR_VERSION, "splits": counts, "modalities": modalities}
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def describe(seed: int, index: int) -> dict:
    """The scene behind figure ``index`` (for tests and the gallery: what the caption must say)."""
    return asdict(figure(seed, index)[4])
