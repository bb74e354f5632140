"""`make gpu`'s script, dry-run on CPU (tiny sizes, gloo, 2 ranks) so it cannot rot between GPU visits:
every check runs through the study's own commands and records its results file."""

import json
import math

from lib.jobs.gpu_check import CHECKS, STEP_VARIANTS
from lib.report.gpu_paths import gpu_checks

from conftest import cli


def test_gpu_check_dry_run_passes_every_check_and_records_it(tmp_path):
    proc = cli(
        "gpu-check", "--dry-run", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")
    )
    assert "every check passed" in proc.stdout
    recs = {
        c: json.loads((tmp_path / "results" / "gpu" / f"cpu-dry-run-{c}.json").read_text()) for c in CHECKS
    }
    for name, rec in recs.items():
        assert rec["metrics"]["ok"] is True, name
        assert rec["config"]["check"] == name and rec["config"]["dry_run"] is True
        assert rec["provenance"]["hardware"]
    for name in ("ddp", "fsdp", "fsdp-4bit"):  # N steps, a checkpoint, then resumed to 2N
        run, resumed = recs[name]["metrics"]["run"], recs[name]["metrics"]["resumed"]
        assert run["world_size"] == resumed["world_size"] == 2 and run["strategy"] == name.split("-")[0]
        assert resumed["start_step"] == run["steps"] == len(run["losses"]) == len(resumed["losses"])
        assert all(math.isfinite(v) and v > 0 for v in run["losses"] + resumed["losses"])
    assert recs["pixels"]["metrics"]["run"]["source"] == "pixels"
    assert recs["features"]["metrics"]["run"]["source"] == "features"
    captions = recs["captions"]["metrics"]
    assert captions["batched_kv_cache"]["captions_per_s"] > 0
    assert (
        captions["one_at_a_time_no_cache"]["same_captions_as_batched"] == 1.0
    )  # greedy: the cache changes nothing
    step = recs["step"]["metrics"]["variants"]
    assert list(step) == list(STEP_VARIANTS)
    share = {k: v["real_token_share"] for k, v in step.items()}
    assert share["padded-64"] < share["grouped"] == share["grouped+fused+compile"]  # same batches
    assert all(v["tokens_per_s"] > 0 and v["seed_run_projected_hours"] > 0 for v in step.values())
    decode = recs["decode"]["metrics"]
    assert decode["images"] > 0 and len(decode["cpu_images_per_s"]) == len(decode["device_images_per_s"]) == 5
    # the report shows GPU runs only (a dry run is the test suite's): as if these had run on a GPU
    shown = {
        f"gpu/nvidia-h200-{c}": {**rec, "_path": f"results/gpu/nvidia-h200-{c}.json"}
        for c, rec in recs.items()
    }
    block = gpu_checks(shown, "default")
    assert all(f"| {c} |" in block for c in CHECKS) and "| no:" not in block
    assert "not run on a GPU yet" in gpu_checks({f"gpu/cpu-dry-run-{c}": rec for c, rec in recs.items()}, "x")


def test_a_failed_check_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    from lib.jobs import gpu_check

    monkeypatch.setattr(gpu_check, "prepare", lambda work, s: tmp_path / "params")
    monkeypatch.setattr(gpu_check, "measure_decode", lambda *a, **k: {"images": 1})

    def broken(*a, **k):
        raise RuntimeError("train pixels exited 1: CUDA error")

    monkeypatch.setattr(gpu_check, "train_run", broken)
    out = gpu_check.gpu_check(
        tmp_path / "work", tmp_path / "results", dry_run=True, checks=("pixels", "decode")
    )
    assert out["pixels"]["ok"] is False and "CUDA error" in out["pixels"]["error"]
    assert out["decode"]["ok"] is True
    rec = json.loads((tmp_path / "results" / "gpu" / "cpu-dry-run-pixels.json").read_text())
    assert rec["metrics"]["ok"] is False and "CUDA error" in rec["metrics"]["error"]
