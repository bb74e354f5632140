"""What a scaling sweep shows: tables of throughput, speed-up, communication and memory, and its figures,
from the sweep's metrics (``lib.bench.scaling``) alone, so ``python -m lib report`` redraws them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import seaborn as sns

from lib import plots
from lib.bench.scaling import COLOURS, reference
from lib.stats import paired, shown, verdict


def _round(x, nd=2):
    return None if x is None else round(x, nd)


def table(metrics: dict) -> list[dict]:
    mib = 2**20
    return [
        {
            "strategy": r["strategy"],
            "ranks": r["world"],
            "threads/rank": r["threads"],
            "batch/rank": r["batch"],
            "amp": r["amp"],
            "samples/s": round(r["samples_per_s"], 1),
            "step ms": round(1e3 * r["step_s"], 1),
            "comm ms (profiler)": _round(r.get("comm_s") and 1e3 * r["comm_s"], 1),
            "speed-up": shown(r["speedup"]) if r is not reference(metrics["runs"], r) else "1 (reference)",
            "efficiency": shown(r["efficiency"]) if r is not reference(metrics["runs"], r) else None,
            "peak RSS/rank MiB": round(r["peak_memory_bytes"] / mib),
            "model state/rank MiB": round(r["model_state_bytes"] / mib, 2),
        }
        for r in metrics["runs"]
    ]


def comm_table(metrics: dict) -> list[dict]:
    """Data-parallel runs: one rank's step time, the overhead of N ranks over it per pair of repeats
    (communication and whatever the ranks contend for: it is not communication alone) and what the
    profiler saw in flight (collectives overlap backward, so it can exceed the overhead)."""
    return [
        {
            "strategy": r["strategy"],
            "ranks": r["world"],
            "batch/rank": r["batch"],
            "amp": r["amp"],
            "T_1 ms": round(1e3 * reference(metrics["runs"], r)["step_s"], 1),
            "T_N ms": round(1e3 * r["step_s"], 1),
            "overhead T_N - T_1 ms": shown(r["overhead_s"], 1, scale=1e3),
            "comm in flight ms (profiler)": _round(r.get("comm_s") and 1e3 * r["comm_s"], 1),
        }
        for r in metrics["runs"]
        if r["overhead_s"] is not None
    ]


def pipeline_table(metrics: dict) -> list[dict]:
    """Model parallelism at one global batch: each strategy's throughput against one process (per pair
    of repeats), the pipeline schedule's ideal (bubble-limited) speed-up, time in sends/receives and
    memory per rank."""
    mib = 2**20
    rows = []
    for r in metrics["runs"]:
        if r["strategy"] == "single" and r["threads"] != 1:
            continue
        sends = max(
            (
                sum(v for k, v in ops.items() if k.endswith(("send", "recv")))
                for ops in r.get("comm_ops") or [{}]
            ),
            default=0.0,
        )
        alone = r["strategy"] == "single"
        rows.append(
            {
                "strategy": r["strategy"],
                "schedule": r.get("schedule") or "",
                "micro-batches": r.get("microbatches", 1),
                "ranks": r["world"],
                "batch": r["global_batch"],
                "amp": r["amp"],
                "samples/s": round(r["samples_per_s"], 1),
                "tokens/s": round(r["tokens_per_s"]),
                "vs 1 process": "1 (reference)" if alone else shown(r.get("speedup_same_batch")),
                "verdict": None if alone else _faster(r.get("speedup_same_batch")),
                "ideal (bubble)": _round(r.get("ideal_speedup")),
                "send/recv ms": round(1e3 * sends, 1) if r["strategy"] == "pipeline" else None,
                "model state/rank MiB": round(r["model_state_bytes"] / mib, 2),
                "peak RSS/rank MiB": round(r["peak_memory_bytes"] / mib),
            }
        )
    return rows


def _faster(iv: dict | None) -> str:
    return verdict(iv, "faster", "slower")


def ranks_vs_threads(metrics: dict) -> list[dict]:
    """Per batch and precision: N ranks x 1 thread (DDP) against 1 process with N threads, per pair of
    repeats."""
    rows = []
    for r in metrics["runs"]:
        if r["strategy"] != "single" or r["threads"] == 1:
            continue
        ddp = next(
            (
                x
                for x in metrics["runs"]
                if x["strategy"] == "ddp"
                and x["world"] == r["threads"]
                and x["threads"] == 1
                and x["batch"] == r["batch"]
                and x["amp"] == r["amp"]
            ),
            None,
        )
        if ddp:
            ratio = paired(ddp["samples_per_s_repeats"], r["samples_per_s_repeats"])
            rows.append(
                {
                    "batch/rank": r["batch"],
                    "amp": r["amp"],
                    f"DDP {ddp['world']} ranks x 1 thread, samples/s": round(ddp["samples_per_s"], 1),
                    f"1 process x {r['threads']} threads, samples/s": round(r["samples_per_s"], 1),
                    "DDP / threads": shown(ratio),
                    "verdict": verdict(ratio, "DDP faster", "threads faster"),
                }
            )
    return rows


def memory_table(metrics: dict) -> list[dict]:
    """Model state per rank by part (parameters, gradients, optimizer) and peak memory, in MiB."""
    mib = 2**20
    return [
        {
            "strategy": r["strategy"],
            "ranks": r["world"],
            "batch/rank": r["batch"],
            "amp": r["amp"],
            **{f"{k} MiB": round(v / mib, 3) for k, v in r["model_state"].items()},
            "peak memory MiB": round(r["peak_memory_bytes"] / mib),
        }
        for r in metrics["runs"]
    ]


def fsdp_vs_ddp(metrics: dict) -> list[dict]:
    """Where both ran with the same ranks, batch and precision: FSDP's model state over DDP's (exact)
    and its step time over DDP's, per pair of repeats."""
    rows = []
    for f in (r for r in metrics["runs"] if r["strategy"] == "fsdp"):
        d = next(
            (
                r
                for r in metrics["runs"]
                if r["strategy"] == "ddp"
                and (r["world"], r["batch"], r["amp"], r["threads"])
                == (f["world"], f["batch"], f["amp"], f["threads"])
            ),
            None,
        )
        if d:
            step = paired(f["step_s_repeats"], d["step_s_repeats"])
            rows.append(
                {
                    "ranks": f["world"],
                    "batch/rank": f["batch"],
                    "amp": f["amp"],
                    "model state FSDP / DDP": round(f["model_state_bytes"] / d["model_state_bytes"], 2),
                    "step time FSDP / DDP": shown(step),
                    "verdict": verdict(step, "FSDP slower", "FSDP faster"),
                }
            )
    return rows


