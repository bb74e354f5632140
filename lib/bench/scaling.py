"""What data and model parallelism buy: the same training job at 1..N ranks, through torchrun.

Each configuration is one real `python -m lib train` job (torchrun for more than one rank) writing its
``train.json``; this module only launches them, reads the files and derives:
  speed-up and efficiency  against one rank with the same threads and the same per-rank batch
  overhead                 T_N - T_1 per step: communication plus whatever the ranks contend for
  R = T_1 / overhead       compute over communication; the seeds' transformer study ran at R <= 1
  predicted speed-up       Amdahl-style at larger N, with ring all-reduce cost growing as (N-1)/N
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from lib import plots
from lib.config import repo_root

COLOURS = {"single": "#4C72B0", "ddp": "#55A868", "fsdp": "#C44E52"}


@dataclass(frozen=True)
class Config:
    strategy: str  # single | ddp | fsdp
    world: int = 1
    threads: int = 1  # torch threads per rank
    batch: int = 16  # per rank, per step
    amp: str = "off"

    @property
    def name(self) -> str:
        return f"{self.strategy}-w{self.world}-t{self.threads}-b{self.batch}-{self.amp}"


def grid(strategies=("ddp", "fsdp"), worlds=(2,), batches=(16,), threads: int = 1, amps=("off",),
         compare_threads: int | None = 2) -> list[Config]:
    """One-rank references, every strategy at every world size, batch and precision, and (when
    compare_threads) one process using that many threads: on a small CPU box the real alternative
    to more ranks."""
    configs = [Config("single", 1, threads, b, a) for b in batches for a in amps]
    configs += [Config(s, w, threads, b, a) for s in strategies for w in worlds for b in batches for a in amps]
    if compare_threads:
        configs += [Config("single", 1, compare_threads, b, a) for b in batches for a in amps]
    return list(dict.fromkeys(configs))


def launch(cfg: Config, out: Path, profile: str, params_dir: str | None, steps: int) -> dict:
    """One training job; its train.json, or a clear error with the job's last output."""
    args = ["train", "--profile", profile, "--out", str(out), "--strategy", cfg.strategy, "--no-eval",
            "--max-steps", str(steps), "--align-steps", "0", "--batch-size", str(cfg.batch * cfg.world),
            "--amp", cfg.amp, "--threads", str(cfg.threads), "--ckpt-every", str(10 ** 9),
            "--results-dir", str(out / "results")]
    if params_dir:
        args += ["--params-dir", str(params_dir)]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.world}"]
                if cfg.world > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads)}
    proc = subprocess.run([*launcher, "-m", "lib", *args], cwd=repo_root(), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cfg.name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads((out / "train.json").read_text())


def run(configs: list[Config], scratch: str | os.PathLike, profile: str = "default",
        params_dir: str | None = None, steps: int = 30, progress: bool = True) -> dict:
    """Launch every configuration (a job already finished in ``scratch`` with as many steps is reused,
    so an interrupted sweep resumes) and derive the comparisons."""
    runs = []
    for cfg in tqdm(configs, desc="scaling", unit="job", disable=not progress):
        done = Path(scratch) / cfg.name / "train.json"
        rec = json.loads(done.read_text()) if done.exists() else None
        if not rec or rec.get("steps") != steps or rec.get("status") != "finished":
            rec = launch(cfg, Path(scratch) / cfg.name, profile, params_dir, steps)
        runs.append({**asdict(cfg), "samples_per_s": rec["samples_per_s"], "tokens_per_s": rec["tokens_per_s"],
                     "step_s": rec["step_s"], "timed_steps": rec["timed_steps"], "final_loss": rec["final_loss"],
                     "peak_memory_bytes": max(r["peak_memory_bytes"] for r in rec["ranks"]),
                     "model_state_bytes": max(r["model_state_bytes"]["total"] for r in rec["ranks"]),
                     "model_state": rec["ranks"][0]["model_state_bytes"], "mfu": rec["mfu"]})
    return {"runs": derive(runs), "steps": steps}


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
        r.update(speedup=None, efficiency=None, overhead_s=None, r_compute_comm=None, predicted={})
        if base is None:
            continue
        r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
        r["efficiency"] = r["speedup"] / (r["world"] * r["threads"] / base["threads"])
        if r["world"] == 1:
            continue
        over = max(r["step_s"] - base["step_s"], 1e-9)
        r["overhead_s"] = r["step_s"] - base["step_s"]
        r["r_compute_comm"] = base["step_s"] / over
        ring = (r["world"] - 1) / r["world"]
        r["predicted"] = {str(n): n * base["step_s"] / (base["step_s"] + over * ((n - 1) / n) / ring)
                          for n in (2, 4, 8, 16, 32)}
    return runs


def table(metrics: dict) -> list[dict]:
    mib = 2 ** 20
    return [{
        "strategy": r["strategy"], "ranks": r["world"], "threads/rank": r["threads"], "batch/rank": r["batch"],
        "amp": r["amp"], "samples/s": round(r["samples_per_s"], 1), "step ms": round(1e3 * r["step_s"], 1),
        "speed-up": None if r["speedup"] is None else round(r["speedup"], 2),
        "efficiency": None if r["efficiency"] is None else round(r["efficiency"], 2),
        "R = T_compute/T_comm": None if r["r_compute_comm"] is None else round(r["r_compute_comm"], 2),
        "peak RSS/rank MiB": round(r["peak_memory_bytes"] / mib),
        "model state/rank MiB": round(r["model_state_bytes"] / mib, 2),
    } for r in metrics["runs"]]


def comm_table(metrics: dict) -> list[dict]:
    """Multi-rank runs: one-rank step time, overhead, R and the predicted speed-up at more ranks."""
    return [{"strategy": r["strategy"], "ranks": r["world"], "batch/rank": r["batch"], "amp": r["amp"],
             "T_1 ms": round(1e3 * (r["step_s"] - r["overhead_s"]), 1), "overhead ms": round(1e3 * r["overhead_s"], 1),
             "R": round(r["r_compute_comm"], 2), **{f"predicted x{n}": round(v, 2) for n, v in r["predicted"].items()}}
            for r in metrics["runs"] if r["world"] > 1 and r["overhead_s"] is not None]


def ranks_vs_threads(metrics: dict) -> list[dict]:
    """Per batch and precision: 2 ranks x 1 thread (DDP) against 1 process with more threads."""
    rows = []
    for r in metrics["runs"]:
        if r["strategy"] != "single" or r["threads"] == 1:
            continue
        ddp = next((x for x in metrics["runs"] if x["strategy"] == "ddp" and x["world"] == r["threads"]
                    and x["threads"] == 1 and x["batch"] == r["batch"] and x["amp"] == r["amp"]), None)
        if ddp:
            rows.append({"batch/rank": r["batch"], "amp": r["amp"],
                         f"DDP {ddp['world']} ranks x 1 thread, samples/s": round(ddp["samples_per_s"], 1),
                         f"1 process x {r['threads']} threads, samples/s": round(r["samples_per_s"], 1),
                         "winner": "DDP" if ddp["samples_per_s"] > r["samples_per_s"] else "threads"})
    return rows


def memory_table(metrics: dict) -> list[dict]:
    """Model state per rank by part (parameters, gradients, optimizer) and peak memory, in MiB."""
    mib = 2 ** 20
    return [{"strategy": r["strategy"], "ranks": r["world"], "batch/rank": r["batch"], "amp": r["amp"],
             **{f"{k} MiB": round(v / mib, 3) for k, v in r["model_state"].items()},
             "peak memory MiB": round(r["peak_memory_bytes"] / mib)} for r in metrics["runs"]]


def fsdp_vs_ddp(metrics: dict) -> list[dict]:
    """Where both ran with the same ranks, batch and precision: FSDP's model state and step time over DDP's."""
    rows = []
    for f in (r for r in metrics["runs"] if r["strategy"] == "fsdp"):
        d = next((r for r in metrics["runs"] if r["strategy"] == "ddp" and
                  (r["world"], r["batch"], r["amp"], r["threads"]) == (f["world"], f["batch"], f["amp"], f["threads"])), None)
        if d:
            rows.append({"ranks": f["world"], "batch/rank": f["batch"], "amp": f["amp"],
                         "model state FSDP / DDP": round(f["model_state_bytes"] / d["model_state_bytes"], 2),
                         "step time FSDP / DDP": round(f["step_s"] / d["step_s"], 2)})
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
        mine = sorted((r for r in runs if r["strategy"] == s and r["batch"] == batch and r["speedup"]),
                      key=lambda r: r["world"])
        if mine:
            sp.plot([1] + [r["world"] for r in mine], [1] + [r["speedup"] for r in mine], marker="o",
                    color=COLOURS[s], label=s)
    for r in runs:
        if r["strategy"] == "single" and r["threads"] > 1 and r["batch"] == batch and r["speedup"]:
            sp.scatter([r["threads"]], [r["speedup"]], marker="s", color="grey", zorder=3,
                       label=f"1 process, {r['threads']} threads")
    sp.set(xlabel="ranks (1 thread each)", ylabel="speed-up vs 1 rank", xticks=range(1, top + 1),
           title=f"batch {batch} per rank, amp {amp}")
    sp.legend(fontsize=8)
    labels, parts = [], {"params": [], "grads": [], "optimizer": []}
    for r in runs:
        if r["batch"] == batch and r["threads"] == 1:
            labels.append(f"{r['strategy']} x{r['world']}")
            for k in parts:
                parts[k].append(r["model_state"][k] / 2 ** 20)
    left = [0.0] * len(labels)
    for (k, v), colour in zip(parts.items(), ("#4C72B0", "#DD8452", "#55A868"), strict=True):
        mem.barh(labels, v, left=left, color=colour, label=k)
        left = [a + b for a, b in zip(left, v, strict=True)]
    mem.set(xlabel="model state per rank (MiB)")
    mem.legend(fontsize=8)
    return [plots.save(fig, out_dir / f"{prefix}.png")]
