"""What data and model parallelism buy: the same training job at 1..N ranks, through torchrun.

Each configuration is one real `python -m lib train` job (torchrun for more than one rank) writing its
``train.json``; this module only launches them, reads the files and derives:
  throughput               at each job's median step time (bursts of other load on the machine do not
                           move it), the median over repeats taken in turn
  speed-up and efficiency  against one rank with the same threads and the same batch per data replica
                           (per rank for DDP/FSDP; the whole batch for a pipeline or a layer split)
  overhead                 T_N - T_1 per step: communication plus whatever the ranks contend for
  R = T_1 / overhead       compute over communication; the seeds' transformer study ran at R <= 1
  comm (profiler)          time each rank's collectives and sends were in flight, measured
  predicted speed-up       Amdahl-style at larger N, with ring all-reduce cost growing as (N-1)/N
  pipeline bubble          the schedule's ideal speed-up S*M/(M+S-1) for S stages and M micro-batches
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib.config import repo_root
from lib.results import write_results
from lib.settings import SCHEDULES

COLOURS = {
    "single": "#4C72B0",
    "ddp": "#55A868",
    "fsdp": "#C44E52",
    "pipeline": "#8172B3",
    "layers": "#937860",
}
DATA_PARALLEL = ("ddp", "fsdp")


@dataclass(frozen=True)
class Config:
    strategy: str  # single | ddp | fsdp | pipeline | layers
    world: int = 1
    threads: int = 1  # torch threads per rank
    batch: int = 16  # per data replica, per step: per rank for ddp/fsdp, the whole batch otherwise
    amp: str = "off"
    schedule: str | None = None  # pipeline: gpipe | 1f1b
    microbatches: int = 1  # pipeline

    @property
    def name(self) -> str:
        pipe = f"-{self.schedule}-m{self.microbatches}" if self.strategy == "pipeline" else ""
        return f"{self.strategy}{pipe}-w{self.world}-t{self.threads}-b{self.batch}-{self.amp}"

    @property
    def global_batch(self) -> int:
        return self.batch * (self.world if self.strategy in DATA_PARALLEL else 1)


def grid(
    strategies=("ddp", "fsdp"),
    worlds=(2,),
    batches=(16,),
    threads: int = 1,
    amps=("off",),
    compare_threads: int | None = 2,
) -> list[Config]:
    """One-rank references, every strategy at every world size, batch and precision, and (when
    compare_threads) one process using that many threads: on a small CPU box the real alternative
    to more ranks."""
    configs = [Config("single", 1, threads, b, a) for b in batches for a in amps]
    configs += [
        Config(s, w, threads, b, a) for s in strategies for w in worlds for b in batches for a in amps
    ]
    if compare_threads:
        configs += [Config("single", 1, compare_threads, b, a) for b in batches for a in amps]
    return list(dict.fromkeys(configs))


def pipeline_grid(
    worlds=(2,),
    batches=(32,),
    schedules=SCHEDULES,
    microbatches=(1, 2, 4, 8),
    threads: int = 1,
    amps=("off",),
    layers: bool = True,
    ddp: bool = True,
) -> list[Config]:
    """Model parallelism at a fixed batch: one process, the layer split (one process, blocks over
    devices), each pipeline schedule at each micro-batch count and, for contrast, DDP on the same
    ranks with the same global batch."""
    configs = [Config("single", 1, threads, b, a) for b in batches for a in amps]
    if layers:
        configs += [Config("layers", 1, threads, b, a) for b in batches for a in amps]
    # 1F1B needs at least one micro-batch per stage to alternate forward and backward
    configs += [
        Config("pipeline", w, threads, b, a, s, m)
        for w in worlds
        for b in batches
        for a in amps
        for s in schedules
        for m in microbatches
        if b % m == 0 and not (s == "1f1b" and m < w)
    ]
    if ddp:
        configs += [
            Config("ddp", w, threads, b // w, a) for w in worlds for b in batches for a in amps if b % w == 0
        ]
    return list(dict.fromkeys(configs))


def launch(
    cfg: Config, out: Path, profile: str, params_dir: str | None, steps: int, profile_comm: int = 0
) -> dict:
    """One training job; its train.json, or a clear error with the job's last output."""
    args = [
        "train",
        "--profile",
        profile,
        "--out",
        str(out),
        "--strategy",
        cfg.strategy,
        "--no-eval",
        "--max-steps",
        str(steps),
        "--align-steps",
        "0",
        "--batch-size",
        str(cfg.global_batch),
        "--amp",
        cfg.amp,
        "--threads",
        str(cfg.threads),
        "--ckpt-every",
        str(10**9),
        "--results-dir",
        str(out / "results"),
        "--profile-comm",
        str(profile_comm),
    ]
    if cfg.strategy == "pipeline":
        args += ["--schedule", cfg.schedule, "--microbatches", str(cfg.microbatches)]
    if params_dir:
        args += ["--params-dir", str(params_dir)]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.world}"]
        if cfg.world > 1
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads)}
    proc = subprocess.run(
        [*launcher, "-m", "lib", *args], cwd=repo_root(), env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg.name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((out / "train.json").read_text())


def sweep(
    configs: list[Config],
    scratch: str | os.PathLike,
    profile: str = "default",
    params_dir: str | None = None,
    steps: int = 30,
    progress: bool = True,
    profile_comm: int = 5,
    repeats: int = 1,
) -> dict:
    """Launch every configuration ``repeats`` times, in turn (a slow spell on the machine then hits
    every configuration, not one), and derive the comparisons. A job already finished in ``scratch``
    with the same steps is reused, so an interrupted sweep resumes. ``profile_comm`` steps of each
    job (at most half of those after the first) run under the profiler to time its communication;
    the others give the throughput."""
    profile_comm = min(profile_comm, (steps - 1) // 2)
    done: dict[Config, list[dict]] = {}
    jobs = [(cfg, k) for k in range(repeats) for cfg in configs]
    for cfg, k in tqdm(jobs, desc="scaling", unit="job", disable=not progress):
        out = Path(scratch) / (cfg.name + (f"-r{k}" if k else ""))
        rec = json.loads((out / "train.json").read_text()) if (out / "train.json").exists() else None
        if (
            not rec
            or rec.get("steps") != steps
            or rec.get("status") != "finished"
            or rec["timed_steps"] != steps - 1 - profile_comm
            or "step_s_median" not in rec
        ):
            rec = launch(cfg, out, profile, params_dir, steps, profile_comm)
        done.setdefault(cfg, []).append(rec)
    runs = [_summarise(cfg, done[cfg]) for cfg in configs]
    return {"runs": derive(runs), "steps": steps, "profiled_steps": profile_comm, "repeats": repeats}


def record(
    metrics: dict,
    configs: list[Config],
    results_dir: str | os.PathLike,
    name: str,
    profile: str,
    seed: int | None,
) -> Path:
    """Write a sweep to ``<results_dir>/scaling/<name>.json`` with its configuration and provenance."""
    config = {
        "profile": profile,
        "configs": [c.name for c in configs],
        "steps": metrics["steps"],
        "repeats": metrics["repeats"],
        "profiled_steps": metrics["profiled_steps"],
        "workload": "projector+LoRA steps on cached features, stage 2, no evaluation",
    }
    return write_results(results_dir, "scaling", name, metrics, config, seed)


def _summarise(cfg: Config, recs: list[dict]) -> dict:
    """One configuration over its repeats: medians of the jobs' median-step rates; memory and the
    communication breakdown of the first job."""
    med = lambda key: float(np.median([r[key] for r in recs]))  # noqa: E731
    first = recs[0]
    comm = [[x.get("comm_s") for x in r["ranks"]] for r in recs]
    return {
        **asdict(cfg),
        "global_batch": cfg.global_batch,
        "samples_per_s": med("samples_per_s_median"),
        "tokens_per_s": med("tokens_per_s_median"),
        "step_s": med("step_s_median"),
        "samples_per_s_repeats": [r["samples_per_s_median"] for r in recs],
        "timed_steps": first["timed_steps"],
        "final_loss": first["final_loss"],
        "peak_memory_bytes": max(x["peak_memory_bytes"] for x in first["ranks"]),
        "model_state_bytes": max(x["model_state_bytes"]["total"] for x in first["ranks"]),
        "model_state": first["ranks"][0]["model_state_bytes"],
        "mfu": first["mfu"],
        # the slowest rank's time in communication sets the pace of the step
        "comm_s": float(np.median([max(c) for c in comm])) if all(None not in c for c in comm) else None,
        "comm_ops": [x.get("comm_ops", {}) for x in first["ranks"]],
    }


def derive(runs: list[dict]) -> list[dict]:
    """Speed-up against the one-rank run with the fewest threads at the same per-rank batch and
    precision; efficiency is per core used (ranks x threads). Overhead, R and predictions for
    multi-rank runs."""
    ref = {}
    for r in sorted(runs, key=lambda r: -r["threads"]):
        if r["strategy"] == "single" and r["world"] == 1:
            ref[(r["batch"], r["amp"])] = r
    for r in runs:
        base = ref.get((r["batch"], r["amp"]))
        same = ref.get((r["global_batch"], r["amp"]))  # one process doing the whole job's batch
        r.update(
            speedup=None,
            efficiency=None,
            overhead_s=None,
            r_compute_comm=None,
            predicted={},
            ideal_speedup=None,
            speedup_same_batch=same and r["samples_per_s"] / same["samples_per_s"],
        )
        if r["strategy"] == "pipeline":  # the bubble: S stages idle for S-1 of the M+S-1 micro-batch slots
            s, m = r["world"], r["microbatches"]
            r["ideal_speedup"] = s * m / (m + s - 1)
        if base is None:
            continue
        r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
        r["efficiency"] = r["speedup"] / (r["world"] * r["threads"] / base["threads"])
        if r["world"] == 1 or r["strategy"] not in DATA_PARALLEL:
            continue
        r["overhead_s"] = r["step_s"] - base["step_s"]
        if r["overhead_s"] <= 0:  # no overhead this machine can measure: R unbounded, the prediction linear
            r["predicted"] = {str(n): float(n) for n in (2, 4, 8, 16, 32)}
            continue
        over = r["overhead_s"]
        r["r_compute_comm"] = base["step_s"] / over
        ring = (r["world"] - 1) / r["world"]
        r["predicted"] = {
            str(n): n * base["step_s"] / (base["step_s"] + over * ((n - 1) / n) / ring)
            for n in (2, 4, 8, 16, 32)
        }
    return runs
