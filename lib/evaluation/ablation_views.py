"""What an ablation's results file shows: one row per setting with its configuration, CIDEr-D, factual
F1, identical-caption share and distinct-2 (intervals where recorded), and a figure of the two scores
with their intervals, rows grouped by what they vary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns

from lib import plots


def _iv(x: dict, k: str, digits: int = 3) -> str:
    ci = x.get("ci95", {}).get(k)
    return f"{x[k]:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def changed(row: dict) -> str:
    """What the row sets, in the profile's own keys (train.yaml's model keys, train:, decoding)."""
    parts = [f"{k}={v}" for k, v in row["model"].items()]
    parts += [f"train.{k}={v}" for k, v in row["train"].items()]
    parts += [f"{k}={v}" for k, v in row["decoding"].items()]
    parts += [f"steps x{row['length']:g}"] if row.get("length", 1) != 1 else []
    return ", ".join(parts) or "the profile's recipe when recorded (the commit below)"


def table(record: dict) -> list[dict]:
    rows = []
    for r in record["rows"]:
        s, f = r["scores"], r["scores"].get("facts") or {}
        rows.append(
            {
                "row": r["name"],
                "varies": r["group"],
                "sets": changed(r),
                "steps": r["steps"],
                "CIDEr-D": _iv(s, "cider"),
                "fact F1 (categorical)": _iv(f, "categorical_f1") if f else "n/a",
                "hallucinated": f"{f['hallucination_rate']:.3f}" if f else "n/a",
                "identical": f"{s['identical_share']:.3f}",
                "distinct-2": f"{s['distinct2']:.3f}",
            }
        )
    return rows


def figure(record: dict, out: str | Path) -> Path:
    """CIDEr-D and categorical fact F1 of every row, with 95% intervals; the recipe's interval shaded."""
    rows = record["rows"]
    facts = all(r["scores"].get("facts") for r in rows)
    panels = [("cider", "CIDEr-D", lambda r: r["scores"])]
    if facts:
        panels.append(("categorical_f1", "fact F1 (categorical)", lambda r: r["scores"]["facts"]))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    colour = dict(zip(groups, sns.color_palette("deep", len(groups)), strict=True))
    fig, axes = plots.figure(ncols=len(panels), width=4.4, height=0.28 * len(rows) + 1.2)
    y = np.arange(len(rows))[::-1]
    for ax, (key, title, of) in zip(axes[0], panels, strict=True):
        for yi, r in zip(y, rows, strict=True):
            x = of(r)
            lo, hi = x.get("ci95", {}).get(key, (x[key], x[key]))
            ax.errorbar(
                x[key], yi, xerr=[[x[key] - lo], [hi - x[key]]], fmt="o", color=colour[r["group"]], ms=4
            )
        base = of(rows[0])
        ax.axvspan(*base.get("ci95", {}).get(key, (base[key], base[key])), color="grey", alpha=0.15, lw=0)
        ax.set_yticks(y, [r["name"] for r in rows] if ax is axes[0][0] else [""] * len(rows))
        ax.set_title(f"{title} ({record['split']}, {record['resamples']} resamples)")
    return plots.save(fig, out)
