from lib.bench.scaling import comm_table, derive, fsdp_vs_ddp, ranks_vs_threads


def _run(strategy, world, threads, samples_per_s, step_s, state):
    return {"strategy": strategy, "world": world, "threads": threads, "batch": 16, "amp": "off",
            "samples_per_s": samples_per_s, "step_s": step_s, "model_state_bytes": state,
            "model_state": {"params": state}, "peak_memory_bytes": 1}


def test_derived_speedups_overheads_and_comparisons():
    runs = derive([_run("single", 1, 1, 100.0, 0.16, 1000), _run("ddp", 2, 1, 160.0, 0.20, 1000),
                   _run("fsdp", 2, 1, 100.0, 0.32, 500), _run("single", 1, 2, 170.0, 0.094, 1000)])
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
