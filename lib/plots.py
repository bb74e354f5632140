"""Figure helpers: one style, and PNGs that are byte-identical for the same data."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: papermill, SLURM and CI have no display

import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs on every machine
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "pmcoa",
}


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.2, width_ratios=None):
    with plt.rc_context(STYLE):
        return plt.subplots(
            nrows,
            ncols,
            figsize=(width * ncols, height * nrows),
            squeeze=False,
            gridspec_kw={"width_ratios": width_ratios} if width_ratios else None,
        )


def save(fig, path: str | os.PathLike) -> Path:
    """Save without timestamps or software tags, so the same figure gives the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
        # bbox "tight": titles and rotated labels are never cut off at the edge
        fig.savefig(tmp, metadata={"Software": None} if path.suffix == ".png" else None, bbox_inches="tight")
    os.replace(tmp, path)
    return path
