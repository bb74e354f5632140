"""What a collective costs on this machine: all_reduce, all_gather_into_tensor, reduce_scatter_tensor and
send/recv timed over message sizes, with a latency + size / bandwidth (alpha-beta) fit per collective.

``python -m lib bench comm`` launches one torchrun job per world size (gloo on CPU, NCCL on GPUs); each
rank times every collective at every size (after warm-up, a barrier before each call, the slowest
rank's time counts), and the parent fits t = alpha + beta * bytes by least squares on relative error
(a 4 KB message and a 256 MB one weigh alike). The fit's error is kept beside it: a collective whose
time is not linear in its size says so. ``lib.bench.comm_model`` turns the fits into step times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from lib.config import repo_root
from lib.parallel import dist as ranks
from lib.results import write_json_atomic, write_results
from lib.settings import COLLECTIVES, COMM_SIZES


def _call(op: str, n: int, rank: int, world: int, device: torch.device):
    """A closure running ``op`` once on an ``n``-byte float32 message."""
    count = max(world, n // 4 // world * world)  # divisible by the world size
    full = torch.ones(count, device=device)
    part = torch.ones(count // world, device=device)
    if op == "all_reduce":
        return lambda: dist.all_reduce(full)
    if op == "all_gather_into_tensor":
        return lambda: dist.all_gather_into_tensor(full, part)
    if op == "reduce_scatter_tensor":
        return lambda: dist.reduce_scatter_tensor(part, full)
    peer = rank ^ 1  # pairs (0, 1), (2, 3), ...: a point-to-point link, as between pipeline stages

    def send_recv():
        if peer >= world:
            return
        if rank % 2 == 0:
            dist.send(full, peer)
        else:
            dist.recv(full, peer)

    return send_recv


def measure_rank(sizes=COMM_SIZES, ops=COLLECTIVES, repeats: int = 5, device: str = "auto") -> dict | None:
    """Run under torchrun: every rank times each op at each size; rank 0 returns
    {op: {bytes: [seconds of each repeat, the slowest rank's]}}."""
    d = ranks.init(device)
    out: dict[str, dict[str, list[float]]] = {}
    sync = torch.cuda.synchronize if d.device.type == "cuda" else (lambda: None)
    try:
        for op in ops:
            out[op] = {}
            for n in sizes:
                run = _call(op, n, d.rank, d.world, d.device)
                for _ in range(2):  # warm-up: connections, buffers
                    run()
                sync()
                times = []
                for _ in range(repeats):
                    dist.barrier()
                    t0 = time.perf_counter()
                    run()
                    sync()
                    times.append(time.perf_counter() - t0)
                slowest = torch.tensor(times, dtype=torch.float64)
                dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
                out[op][str(n)] = slowest.tolist()
        return out if d.main else None
    finally:
        ranks.close()


def fit(times: dict[str, list[float]]) -> dict:
    """alpha (s) and beta (s/byte) for t = alpha + beta * bytes, by least squares on relative error
    over the median time at each size; with the fit's median and largest relative error."""
    n = np.array([float(k) for k in times])
    t = np.array([float(np.median(v)) for v in times.values()])
    design = np.stack([np.ones_like(n), n], axis=1) / t[:, None]  # rows divided by t: relative error
    (alpha, beta), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    alpha, beta = max(float(alpha), 0.0), max(float(beta), 0.0)
    rel = np.abs(alpha + beta * n - t) / t
    return {
        "alpha_s": alpha,
        "beta_s_per_byte": beta,
        "bandwidth_gb_s": 1e-9 / beta if beta else None,
        "median_rel_error": float(np.median(rel)),
        "max_rel_error": float(rel.max()),
        "sizes": n.astype(int).tolist(),
        "median_s": t.tolist(),
    }


def measure_collectives(
    worlds=(2,), sizes=COMM_SIZES, ops=COLLECTIVES, repeats: int = 5, device: str = "cpu", threads: int = 1
) -> dict:
    """One torchrun job per world size; every repeat kept, a fit per collective and world size."""
    runs = {}
    for world in worlds:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "times.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
            cmd += ["-m", "lib", "bench", "comm-rank", "--out", str(out), "--repeats", str(repeats)]
            cmd += ["--sizes", ",".join(map(str, sizes)), "--ops", ",".join(ops), "--device", device]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            proc = subprocess.run(cmd, cwd=repo_root(), env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"bench comm at {world} ranks failed:\n{proc.stderr[-3000:]}")
            times = json.loads(out.read_text())
        runs[str(world)] = {op: {"times": times[op], "fit": fit(times[op])} for op in times}
    return {"worlds": runs, "repeats": repeats, "backend": "nccl" if device == "cuda" else "gloo"}


def write_rank_times(path: str, **kw) -> None:
    times = measure_rank(**kw)
    if times is not None:
        write_json_atomic(Path(path), times)


def record(metrics: dict, results_dir, name: str, threads: int) -> Path:
    config = {
        "ops": list(next(iter(metrics["worlds"].values()))),
        "worlds": [int(w) for w in metrics["worlds"]],
        "repeats": metrics["repeats"],
        "backend": metrics["backend"],
        "threads_per_rank": threads,
        "workload": "collectives on float32 messages, 4 KB-256 MB; alpha-beta fit on relative error",
    }
    return write_results(results_dir, "comm", name, metrics, config, None)
