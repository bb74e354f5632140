"""What data and model parallelism buy: the same training job at 1..N ranks, through torchrun.

Each configuration is one real `python -m lib train` job (torchrun for more than one rank) writing its
``train.json``; this module only launches them, reads the files and derives:
  throughput               at each job's median step time (bursts of other load on the machine do not
                           move it); every repeat is kept
  speed-up and efficiency  against one rank with the same threads and the same batch per data replica
                           (per rank for DDP/FSDP; the whole batch for a pipeline or a layer split),
                           per pair of repeats run one after the other: median [95% interval] (lib.stats)
  overhead                 T_N - T_1 per step, per pair: communication plus whatever the ranks contend
                           for (cores, memory bandwidth); not communication alone
  comm (profiler)          time each rank's collectives and sends were in flight, measured
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

from lib.config import DATA_ENV, repo_root
from lib.results import write_json_atomic, write_results
from lib.settings import SCHEDULES
from lib.stats import KIND, paired

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
    """Launch every configuration ``repeats`` times, in turn (A B A B ...: a slow spell on the machine
    then hits one repeat of every configuration, and the pairs compared ran minutes apart at most), and
    derive the comparisons. ``scratch`` holds the jobs and a manifest of the sweep: the same sweep,
    interrupted, resumes from its finished jobs (each marked ``resumed``); a different sweep in the same
    folder reuses none of them. ``profile_comm`` steps of each job (at most half of those after the
    first) run under the profiler to time its communication; the others give the throughput."""
    profile_comm = min(profile_comm, (steps - 1) // 2)
    scratch = Path(scratch)
    manifest = {
        "configs": [c.name for c in configs],
        "steps": steps,
        "profile_comm": profile_comm,
        "profile": profile,
        "params_dir": str(params_dir) if params_dir else None,
        "data": os.environ.get(DATA_ENV),  # another dataset's sweep never resumes the default's jobs
    }
    same_sweep = _read_json(scratch / "sweep.json") == manifest
    scratch.mkdir(parents=True, exist_ok=True)
    write_json_atomic(scratch / "sweep.json", manifest)
    done: dict[Config, list[dict]] = {}
    jobs = [(cfg, k) for k in range(repeats) for cfg in configs]
    for cfg, k in tqdm(jobs, desc="scaling", unit="job", disable=not progress):
        out = scratch / f"{cfg.name}-r{k}"
        rec = _read_json(out / "train.json") if same_sweep else None
        resumed = bool(
            rec
            and rec.get("steps") == steps
            and rec.get("status") == "finished"
            and rec.get("timed_steps") == steps - 1 - profile_comm
        )
        if not resumed:
            rec = launch(cfg, out, profile, params_dir, steps, profile_comm)
        done.setdefault(cfg, []).append({**rec, "job": out.name, "resumed": resumed})
    runs = [_summarise(cfg, done[cfg]) for cfg in configs]
    return {"runs": derive(runs), "steps": steps, "profiled_steps": profile_comm, "repeats": repeats}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
        "comparisons": KIND,
    }
    return write_results(results_dir, "scaling", name, metrics, config, seed)


def _summarise(cfg: Config, recs: list[dict]) -> dict:
    """One configuration over its repeats, every one kept in order (repeat k of every configuration
    ran in round k): rates at each job's median step time; medians across repeats for the single
    figures; memory and the communication breakdown of the first job."""
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
        "step_s_repeats": [r["step_s_median"] for r in recs],
        # which job each repeat is, and whether it was found finished by a resumed sweep
        "jobs": [{"job": r.get("job"), "resumed": r.get("resumed", False)} for r in recs],
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


def has_pairs(metrics: dict) -> bool:
    """Whether a sweep's metrics keep every repeat (so ratios can be taken per pair); files recorded
    before hold ratios of medians only, and readers name them instead of comparing."""
    return "step_s_repeats" in metrics["runs"][0]


def reference(runs: list[dict], r: dict, batch: int | None = None) -> dict | None:
    """The one-rank, one-process run ``r`` is compared with: the fewest threads, the same precision and
    the same batch (``batch``, default r's per-replica batch)."""
    ones = [
        x
        for x in runs
        if x["strategy"] == "single"
        and x["world"] == 1
        and x["amp"] == r["amp"]
        and x["batch"] == (r["batch"] if batch is None else batch)
    ]
    return min(ones, key=lambda x: x["threads"], default=None)


def derive(runs: list[dict]) -> list[dict]:
    """Per pair of repeats: speed-up against the one-rank reference (``reference``), efficiency per core
    used (ranks x threads), the overhead of data-parallel ranks over one, and, for every run, the
    speed-up over one process doing the whole global batch. Each as {median, low, high, n, values}."""
    for r in runs:
        base, same = reference(runs, r), reference(runs, r, r["global_batch"])
        sps = r["samples_per_s_repeats"]
        r["speedup"] = base and paired(sps, base["samples_per_s_repeats"])
        r["speedup_same_batch"] = same and paired(sps, same["samples_per_s_repeats"])
        cores = base and r["world"] * r["threads"] / base["threads"]
        r["efficiency"] = base and paired([x / cores for x in sps], base["samples_per_s_repeats"])
        r["overhead_s"] = (
            paired(r["step_s_repeats"], base["step_s_repeats"], op="difference")
            if base and r["world"] > 1 and r["strategy"] in DATA_PARALLEL
            else None
        )
        # the bubble: S stages idle for S-1 of the M+S-1 micro-batch slots
        r["ideal_speedup"] = (
            r["world"] * r["microbatches"] / (r["microbatches"] + r["world"] - 1)
            if r["strategy"] == "pipeline"
            else None
        )
    return runs
