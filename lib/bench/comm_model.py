"""Step time at N ranks from what was measured: the collectives' alpha-beta fits (``lib.bench.comm``), one
rank's compute per step, each strategy's traffic per step, and an overlap, then checked against runs it
was not fitted on, and projected to the full-size job on stated interconnects.

The model, per training step:
  T_N = s * T_1 + (1 - o) * C_N
  T_1  one rank's measured step time at the same per-rank batch and precision (compute, optimizer)
  C_N  the strategy's collectives at N ranks, from the fits:
         DDP   all-reduce of the trained parameters' gradients, in 25 MiB buckets (DDP's default)
         FSDP  per unit (each LM block, and the root): all-gather of its parameters in forward and again
               in backward (reshard after forward, FSDP2's default), frozen weights included, and a
               reduce-scatter of its trained gradients
  o    the share of C_N hidden behind compute (DDP reduces buckets during backward)
  s    compute slowed by the ranks sharing one machine (cores, memory bandwidth): 1 when each rank has
       its own device, more on a 2-core VM running 2 ranks
(s, o) are fitted on some configurations and the others are predicted, with the error stated. Ring
algorithm: an all-reduce is 2(N-1) steps of bytes/N, an all-gather or reduce-scatter N-1 of them; a tree
all-reduce has 2 log2(N) latency steps and the same ~2x bytes on the slowest link.
"""

from __future__ import annotations

import math

import numpy as np

from lib.bench.scaling import reference

BUCKET = 25 * 2**20  # DDP's bucket_cap_mb default


def _steps(op: str, n: int, algo: str = "ring") -> tuple[float, float]:
    """(latency steps, share of the bytes each link carries) of ``op`` at ``n`` ranks."""
    if n <= 1:
        return 0.0, 0.0
    if op == "send_recv":
        return 1.0, 1.0
    if op == "all_reduce":
        return (2 * math.log2(n) if algo == "tree" else 2 * (n - 1)), 2 * (n - 1) / n
    return n - 1, (n - 1) / n  # all_gather_into_tensor, reduce_scatter_tensor


def link(fit: dict, op: str, world: int) -> dict:
    """Per-link latency and time per byte from a fit made at ``world`` ranks (ring steps divided out)."""
    lat, share = _steps(op, world)
    return {"alpha_s": fit["alpha_s"] / lat, "beta_s_per_byte": fit["beta_s_per_byte"] / share}


def collective_s(op: str, nbytes: float, n: int, lk: dict, algo: str = "ring") -> float:
    lat, share = _steps(op, n, algo)
    return lat * lk["alpha_s"] + share * nbytes * lk["beta_s_per_byte"]


def traffic(strategy: str, params_bytes: float, grads_bytes: float, units: int) -> list[tuple[str, float]]:
    """Each collective of one step: (op, bytes handed over). params_bytes: every parameter of the model
    (FSDP gathers the frozen ones too); grads_bytes: the trained parameters' gradients."""
    if strategy == "ddp":
        full, rest = divmod(grads_bytes, BUCKET)
        return [("all_reduce", BUCKET)] * int(full) + ([("all_reduce", rest)] if rest else [])
    if strategy == "fsdp":
        gather = [("all_gather_into_tensor", params_bytes / units)] * (2 * units)
        return gather + [("reduce_scatter_tensor", grads_bytes / units)] * units
    return []


def comm_s(strategy, params_bytes, grads_bytes, units, n, links: dict, algo: str = "ring") -> float:
    return sum(
        collective_s(op, b, n, links[op], algo)
        for op, b in traffic(strategy, params_bytes, grads_bytes, units)
    )


def fit_overlap(points: list[dict]) -> tuple[float, float]:
    """(s, o) minimising the squared relative error of T_N = s T_1 + (1 - o) C_N over ``points``
    ({t1, tn, comm}); o on a 0..1 grid, s in closed form for each."""
    t1, tn, c = (np.array([p[k] for p in points]) for k in ("t1", "tn", "comm"))
    best = None
    for o in np.linspace(0, 1, 101):
        rest = tn - (1 - o) * c
        s = float(np.sum(rest * t1 / tn**2) / np.sum(t1**2 / tn**2))  # weighted by 1/tn^2: relative
        err = float(np.sum(((s * t1 + (1 - o) * c - tn) / tn) ** 2))
        if best is None or err < best[0]:
            best = (err, s, float(o))
    return best[1], best[2]


def links_from(comm: dict) -> tuple[dict, int]:
    """Per-link parameters of every collective from the smallest world size the comm bench ran at."""
    w = min(comm["worlds"], key=int)
    return {op: link(f["fit"], op, int(w)) for op, f in comm["worlds"][w].items()}, int(w)


def points(scaling: dict, links: dict, units: int) -> list[dict]:
    """Every data-parallel run of a sweep beside its one-rank reference and its modelled traffic."""
    runs, out = scaling["runs"], []
    for r in runs:
        base = reference(runs, r)
        if r["strategy"] not in ("ddp", "fsdp") or base is None:
            continue
        state = base["model_state"]
        out.append(
            {
                "strategy": r["strategy"],
                "ranks": r["world"],
                "batch/rank": r["batch"],
                "amp": r["amp"],
                "t1": base["step_s"],
                "tn": r["step_s"],
                "comm": comm_s(r["strategy"], state["params"], state["grads"], units, r["world"], links),
            }
        )
    return out


def validate(pts: list[dict], fit_on) -> dict:
    """Fit (s, o) on the points ``fit_on`` picks and predict all of them; the held-out ones' errors
    are the model's test."""
    for p in pts:
        p["fit"] = bool(fit_on(p))
    fitted = [p for p in pts if p["fit"]]
    s, o = fit_overlap(fitted)
    for p in pts:
        p["predicted"] = s * p["t1"] + (1 - o) * p["comm"]
        p["error"] = (p["predicted"] - p["tn"]) / p["tn"]
        p["error_no_overlap"] = (s * p["t1"] + p["comm"] - p["tn"]) / p["tn"]
    held = [abs(p["error"]) for p in pts if not p["fit"]]
    return {
        "s": s,
        "overlap": o,
        # how much the fit could tell o: where modelled communication is a sliver of the step, any o fits
        "fit_comm_share": max(p["comm"] / p["tn"] for p in fitted),
        "points": pts,
        "held_out_max_abs_error": max(held) if held else None,
    }


def fit_table(metrics: dict) -> list[dict]:
    """A row per collective and world size: latency, bandwidth and how well the line fits."""
    return [
        {
            "collective": op,
            "ranks": int(w),
            "alpha us": round(1e6 * f["fit"]["alpha_s"], 1),
            "bandwidth GB/s": f["fit"]["bandwidth_gb_s"] and round(f["fit"]["bandwidth_gb_s"], 2),
            "fit error, median": f"{f['fit']['median_rel_error']:.0%}",
            "fit error, max": f"{f['fit']['max_rel_error']:.0%}",
        }
        for w, ops in metrics["worlds"].items()
        for op, f in ops.items()
    ]
