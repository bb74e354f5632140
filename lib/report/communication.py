"""The report's communication block: the collectives measured on this machine, the step-time model
checked on runs it was not fitted on, and the full-size job projected to 1-64 GPUs with its inputs."""

from __future__ import annotations

from lib.bench import comm_model, comm_views, projection
from lib.bench.comm_views import UNITS_7B, UNITS_TINY
from lib.bench.scaling import has_pairs
from lib.report.markdown import source, table
from lib.report.seed_study import gpu_runs


def projected_run(res: dict) -> dict | None:
    """The one-GPU run the projection starts from: bf16 base weights, no activation checkpointing, the
    smallest batch (the one most sensitive to communication)."""
    runs = [
        r
        for r in gpu_runs(res)
        if r["config"]["param_dtype"] == "bfloat16"
        and not r["config"]["bench"]["grad_ckpt"]
        and r["config"]["bench"]["size"] == "biomistral-7b"
    ]
    return min(runs, key=lambda r: r["config"]["bench"]["batch"], default=None)


def communication(res: dict, run: str) -> str:
    c = res.get(f"comm/{run}")
    if not c:
        return "_Not recorded yet: `python -m lib bench comm` (notebook 04 runs it)._\n"
    out = table(comm_model.fit_table(c["metrics"])) + "\n" + source(c)
    ddp, fsdp = res.get(f"scaling/{run}-ddp"), res.get(f"scaling/{run}-fsdp")
    sweeps = [r for r in (ddp, fsdp) if r and has_pairs(r["metrics"])]
    if sweeps:
        model = comm_views.model_points(
            c["metrics"], ddp and ddp["metrics"], fsdp and fsdp["metrics"], UNITS_TINY
        )
        worst = model["held_out_max_abs_error"]
        share = model["fit_comm_share"]
        out += (
            f"\nThe step-time model T_N = s T_1 + (1 - o) C_N, fitted on {comm_views.FIT_ON}: s = "
            f"{model['s']:.2f}, o = {model['overlap']:.2f}. Held out, its largest error is {worst:.0%} "
            + ("(the 15% target is met)" if worst <= 0.15 else "(the 15% target is not met)")
            + f". In the runs it was fitted on, the modelled communication is at most {share:.1%} of a step"
            + (
                ": the step is set by compute slowed by contention (s), and the overlap o is not pinned down "
                "by them, so the last column gives each prediction with no overlap at all"
                if share < 0.05
                else ""
            )
            + ".\n\n"
            + table(comm_views.validation_table(model))
            + "\n"
            + source(*sweeps)
        )
    gpu = projected_run(res)
    if gpu:
        rows = projection.project(gpu, UNITS_7B)
        a = projection.assumptions(gpu, UNITS_7B)
        stop = {s: comm_views.stops_paying(rows, s) for s in ("ddp", "fsdp")}
        said = "; ".join(
            f"{s.upper()}: "
            + (
                f"{n} GPUs are slower than {n // 2}, even with full overlap"
                if n
                else "faster with every doubling"
            )
            for s, n in stop.items()
        )
        nets = "; ".join(f"{k}: {v['gb_s']:g} GB/s, {v['alpha_us']:g} us a step ({v['source']})" for k, v in
                         a["interconnects"].items())  # fmt: skip
        out += (
            f"\nProjected, not measured: BioMistral-7B + LoRA ({a['parameters'] / 1e9:.2f}B parameters, "
            f"{a['trained_parameters'] / 1e6:.1f}M trained), compute {a['compute']}; {a['gpus_per_node']} "
            f"GPUs a node; {a['fsdp_units']} FSDP units; interconnects: {nets}. {said}.\n\n"
            + table(comm_views.projection_table(rows))
            + "\n"
            + source(gpu)
        )
    return out
