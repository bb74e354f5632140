"""What a scaling sweep shows: tables of throughput, speed-up, communication and memory, and its figures,
from the sweep's metrics (``lib.bench.scaling``) alone, so ``python -m lib report`` redraws them."""

from __future__ import annotations

import os
from pathlib import Path

from lib import plots
from lib.bench.scaling import COLOURS


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
            "speed-up": None if r["speedup"] is None else round(r["speedup"], 2),
            "efficiency": None if r["efficiency"] is None else round(r["efficiency"], 2),
            "R = T_compute/T_comm": None if r["r_compute_comm"] is None else round(r["r_compute_comm"], 2),
            "peak RSS/rank MiB": round(r["peak_memory_bytes"] / mib),
            "model state/rank MiB": round(r["model_state_bytes"] / mib, 2),
        }
        for r in metrics["runs"]
    ]


def comm_table(metrics: dict) -> list[dict]:
    """Data-parallel runs: one-rank step time, the overhead of N ranks over it, R (None where there is
    no overhead to measure), what the profiler saw in flight (collectives overlap backward, so it can
    exceed the overhead), and the predicted speed-up at more ranks."""
    return [
        {
            "strategy": r["strategy"],
            "ranks": r["world"],
            "batch/rank": r["batch"],
            "amp": r["amp"],
            "T_1 ms": round(1e3 * (r["step_s"] - r["overhead_s"]), 1),
            "overhead ms": round(1e3 * r["overhead_s"], 1),
            "R": _round(r["r_compute_comm"]),
            "comm in flight ms": _round(r.get("comm_s") and 1e3 * r["comm_s"], 1),
            **{f"predicted x{n}": round(v, 2) for n, v in r["predicted"].items()},
        }
        for r in metrics["runs"]
        if r["world"] > 1 and r["overhead_s"] is not None
    ]


def pipeline_table(metrics: dict) -> list[dict]:
    """Model parallelism at one global batch: each strategy's throughput against one process, the
    pipeline schedule's ideal (bubble-limited) speed-up, time in sends/receives and memory per rank."""
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
                "vs 1 process": _round(r.get("speedup_same_batch")),
                "ideal (bubble)": _round(r.get("ideal_speedup")),
                "send/recv ms": round(1e3 * sends, 1) if r["strategy"] == "pipeline" else None,
                "model state/rank MiB": round(r["model_state_bytes"] / mib, 2),
                "peak RSS/rank MiB": round(r["peak_memory_bytes"] / mib),
            }
        )
    return rows


