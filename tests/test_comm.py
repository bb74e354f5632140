"""The communication model: alpha-beta fits, ring algebra, each strategy's traffic, the fitted overlap,
the projection, and one real (tiny) `bench comm` run through torchrun."""

import json

import pytest

from lib.bench import comm, comm_model, comm_views, projection

from conftest import cli


def test_the_fit_recovers_latency_and_bandwidth_and_states_its_error():
    alpha, beta = 2e-4, 1e-9  # 200 us, 1 GB/s
    times = {str(n): [alpha + beta * n] * 3 for n in (4096, 65536, 2**20, 2**24)}
    f = comm.fit(times)
    assert f["alpha_s"] == pytest.approx(alpha) and f["beta_s_per_byte"] == pytest.approx(beta)
    assert f["bandwidth_gb_s"] == pytest.approx(1.0) and f["max_rel_error"] < 1e-9
    times["4096"] = [10 * (alpha + beta * 4096)] * 3  # one size off the line: the error says so
    assert comm.fit(times)["max_rel_error"] > 0.5


def test_ring_algebra_from_two_ranks_to_n():
    fit = {"alpha_s": 1e-4, "beta_s_per_byte": 2e-9}
    for op in ("all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor", "send_recv"):
        lk = comm_model.link(fit, op, 2)
        # at the world size it was fitted on, the model gives the fit back
        assert comm_model.collective_s(op, 1e6, 2, lk) == pytest.approx(1e-4 + 2e-9 * 1e6)
    lk = comm_model.link(fit, "all_reduce", 2)  # per link: alpha/2, beta
    t8 = comm_model.collective_s("all_reduce", 1e6, 8, lk)
    assert t8 == pytest.approx(14 * 0.5e-4 + 2 * 7 / 8 * 1e6 * 2e-9)  # 2(N-1) steps of bytes/N
    assert comm_model.collective_s("all_reduce", 1e6, 8, lk, "tree") < t8  # fewer latency steps
    assert comm_model.collective_s("all_reduce", 1e6, 1, lk) == 0.0


def test_each_strategy_moves_what_it_should():
    mib = 2**20
    ddp = comm_model.traffic("ddp", 100 * mib, 60 * mib, units=5)
    assert ddp == [("all_reduce", 25 * mib), ("all_reduce", 25 * mib), ("all_reduce", 10 * mib)]  # buckets
    fsdp = comm_model.traffic("fsdp", 100 * mib, 60 * mib, units=5)
    gathers = [b for op, b in fsdp if op == "all_gather_into_tensor"]
    assert len(gathers) == 10 and sum(gathers) == pytest.approx(200 * mib)  # forward and backward
    assert sum(b for op, b in fsdp if op == "reduce_scatter_tensor") == pytest.approx(60 * mib)
    assert comm_model.traffic("pipeline", 1, 1, 1) == []


def test_contention_and_overlap_are_recovered_and_held_out_runs_are_predicted():
    s, o = 1.2, 0.4
    pts = [
        {
            "strategy": "ddp",
            "ranks": 2,
            "amp": "off",
            "batch/rank": b,
            "t1": t1,
            "comm": c,
            "tn": s * t1 + (1 - o) * c,
        }
        for b, t1, c in ((8, 0.08, 0.05), (16, 0.16, 0.02), (32, 0.36, 0.03))
    ]
    model = comm_model.validate(pts, lambda p: p["batch/rank"] < 32)
    assert model["s"] == pytest.approx(s, rel=1e-6) and model["overlap"] == pytest.approx(o)
    assert model["held_out_max_abs_error"] < 1e-6
    rows = comm_views.validation_table(model)
    assert [r["used"] for r in rows] == ["fitted on", "fitted on", "held out"]


def test_the_projection_uses_its_stated_links_and_names_where_a_gpu_stops_paying():
    run = {
        "metrics": {"parameters": 7_000_000_000, "trained_parameters": 90_000_000, "step_s": 0.15},
        "config": {"bench": {"batch": 16}},
        "provenance": {"hardware": {"tag": "1x GPU"}},
    }
    rows = projection.project(run, units=33)
    by = {(r["strategy"], r["GPUs"]): r for r in rows}
    assert by["ddp", 1]["comm s"] == 0 and by["ddp", 1]["speed-up, no overlap"] == 1
    for r in rows:
        assert r["speed-up, no overlap"] <= r["speed-up, full overlap"] <= r["GPUs"] + 1e-9
    # past one node every collective runs at InfiniBand's rate: FSDP's gathers of 14 GB of frozen
    # weights then cost more than the compute, and 16 GPUs do less than 8
    assert by["fsdp", 16]["comm s"] > 5 * by["fsdp", 8]["comm s"]
    assert comm_views.stops_paying(rows, "fsdp") == 16 and comm_views.stops_paying(rows, "ddp") is None
    assert projection.assumptions(run, 33)["interconnects"]["infiniband"]["gb_s"] == 50.0


def test_bench_comm_times_every_collective_through_torchrun(tmp_path):
    cli(
        "bench",
        "comm",
        "--sizes",
        "4096,1048576",
        "--repeats",
        "2",
        "--results",
        str(tmp_path),
        "--name",
        "t",
    )
    rec = json.loads((tmp_path / "comm" / "t.json").read_text())
    ops = rec["metrics"]["worlds"]["2"]
    assert set(ops) == {"all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor", "send_recv"}
    for op in ops.values():
        assert set(op["times"]) == {"4096", "1048576"} and all(len(v) == 2 for v in op["times"].values())
        assert all(t > 0 for v in op["times"].values() for t in v) and op["fit"]["median_s"]
    assert rec["config"]["backend"] == "gloo" and rec["provenance"]["git"]["commit"]
