import json

import numpy as np
import pytest

from lib.bench import scaling
from lib.bench.scaling import Config, _summarise, derive, pipeline_grid
from lib.bench.scaling_views import comm_table, fsdp_vs_ddp, pipeline_table, ranks_vs_threads, table
from lib.stats import paired, shown, verdict


def _run(strategy, world, threads, samples_per_s, step_s, state, batch=16, **extra):
    """A summarised configuration; rates and step times are lists of repeats (repeat k ran in round k)."""
    glob = batch * (world if strategy in ("ddp", "fsdp") else 1)
    samples_per_s = samples_per_s if isinstance(samples_per_s, list) else [samples_per_s] * 3
    step_s = step_s if isinstance(step_s, list) else [step_s] * 3
    return {
        "strategy": strategy,
        "world": world,
        "threads": threads,
        "batch": batch,
        "global_batch": glob,
        "amp": "off",
        "microbatches": extra.pop("microbatches", 1),
        "samples_per_s": float(np.median(samples_per_s)),
        "samples_per_s_repeats": samples_per_s,
        "tokens_per_s": 10 * float(np.median(samples_per_s)),
        "step_s": float(np.median(step_s)),
        "step_s_repeats": step_s,
        "model_state_bytes": state,
        "model_state": {"params": state},
        "peak_memory_bytes": 1,
        **extra,
    }


def test_speedups_are_taken_per_pair_of_repeats_with_an_interval():
    # repeat 1 ran in a slow spell for both: the pair's ratio is unaffected, a ratio of medians is not
    one = _run("single", 1, 1, [100.0, 50.0, 100.0, 100.0, 100.0], [0.16, 0.32, 0.16, 0.16, 0.16], 1000)
    ddp = _run("ddp", 2, 1, [160.0, 80.0, 150.0, 170.0, 165.0], [0.2, 0.4, 0.21, 0.19, 0.195], 1000)
    runs = derive([one, ddp])
    assert one["speedup"]["median"] == 1.0 and one["speedup"]["values"] == [1.0] * 5
    sp = ddp["speedup"]
    assert sp["values"] == [1.6, 1.6, 1.5, 1.7, 1.65] and sp["median"] == 1.6 and sp["n"] == 5
    assert 1.5 <= sp["low"] <= sp["median"] <= sp["high"] <= 1.7
    assert ddp["efficiency"]["median"] == pytest.approx(0.8)  # per core used
    assert ddp["overhead_s"]["values"] == pytest.approx([0.04, 0.08, 0.05, 0.03, 0.035])
    assert "r_compute_comm" not in ddp and "predicted" not in ddp  # no one-point extrapolation
    (row,) = comm_table({"runs": runs})
    assert row["overhead T_N - T_1 ms"].startswith("40.0 [")
    assert table({"runs": runs})[1]["speed-up"] == shown(sp)


def test_a_comparison_is_called_a_win_only_when_its_interval_excludes_one():
    threads = _run("single", 1, 2, [171.0, 150.0, 160.0, 140.0, 175.0], 0.094, 1000)
    # DDP against threads, pair by pair: 166/171 < 1 in one pair, > 1 in others: no difference measured
    ddp = _run("ddp", 2, 1, [166.0, 160.0, 150.0, 170.0, 165.0], 0.2, 1000)
    fsdp = _run("fsdp", 2, 1, 100.0, [0.32, 0.30, 0.33, 0.31, 0.34], 500)
    runs = derive([_run("single", 1, 1, [100.0] * 5, [0.16] * 5, 1000), ddp, fsdp, threads])
    (vs,) = ranks_vs_threads({"runs": runs})
    assert vs["verdict"] == "no difference measured"
    ddp["samples_per_s_repeats"] = [200.0] * 5  # every pair says DDP
    assert ranks_vs_threads({"runs": runs})[0]["verdict"] == "DDP faster"
    ddp["step_s_repeats"] = [0.2, 0.19, 0.21, 0.2, 0.2]
    (mem,) = fsdp_vs_ddp({"runs": runs})
    assert mem["model state FSDP / DDP"] == 0.5 and mem["verdict"] == "FSDP slower"
    assert mem["step time FSDP / DDP"] == "1.58 [1.55, 1.70]"  # 0.32/0.2, 0.30/0.19, ... pair by pair
    # too few repeats: a median, no interval, no verdict
    assert verdict(paired([2.0, 2.0], [1.0, 1.0]), "faster", "slower") == "too few repeats to tell"


