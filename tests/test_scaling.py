import pytest

from lib.bench.scaling import Config, _summarise, derive, pipeline_grid
from lib.bench.scaling_views import comm_table, fsdp_vs_ddp, pipeline_table, ranks_vs_threads


def _run(strategy, world, threads, samples_per_s, step_s, state, batch=16, **extra):
    glob = batch * (world if strategy in ("ddp", "fsdp") else 1)
    return {
        "strategy": strategy,
        "world": world,
        "threads": threads,
        "batch": batch,
        "global_batch": glob,
        "amp": "off",
        "samples_per_s": samples_per_s,
        "tokens_per_s": 10 * samples_per_s,
        "step_s": step_s,
        "model_state_bytes": state,
        "model_state": {"params": state},
        "peak_memory_bytes": 1,
        **extra,
    }


def test_derived_speedups_overheads_and_comparisons():
    runs = derive(
        [
            _run("single", 1, 1, 100.0, 0.16, 1000),
            _run("ddp", 2, 1, 160.0, 0.20, 1000),
            _run("fsdp", 2, 1, 100.0, 0.32, 500),
            _run("single", 1, 2, 170.0, 0.094, 1000),
        ]
    )
    one, ddp, fsdp, threads = runs
    assert one["speedup"] == 1.0 and ddp["speedup"] == 1.6 and ddp["efficiency"] == 0.8
    assert threads["speedup"] == 1.7 and threads["efficiency"] == 0.85  # per core used
    assert abs(ddp["overhead_s"] - 0.04) < 1e-12 and abs(ddp["r_compute_comm"] - 4.0) < 1e-9
    # at the measured world size the prediction is the measurement (step time 0.20 s for 2x the work)
    assert abs(ddp["predicted"]["2"] - 1.6) < 1e-9 and ddp["predicted"]["4"] > ddp["predicted"]["2"]
    assert [r["ranks"] for r in comm_table({"runs": runs})] == [2, 2]
    (vs,) = ranks_vs_threads({"runs": runs})
    assert vs["winner"] == "threads"
    (mem,) = fsdp_vs_ddp({"runs": runs})
    assert mem["model state FSDP / DDP"] == 0.5 and mem["step time FSDP / DDP"] == 1.6


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
    assert pipe["ideal_speedup"] == pytest.approx(2 * 4 / 5) and pipe["speedup_same_batch"] == pytest.approx(
        1.2
    )
    assert (
        pipe["r_compute_comm"] is None and pipe["predicted"] == {}
    )  # ring all-reduce model: data parallel only
    assert (
        ddp_run["speedup_same_batch"] == pytest.approx(1.5) and ddp_run["speedup"] is None
    )  # no 1-rank b16 run
    rows = {r["strategy"]: r for r in pipeline_table({"runs": runs})}
    assert rows["pipeline"]["send/recv ms"] == 40.0  # the slower rank's sends + receives, no all-reduce
    assert rows["ddp"]["batch"] == 32 and rows["single"]["vs 1 process"] == 1.0


def test_no_measurable_overhead_gives_no_r_and_a_linear_prediction():
    one, ddp = derive([_run("single", 1, 1, 100.0, 0.16, 1000), _run("ddp", 2, 1, 205.0, 0.158, 1000)])
    assert ddp["overhead_s"] < 0 and ddp["r_compute_comm"] is None and ddp["predicted"]["8"] == 8.0
    (row,) = comm_table({"runs": [one, ddp]})
    assert row["R"] is None


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
    assert run["samples_per_s_repeats"] == [100.0, 80.0, 120.0]
    assert run["peak_memory_bytes"] == 6 and run["model_state_bytes"] == 7 and run["global_batch"] == 32
