"""What the communication model shows: the collectives' fits, predicted against measured step times
for the runs the model was not fitted on, and the full-size projection, as tables and one figure, from
results files alone (``python -m lib report`` redraws them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from lib import plots
from lib.bench import comm_model, projection
from lib.bench.scaling import COLOURS
from lib.settings import TinyLM

FIT_ON = "DDP, fp32, the two smallest per-rank batches"
UNITS_TINY = TinyLM.num_hidden_layers + 1  # FSDP units: each LM block, and the root
UNITS_7B = 32 + 1  # BioMistral-7B's 32 blocks, and the root


def model_points(comm: dict, ddp: dict | None, fsdp: dict | None, units: int) -> dict:
    """Fit (s, o) on DDP in fp32 at the two smallest per-rank batches; every other data-parallel run of
    the DDP and FSDP sweeps is held out."""
    links, _ = comm_model.links_from(comm)
    pts = []
    for sweep in (ddp, fsdp):
        if sweep:
            pts += comm_model.points(sweep, links, units)
    small = sorted({p["batch/rank"] for p in pts if p["strategy"] == "ddp" and p["amp"] == "off"})[:2]
    return comm_model.validate(
        pts, lambda p: p["strategy"] == "ddp" and p["amp"] == "off" and p["batch/rank"] in small
    )


def validation_table(model: dict) -> list[dict]:
    return [
        {
            "strategy": p["strategy"],
            "ranks": p["ranks"],
            "batch/rank": p["batch/rank"],
            "amp": p["amp"],
            "used": "fitted on" if p["fit"] else "held out",
            "T_1 ms": round(1e3 * p["t1"], 1),
            "modelled comm ms": round(1e3 * p["comm"], 2),
            "measured T_N ms": round(1e3 * p["tn"], 1),
            "predicted T_N ms": round(1e3 * p["predicted"], 1),
            "error": f"{p['error']:+.0%}",
            "error if nothing overlaps": f"{p['error_no_overlap']:+.0%}",
        }
        for p in model["points"]
    ]


def projection_table(rows: list[dict]) -> list[dict]:
    return [
        {
            "strategy": r["strategy"],
            "GPUs": r["GPUs"],
            "comm ms a step": round(1e3 * r["comm s"], 1),
            "speed-up (no overlap - full overlap)": f"{r['speed-up, no overlap']:.1f} - "
            f"{r['speed-up, full overlap']:.1f}",
            "efficiency": f"{r['efficiency, no overlap']:.0%} - {r['efficiency, full overlap']:.0%}",
        }
        for r in rows
    ]


def stops_paying(rows: list[dict], strategy: str) -> int | None:
    """The fewest GPUs that are projected slower than the count before them, even with full overlap:
    where another GPU stops paying (None: never within the projected range)."""
    mine = [r for r in rows if r["strategy"] == strategy]
    return next(
        (
            b["GPUs"]
            for a, b in zip(mine, mine[1:], strict=False)
            if b["speed-up, full overlap"] < a["speed-up, full overlap"]
        ),
        None,
    )


def figure(comm: dict, rows: list[dict], out_dir: str | os.PathLike, prefix: str = "04_comm") -> list[Path]:
    """Left: each collective's median time against message size (points) and its alpha-beta line.
    Right: projected speed-up of the full-size job against GPUs, the band between no and full overlap."""
    fig, ax = plots.figure(ncols=2, width=4.6)
    left, right = ax[0, 0], ax[0, 1]
    w = min(comm["worlds"], key=int)
    palette = sns.color_palette("deep", len(comm["worlds"][w]))
    for colour, (op, f) in zip(palette, comm["worlds"][w].items(), strict=True):
        fit = f["fit"]
        sizes = np.array(fit["sizes"], dtype=float)
        frame = pd.DataFrame(
            [(int(k), v) for k, vs in f["times"].items() for v in vs], columns=["bytes", "seconds"]
        )
        sns.scatterplot(data=frame, x="bytes", y="seconds", ax=left, color=colour, s=10, alpha=0.4)
        left.plot(sizes, fit["alpha_s"] + fit["beta_s_per_byte"] * sizes, color=colour, label=op)
    left.set(xscale="log", yscale="log", xlabel="message bytes", ylabel="seconds", title=f"{w} ranks")
    left.legend(fontsize=7)
    top = max(projection.GPUS)
    right.plot([1, top], [1, top], color="k", ls="--", lw=1, label="ideal")
    for strategy in ("ddp", "fsdp"):
        mine = [r for r in rows if r["strategy"] == strategy]
        n = [r["GPUs"] for r in mine]
        lo, hi = [r["speed-up, no overlap"] for r in mine], [r["speed-up, full overlap"] for r in mine]
        right.fill_between(n, lo, hi, color=COLOURS[strategy], alpha=0.3)
        right.plot(
            n, lo, color=COLOURS[strategy], marker="o", ms=3, label=f"{strategy.upper()} (band: overlap)"
        )
    right.axvline(projection.PER_NODE, color="grey", lw=0.8, ls=":")
    right.set(
        xscale="log", yscale="log", xlabel="GPUs", ylabel="projected speed-up", title="BioMistral-7B + LoRA"
    )
    right.set_xticks(projection.GPUS, [str(g) for g in projection.GPUS])
    right.minorticks_off()
    right.legend(fontsize=7)
    return [plots.save(fig, Path(out_dir) / f"{prefix}.png")]