def _label(r: dict) -> str:
    if r["strategy"] == "single":
        who = f"1 process\n{r['threads']} threads"
    elif r["strategy"] == "pipeline":
        who = f"{r['schedule']} m{r['microbatches']}\n{r['world']} ranks"
    elif r["strategy"] == "layers":
        who = "layer split\n1 process"
    else:
        who = f"{r['strategy'].upper()}\n{r['world']} ranks"
    return f"{who}\nb{r['batch']} {r['amp']}"


def _ratio_panel(ax, rows: list[tuple[str, str, dict]], ylabel: str, ideal: list[float] | None = None):
    """One column per configuration: every pair's ratio (points), its median and 95% interval (bar),
    a line at 1 and, where given, each configuration's ideal (dashes); the axis starts at 0."""
    frame = pd.DataFrame(
        [(label, strategy, v) for label, strategy, iv in rows for v in iv["values"]],
        columns=["configuration", "strategy", "ratio"],
    )
    palette = {s: COLOURS.get(s, "grey") for s in frame["strategy"].unique()}
    # a swarm, not a jittered strip: its positions are computed, so the same data give the same bytes
    sns.swarmplot(
        data=frame, x="configuration", y="ratio", hue="strategy", palette=palette, ax=ax, size=4,
        alpha=0.7, legend=False, warn_thresh=1,
    )  # fmt: skip
    for i, (_, _, iv) in enumerate(rows):
        if iv["low"] is not None:
            err = [[iv["median"] - iv["low"]], [iv["high"] - iv["median"]]]
            ax.errorbar([i], [iv["median"]], yerr=err, fmt="_", color="k", ms=14, capsize=4, lw=1.2)
    if ideal:
        ax.scatter(range(len(ideal)), ideal, marker="_", s=400, color="k", alpha=0.4, label="ideal")
    ax.axhline(1.0, color="k", lw=0.8)
    top = max([*frame["ratio"], *(ideal or []), 1.0])
    ax.set(ylabel=ylabel, xlabel="", ylim=(0, 1.15 * top))
    ax.tick_params(axis="x", labelsize=7)