def test_pipeline_sweep_compares_at_one_global_batch_with_the_bubble_bound():
    configs = pipeline_grid(worlds=(2,), batches=(32,), microbatches=(1, 2, 4))
    names = [c.name for c in configs]
    assert "pipeline-1f1b-m1-w2-t1-b32-off" not in names  # 1F1B needs a micro-batch per stage
    assert "pipeline-gpipe-m1-w2-t1-b32-off" in names and "layers-w1-t1-b32-off" in names
    ddp = next(c for c in configs if c.strategy == "ddp")
    assert ddp.batch == 16 and ddp.global_batch == 32 == Config("pipeline", 2, batch=32).global_batch
    runs = derive(
        [
            _run("single", 1, 1, 100.0, 0.32, 1000, batch=32),
            _run(
                "pipeline",
                2,
                1,
                120.0,
                0.27,
                600,
                batch=32,
                schedule="1f1b",
                microbatches=4,
                comm_ops=[
                    {"gloo:send": 0.01, "gloo:recv": 0.02, "gloo:all_reduce": 0.5},
                    {"gloo:recv": 0.04},
                ],
            ),
            _run("ddp", 2, 1, 150.0, 0.21, 1000, batch=16),
        ]
    )
    one, pipe, ddp_run = runs
    assert pipe["ideal_speedup"] == pytest.approx(2 * 4 / 5)
    assert pipe["speedup_same_batch"]["median"] == pytest.approx(1.2)
    assert pipe["overhead_s"] is None  # the overhead of N ranks over one: data parallel only
    assert ddp_run["speedup_same_batch"]["median"] == pytest.approx(1.5)
    assert ddp_run["speedup"] is None  # no 1-rank b16 run
    rows = {r["strategy"]: r for r in pipeline_table({"runs": runs})}
    assert rows["pipeline"]["send/recv ms"] == 40.0  # the slower rank's sends + receives, no all-reduce
    assert rows["ddp"]["batch"] == 32 and rows["single"]["vs 1 process"] == "1 (reference)"
    assert rows["pipeline"]["verdict"] == "faster"  # 1.2 in every pair


def test_repeats_are_summarised_by_their_median():
    def rec(sps, step, comm):
        ranks = [
            {"peak_memory_bytes": 5, "model_state_bytes": {"total": 7}, "comm_s": comm},
            {"peak_memory_bytes": 6, "model_state_bytes": {"total": 3}, "comm_s": comm / 2},
        ]
        return {
            "samples_per_s_median": sps,
            "tokens_per_s_median": 10 * sps,
            "step_s_median": step,
            "timed_steps": 24,
            "final_loss": 1.0,
            "mfu": None,
            "ranks": ranks,
        }

    run = _summarise(Config("ddp", 2), [rec(100.0, 0.3, 0.02), rec(80.0, 0.4, 0.05), rec(120.0, 0.25, 0.01)])
    assert run["samples_per_s"] == 100.0 and run["step_s"] == 0.3 and run["comm_s"] == 0.02
    assert run["samples_per_s_repeats"] == [100.0, 80.0, 120.0] and run["step_s_repeats"] == [0.3, 0.4, 0.25]
    assert run["peak_memory_bytes"] == 6 and run["model_state_bytes"] == 7 and run["global_batch"] == 32


def test_a_sweep_resumes_its_own_jobs_and_never_reuses_another_sweeps(tmp_path, monkeypatch):
    """Jobs found finished in the scratch folder are reused only by the sweep that made them (an
    interrupted one, resumed), and each reused repeat says so; another sweep in the same folder
    launches its own."""
    launched = []

    def fake_launch(cfg, out, profile, params_dir, steps, profile_comm=0):
        launched.append(out.name)
        rank = {"peak_memory_bytes": 1, "model_state_bytes": {"total": 1}, "comm_s": 0.0}
        rec = {
            "status": "finished",
            "steps": steps,
            "timed_steps": steps - 1 - profile_comm,
            "samples_per_s_median": 100.0 + len(launched),
            "tokens_per_s_median": 1000.0,
            "step_s_median": 0.1,
            "final_loss": 1.0,
            "mfu": None,
            "ranks": [rank],
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.json").write_text(json.dumps(rec))
        return rec

    monkeypatch.setattr(scaling, "launch", fake_launch)
    a = [Config("single", 1, 1, 16), Config("ddp", 2, 1, 16)]
    first = scaling.sweep(a, tmp_path, steps=5, profile_comm=1, repeats=2, progress=False)
    assert len(launched) == 4 and not any(j["resumed"] for r in first["runs"] for j in r["jobs"])
    again = scaling.sweep(a, tmp_path, steps=5, profile_comm=1, repeats=2, progress=False)
    assert len(launched) == 4 and all(j["resumed"] for r in again["runs"] for j in r["jobs"])
    assert again["runs"][1]["samples_per_s_repeats"] == first["runs"][1]["samples_per_s_repeats"]
    b = [Config("single", 1, 1, 16), Config("fsdp", 2, 1, 16)]  # shares single-w1-t1-b16 with a
    other = scaling.sweep(b, tmp_path, steps=5, profile_comm=1, repeats=2, progress=False)
    assert len(launched) == 8 and not any(j["resumed"] for r in other["runs"] for j in r["jobs"])
