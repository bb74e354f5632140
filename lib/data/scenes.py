"""What a generated figure shows, and its caption: a ``Scene`` (modality, region, finding, size,
location, arrow, panel letter, scale bar) sampled from a random stream, and the caption written from
the same scene, so everything a caption says can be seen in its image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    "mass": (0.09, 0.17),
    "nodule": (0.03, 0.06),
    "cyst": (0.05, 0.11),
    "calcification": (0.04, 0.07),
    "cluster": (0.09, 0.15),
    "tumour": (0.10, 0.18),
    "infiltrate": (0.08, 0.14),
    "necrosis": (0.08, 0.14),
}
ZONES = {
    "upper left": (0.32, 0.32),
    "upper right": (0.68, 0.32),
    "lower left": (0.32, 0.68),
    "lower right": (0.68, 0.68),
    "central": (0.5, 0.5),
}
# Radiology is read as if facing the patient: the image's left is the patient's right.
PATIENT_SIDE = {
    "upper left": "right upper",
    "upper right": "left upper",
    "lower left": "right lower",
    "lower right": "left lower",
    "central": "central",
}
INTROS = {
    "xray": ("{Region} radiograph", "{Region} X-ray", "Plain radiograph of the {region}"),
    "ct": ("Axial CT of the {region}", "{Region} CT", "Contrast-enhanced CT of the {region}"),
    "mri": ("Axial MRI of the {region}", "{Region} MRI", "MR image of the {region}"),
    "ultrasound": ("Ultrasound of the {region}", "{Region} ultrasound", "Sonographic image of the {region}"),
    "microscopy": ("Fluorescence micrograph of {region}", "Confocal image of {region}"),
    "histology": (
        "H&E-stained section of {region}",
        "Histology of the {region} (H&E)",
        "Photomicrograph of {region} tissue, H&E stain",
    ),
}
STAIN_COLOUR = {
    "DAPI-stained nuclei": (0.35, 0.45, 1.0),
    "GFP-expressing cells": (0.25, 1.0, 0.35),
    "CD31 immunofluorescence": (1.0, 0.25, 0.3),
}
SCALE_BAR_UM = 50
# Findings whose caption states a size (calcifications, infiltrates and necrosis are located, not measured).
SIZED = ("mass", "nodule", "cyst", "cluster", "tumour")


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
        modality=modality,
        region=region,
        finding=finding,
        radius=radius,
        zone=zone,
        cx=float(cx),
        cy=float(cy),
        arrow=located and finding != "calcification" and rng.random() < 0.4,
        panel="ABCD"[rng.integers(4)] if rng.random() < 0.2 else "",
        scale_bar=modality in ("microscopy", "histology") and rng.random() < 0.6,
        width=width,
        height=height,
        mode=mode,
        fmt=fmt,
        quality=int(rng.choice([80, 85, 90, 95])),
    )


def facts(scene: Scene) -> dict:
    """What the caption of ``scene`` states and its image shows, as the generator records it beside the
    pair (``"facts"`` in the split file; readers of real data ignore it): modality, region, finding,
    location zone (the image's side: "upper left" is the patient's right upper), size in the region's
    unit (mm or µm), arrow, panel letter, scale bar. A fact the scene does not have is None or False."""
    return {
        "modality": scene.modality,
        "region": scene.region,
        "finding": scene.finding,
        "zone": scene.zone or None,
        "size": scene.size if scene.finding in SIZED else None,
        "arrow": scene.arrow,
        "panel": scene.panel or None,
        "scale_bar": scene.scale_bar,
    }


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
    adjective = (
        "small " if s.radius < lo + (hi - lo) / 3 else "large " if s.radius > hi - (hi - lo) / 3 else ""
    )
    a = "an" if not adjective and (str(size).startswith("8") or size in (11, 18)) else "a"
    if s.modality in RADIOLOGY:
        echo = s.modality == "ultrasound"
        where = (
            "centrally"
            if s.zone == "central"
            else f"in the {PATIENT_SIDE[s.zone]} {_zone_word(s.region)}"
            if s.zone
            else ""
        )
        return {
            "mass": f"{a} {adjective}{size} mm {'hypoechoic ' if echo else ''}mass {where}",
            "nodule": f"{a} {size} mm nodule {where}",
            "cyst": f"{a} {size} mm {'anechoic ' if echo else ''}cyst {where}",
            "calcification": f"clustered calcifications {where}",
            "normal": "no focal abnormality",
        }[f]
    where = (
        "in the centre of the field"
        if s.zone == "central"
        else f"in the {s.zone} of the field"
        if s.zone
        else ""
    )
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