def figures(metrics: dict, out_dir: str | os.PathLike, prefix: str = "04_scaling") -> list[Path]:
    """Speed-up over one rank for every configuration (every batch and precision): each pair of repeats,
    the median and its interval, ideal = the cores used; and the model state per rank by part."""
    runs, out_dir = metrics["runs"], Path(out_dir)
    compared = [r for r in runs if r["speedup"] and r is not reference(runs, r)]
    fig, ax = plots.figure(ncols=2, width=max(3.5, 0.5 * len(compared) + 1.5), width_ratios=[2, 1])
    _ratio_panel(
        ax[0, 0],
        [(_label(r), r["strategy"], r["speedup"]) for r in compared],
        "speed-up vs 1 rank",
        ideal=[r["world"] * r["threads"] / reference(runs, r)["threads"] for r in compared],
    )
    ax[0, 0].set_title("points: pairs of repeats; bar: median [95% interval]; dash: ideal", fontsize=8)
    mem = ax[0, 1]
    labels, parts = [], {"params": [], "grads": [], "optimizer": []}
    for r in runs:
        if r["threads"] == 1 and r["amp"] == runs[0]["amp"] and r["batch"] == runs[0]["batch"]:
            labels.append(f"{r['strategy']} x{r['world']}")
            for k in parts:
                parts[k].append(r["model_state"][k] / 2**20)
    left = [0.0] * len(labels)
    for (k, v), colour in zip(parts.items(), sns.color_palette("deep", 3), strict=True):
        mem.barh(labels, v, left=left, color=colour, label=k)
        left = [a + b for a, b in zip(left, v, strict=True)]
    mem.set(xlabel="model state per rank (MiB)", xlim=(0, None))
    mem.legend(fontsize=8)
    return [plots.save(fig, out_dir / f"{prefix}.png")]


def pipeline_figure(
    metrics: dict, out_dir: str | os.PathLike, prefix: str = "06_model_parallel"
) -> list[Path]:
    """Throughput over one process at the same global batch, per pair of repeats, for each pipeline
    schedule and micro-batch count, the layer split and DDP, beside the bubble-limited ideal; and the
    largest model state any rank holds, per strategy."""
    runs = [r for r in metrics["runs"] if not (r["strategy"] == "single" and r["threads"] != 1)]
    compared = [r for r in runs if r["strategy"] != "single" and r["speedup_same_batch"]]
    fig, ax = plots.figure(ncols=2, width=max(3.5, 0.5 * len(compared) + 1.5), width_ratios=[2, 1])
    _ratio_panel(
        ax[0, 0],
        [(_label(r), r["strategy"], r["speedup_same_batch"]) for r in compared],
        "throughput / 1 process's",
        ideal=[r["ideal_speedup"] or (r["world"] if r["strategy"] == "ddp" else 1.0) for r in compared],
    )
    ax[0, 0].set_title("dash: ideal (pipeline: bubble bound S*M/(M+S-1))", fontsize=8)
    mem = ax[0, 1]
    mem.barh(
        [_label(r).replace("\n", " ") for r in runs],
        [r["model_state_bytes"] / 2**20 for r in runs],
        color=[COLOURS.get(r["strategy"], "grey") for r in runs],
    )
    mem.set(xlabel="largest model state on one rank (MiB)", xlim=(0, None))
    mem.tick_params(axis="y", labelsize=7)
    return [plots.save(fig, Path(out_dir) / f"{prefix}.png")]