def ranks_vs_threads(metrics: dict) -> list[dict]:
    """Per batch and precision: 2 ranks x 1 thread (DDP) against 1 process with more threads."""
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
            rows.append(
                {
                    "batch/rank": r["batch"],
                    "amp": r["amp"],
                    f"DDP {ddp['world']} ranks x 1 thread, samples/s": round(ddp["samples_per_s"], 1),
                    f"1 process x {r['threads']} threads, samples/s": round(r["samples_per_s"], 1),
                    "winner": "DDP" if ddp["samples_per_s"] > r["samples_per_s"] else "threads",
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
    """Where both ran with the same ranks, batch and precision: FSDP's model state and step time over
    DDP's."""
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
            rows.append(
                {
                    "ranks": f["world"],
                    "batch/rank": f["batch"],
                    "amp": f["amp"],
                    "model state FSDP / DDP": round(f["model_state_bytes"] / d["model_state_bytes"], 2),
                    "step time FSDP / DDP": round(f["step_s"] / d["step_s"], 2),
                }
            )
    return rows


def figures(metrics: dict, out_dir: str | os.PathLike, prefix: str = "04_scaling") -> list[Path]:
    runs, out_dir = metrics["runs"], Path(out_dir)
    fig, ax = plots.figure(ncols=2, width=4.6)
    sp, mem = ax[0, 0], ax[0, 1]
    top = max(r["world"] for r in runs)
    sp.plot([1, top], [1, top], color="k", ls="--", lw=1, label="ideal")
    # one slice of the sweep: the commonest batch and precision (the others are in the table)
    batch = max((r["batch"] for r in runs), key=[r["batch"] for r in runs].count)
    amp = max((r["amp"] for r in runs), key=[r["amp"] for r in runs].count)
    runs = [r for r in runs if r["amp"] == amp]
    for s in ("ddp", "fsdp"):
        mine = sorted(
            (r for r in runs if r["strategy"] == s and r["batch"] == batch and r["speedup"]),
            key=lambda r: r["world"],
        )
        if mine:
            sp.plot(
                [1] + [r["world"] for r in mine],
                [1] + [r["speedup"] for r in mine],
                marker="o",
                color=COLOURS[s],
                label=s,
            )
    for r in runs:
        if r["strategy"] == "single" and r["threads"] > 1 and r["batch"] == batch and r["speedup"]:
            sp.scatter(
                [r["threads"]],
                [r["speedup"]],
                marker="s",
                color="grey",
                zorder=3,
                label=f"1 process, {r['threads']} threads",
            )
    sp.set(
        xlabel="ranks (1 thread each)",
        ylabel="speed-up vs 1 rank",
        xticks=range(1, top + 1),
        title=f"batch {batch} per rank, amp {amp}",
    )
    sp.legend(fontsize=8)
    labels, parts = [], {"params": [], "grads": [], "optimizer": []}
    for r in runs:
        if r["batch"] == batch and r["threads"] == 1:
            labels.append(f"{r['strategy']} x{r['world']}")
            for k in parts:
                parts[k].append(r["model_state"][k] / 2**20)
    left = [0.0] * len(labels)
    for (k, v), colour in zip(parts.items(), ("#4C72B0", "#DD8452", "#55A868"), strict=True):
        mem.barh(labels, v, left=left, color=colour, label=k)
        left = [a + b for a, b in zip(left, v, strict=True)]
    mem.set(xlabel="model state per rank (MiB)")
    mem.legend(fontsize=8)
    return [plots.save(fig, out_dir / f"{prefix}.png")]


def pipeline_figure(
    metrics: dict, out_dir: str | os.PathLike, prefix: str = "06_model_parallel"
) -> list[Path]:
    """Throughput against micro-batches per pipeline schedule, beside one process, the layer split,
    DDP and the bubble-limited ideal; and the largest model state any rank holds, per strategy."""
    runs = [r for r in metrics["runs"] if not (r["strategy"] == "single" and r["threads"] != 1)]
    batch = max((r["global_batch"] for r in runs), key=[r["global_batch"] for r in runs].count)
    runs = [r for r in runs if r["global_batch"] == batch and r["amp"] == runs[0]["amp"]]
    fig, ax = plots.figure(ncols=2, width=4.6)
    tp, mem = ax[0, 0], ax[0, 1]
    one = next((r for r in runs if r["strategy"] == "single"), None)
    pipes = [r for r in runs if r["strategy"] == "pipeline"]
    ms = sorted({r["microbatches"] for r in pipes})
    for schedule, marker in (("gpipe", "o"), ("1f1b", "s")):
        mine = sorted((r for r in pipes if r["schedule"] == schedule), key=lambda r: r["microbatches"])
        if mine:
            tp.plot(
                [r["microbatches"] for r in mine],
                [r["samples_per_s"] for r in mine],
                marker=marker,
                label=f"pipeline {schedule}, {mine[0]['world']} ranks",
            )
    if one and pipes:
        s = pipes[0]["world"]
        tp.plot(
            ms,
            [one["samples_per_s"] * s * m / (m + s - 1) for m in ms],
            color="k",
            ls="--",
            lw=1,
            label="ideal: 1 process x S*M/(M+S-1)",
        )
    for r, ls in (
        (one, "-"),
        (next((r for r in runs if r["strategy"] == "layers"), None), ":"),
        (next((r for r in runs if r["strategy"] == "ddp"), None), "-."),
    ):
        if r:
            label = {"single": "1 process", "layers": "layer split (1 process)"}.get(
                r["strategy"], f"DDP, {r['world']} ranks"
            )
            tp.axhline(r["samples_per_s"], color=COLOURS[r["strategy"]], ls=ls, lw=1.2, label=label)
    tp.set(xscale="log", xlabel="micro-batches per step", ylabel="samples/s", title=f"global batch {batch}")
    tp.minorticks_off()
    tp.set_xticks(ms, [str(m) for m in ms])
    tp.legend(fontsize=7)
    labels = [
        f"{r['strategy']}"
        + (f" {r['schedule']} m{r['microbatches']}" if r["strategy"] == "pipeline" else "")
        + f" x{r['world']}"
        for r in runs
    ]
    mem.barh(
        labels,
        [r["model_state_bytes"] / 2**20 for r in runs],
        color=[COLOURS.get(r["strategy"], "grey") for r in runs],
    )
    mem.set(xlabel="largest model state on one rank (MiB)")
    return [plots.save(fig, Path(out_dir) / f"{prefix}.png")]
