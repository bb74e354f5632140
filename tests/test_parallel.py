"""Two-rank torchrun jobs on CPU (gloo) with tiny models: DDP, FSDP2 and a two-stage pipeline (GPipe,
1F1B) follow the one-process loss, FSDP halves the model state per rank, sharded and per-stage
checkpoints resume in one process, and a rank that dies ends the job quickly."""

import base64
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import ROOT, TINY_LM, cli, tiny_profile


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny profile whose artefacts are built once (by the one-process reference run)."""
    tmp = tmp_path_factory.mktemp("parallel")
    params = tiny_profile(tmp, n=60)
    (params / "default" / "train.yaml").write_text(
        yaml.safe_dump(
            {
                "pretrain": {
                    "encoder": {"epochs": 1, "batch_size": 16},
                    "lm": {"epochs": 1, "batch_size": 16, "model": dataclasses.asdict(TINY_LM)},
                },
                "visual_tokens": 4,
                "projector_hidden": 32,
                # no dropout: ranks draw different masks than one process does, the rest is the same
                # arithmetic
                "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
                "train": {
                    "steps": 4,
                    "align_steps": 1,
                    "batch_size": 8,
                    "warmup": 1,
                    "ckpt_every": 2,
                    "lr": 0.01,
                },
            }
        )
    )
    # the reference: one process accumulating 2 micro-batches = the global batch of 2 ranks x 1
    cli(
        "train",
        "--params-dir",
        str(params),
        "--out",
        str(tmp / "single"),
        "--grad-accum",
        "2",
        "--no-eval",
        "--threads",
        "1",
    )
    return tmp, params


def torchrun(*args, check=True, **kw):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "lib",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def _run(tmp, name):
    return json.loads((tmp / name / "train.json").read_text())


RUNS = {
    "ddp": ("--strategy", "ddp", "--no-eval"),
    "fsdp": ("--strategy", "fsdp", "--no-eval"),
    # 2 micro-batches of 4: the groups the reference accumulates over
    "pipeline-gpipe": ("--strategy", "pipeline", "--schedule", "gpipe", "--microbatches", "2", "--no-eval"),
    "pipeline-1f1b": ("--strategy", "pipeline", "--schedule", "1f1b", "--microbatches", "2"),
}  # and captions


@pytest.fixture(scope="module")
def two_ranks(job):
    tmp, params = job
    for name, args in RUNS.items():
        torchrun("train", "--params-dir", str(params), "--out", str(tmp / name), *args)
    return {s: _run(tmp, s) for s in ("single", *RUNS)}


@pytest.mark.parametrize("strategy", list(RUNS))
def test_two_ranks_follow_the_one_process_loss(job, two_ranks, strategy):
    one, two = two_ranks["single"], two_ranks[strategy]
    assert two["world_size"] == 2 and len(two["ranks"]) == 2 and two["steps"] == one["steps"] == 4
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["samples_per_s"] > 0 and two["tokens_per_s"] > 0
    for r in two["ranks"]:
        assert r["peak_memory_bytes"] > 0 and r["model_state_bytes"]["total"] > 0
    results = json.loads((job[0] / "results" / "training" / f"test-{strategy}-2.json").read_text())
    assert results["config"]["world_size"] == 2 and results["provenance"]["git"]["commit"]


def test_each_rank_draws_its_own_dropout_masks_and_its_checkpoint_keeps_them(job, two_ranks):
    """One seed builds the same model on every rank; then each rank draws from seed + rank, so LoRA
    dropout masks differ across data-parallel ranks as their samples do, and each rank's random state
    is saved and restored as its own. (The equal-loss tests above hold with dropout 0, which this
    module's profile sets: with dropout, ranks draw other masks than one process does.)"""
    ckpt = job[0] / "ddp" / "ckpt" / "step-000004"
    states = [torch.load(ckpt / f"rng-{r}.pt", weights_only=True)["torch"] for r in (0, 1)]
    assert not torch.equal(*states)


def test_pipeline_stages_split_the_model_and_caption_with_the_gathered_weights(job, two_ranks):
    """Each stage holds its own blocks (the first also the projector and embeddings, the last the
    head), and rank 0 captions the test split with every stage's trained weights put together."""
    one, pipe = two_ranks["single"], two_ranks["pipeline-1f1b"]
    whole = one["ranks"][0]["model_state_bytes"]["params"]
    stages = [r["model_state_bytes"]["params"] for r in pipe["ranks"]]
    assert max(stages) < whole and sum(stages) == pytest.approx(whole, rel=1e-6)
    assert pipe["schedule"] == "1f1b" and pipe["microbatches"] == 2
    assert pipe["eval"]["test_pairs"] > 0 and (job[0] / "pipeline-1f1b" / "captions.jsonl").exists()
    ckpt = job[0] / "pipeline-1f1b" / "ckpt" / "step-000004"
    assert not (ckpt / "trainable.safetensors").exists()  # no rank holds the whole model


def test_pipeline_checkpoint_resumes_in_one_process(job, two_ranks):  # the gpipe run made its checkpoint
    tmp, params = job
    ckpt = tmp / "pipeline-gpipe" / "ckpt" / "step-000002"
    cli(
        "train",
        "--params-dir",
        str(params),
        "--out",
        str(tmp / "pipe-resumed"),
        "--grad-accum",
        "2",
        "--no-eval",
        "--resume",
        str(ckpt),
        "--threads",
        "1",
    )
    resumed, whole = _run(tmp, "pipe-resumed"), _run(tmp, "pipeline-gpipe")
    assert resumed["start_step"] == 2 and resumed["losses"] == pytest.approx(whole["losses"][2:], rel=1e-5)


def test_evaluate_reads_a_pipeline_checkpoint_and_captions_as_training_did(job, two_ranks):
    """`python -m lib evaluate` on the per-stage DCP checkpoint of a 2-stage run: the same captions
    rank 0 made at the end of training with the gathered weights, plus the whole evaluation."""
    tmp, params = job
    cli(
        "evaluate",
        "--params-dir",
        str(params),
        "--checkpoint",
        str(tmp / "pipeline-1f1b"),
        "--out",
        str(tmp / "eval"),
        "--resamples",
        "20",
        "--throughput-images",
        "3",
        "--name",
        "pipe",
        "--figures",
        str(tmp / "figures"),
    )
    read = lambda p: [json.loads(line) for line in open(p)]  # noqa: E731
    trained, evaluated = read(tmp / "pipeline-1f1b" / "captions.jsonl"), read(tmp / "eval" / "captions.jsonl")
    assert [(c["id"], c["generated"]) for c in evaluated] == [(c["id"], c["generated"]) for c in trained]
    rec = json.loads((tmp / "results" / "evaluation" / "pipe.json").read_text())
    m = rec["metrics"]
    assert m["checkpoint"].endswith("step-000004") and m["pairs"] == len(evaluated)
    for who in ("model", "nearest_neighbour"):
        assert set(m[who]["ci95"]) == {"bleu4", "cider", "rouge_l", "meteor"}
        assert m[who]["vocab_share"] == m[who]["vocab"] / m[who]["reference_vocab"] > 0
    modalities = {c["modality"] for c in evaluated}
    assert set(m["per_modality"]["model"]) == modalities
    assert sum(g["n"] for g in m["per_modality"]["model"].values()) == m["pairs"]
    t = m["throughput"]
    assert t["images"] == 3 and all(
        t[k]["same_captions_as_batched"] == 1 for k in ("one_at_a_time_kv_cache", "one_at_a_time_no_cache")
    )
    assert m["spice"].startswith("unavailable") and rec["provenance"]["git"]["commit"]
    # the gallery's images travel in the results file, so the report can redraw it
    assert len(m["gallery"]) == min(6, m["pairs"]) and {g["modality"] for g in m["gallery"]} <= modalities
    assert Image.open(io.BytesIO(base64.b64decode(m["gallery"][0]["png_base64"]))).size == (160, 160)
    for name in ("07_gallery", "07_per_modality"):
        assert (tmp / "figures" / f"{name}.png").stat().st_size > 1000


def test_fsdp_holds_about_half_the_model_state_per_rank(two_ranks):
    ddp, fsdp = (two_ranks[n]["ranks"][0]["model_state_bytes"] for n in ("ddp", "fsdp"))
    assert fsdp["total"] <= 0.55 * ddp["total"]
    assert fsdp["optimizer"] <= 0.55 * ddp["optimizer"] and ddp["optimizer"] > 0


def test_fsdp_checkpoint_from_two_ranks_resumes_in_one_process(job):
    tmp, params = job
    torchrun(
        "train",
        "--params-dir",
        str(params),
        "--out",
        str(tmp / "fsdp-ckpt"),
        "--strategy",
        "fsdp",
        "--no-eval",
    )
    ckpt = tmp / "fsdp-ckpt" / "ckpt" / "step-000002"
    assert sorted(p.name for p in (ckpt / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    cli(
        "train",
        "--params-dir",
        str(params),
        "--out",
        str(tmp / "resumed"),
        "--grad-accum",
        "2",
        "--no-eval",
        "--resume",
        str(ckpt),
        "--threads",
        "1",
    )
    resumed, whole = _run(tmp, "resumed"), _run(tmp, "fsdp-ckpt")
    assert resumed["start_step"] == 2 and resumed["losses"] == pytest.approx(whole["losses"][2:], rel=1e-5)


def _wait_for_training(proc, out: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, "the job did not start training"
        time.sleep(0.5)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_a_rank_that_dies_ends_the_job_quickly_with_a_clear_error(job):
    tmp, params = job
    out = tmp / "killed"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "lib",
        "train",
        "--params-dir",
        str(params),
        "--out",
        str(out),
        "--strategy",
        "ddp",
        "--no-eval",
        "--max-steps",
        "100000",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_training(proc, out)
        ranks = {}
        for pid in _children(proc.pid):
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            rank = next((e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")), None)
            if rank is not None:
                ranks[int(rank)] = pid
        os.kill(ranks[1], signal.SIGKILL)  # as the OOM killer would
        killed = time.time()
        _, stderr = proc.communicate(timeout=120)
        assert time.time() - killed < 60  # torchrun stops the surviving rank: no hang until a time limit
        assert proc.returncode != 0 and "ChildFailedError" in stderr and "Signal 9 (SIGKILL)" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_a_warning_signal_while_torch_is_still_importing_is_kept_for_the_first_step(job):
    """On a busy node the imports take tens of seconds and SLURM's warning may come during them: the
    trainer catches it before torch is even loaded, then checkpoints after its first step (the signal's
    default action would kill the rank and leave the job with no checkpoint)."""
    tmp, params = job
    out = tmp / "early"
    cmd = ["-m", "lib", "train", "--params-dir", str(params), "--out", str(out), "--strategy", "single"]
    proc = subprocess.Popen(
        [sys.executable, *cmd, "--no-eval", "--max-steps", "100000", "--ckpt-every", "100000"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while not _catches(proc.pid, signal.SIGUSR1):
            assert proc.poll() is None and time.time() < deadline, "the trainer never caught SIGUSR1"
            time.sleep(0.002)
        torch_loaded = "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
        proc.send_signal(signal.SIGUSR1)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not torch_loaded  # the handler was there before the slow imports began
    assert proc.returncode == 0, stderr[-3000:]
    record = _run(tmp, "early")
    assert (record["status"], record["steps"]) == ("preempted (SIGUSR1)", 1)
    assert (out / "ckpt" / "latest").read_text() == "step-000001"


def test_sigusr1_to_torchrun_checkpoints_every_rank_at_the_same_step_and_resumes(job):
    """What SLURM's --signal=USR1@T does before a time limit: torchrun forwards it, the ranks agree
    on the step, write one checkpoint together, and a resumed job carries on from it."""
    tmp, params = job
    out = tmp / "usr1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
            "-m",
            "lib",
            "train",
            "--params-dir",
            str(params),
            "--out",
            str(out),
            "--strategy",
            "ddp",
            "--no-eval",
            "--max-steps",
            "100000",
            "--ckpt-every",
            "100000",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_training(proc, out)
        proc.send_signal(signal.SIGUSR1)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    record = _run(tmp, "usr1")
    assert record["status"] == "preempted (SIGUSR1)"
    step = record["steps"]
    ckpts = sorted(p.name for p in (out / "ckpt").glob("step-*"))
    assert ckpts == [f"step-{step:06d}"]  # only the preemption checkpoint: ckpt-every is far away
    torchrun(
        "train",
        "--params-dir",
        str(params),
        "--out",
        str(out),
        "--strategy",
        "ddp",
        "--no-eval",
        "--resume",
        str(out),
        "--max-steps",
        str(step + 2),
    )
    resumed = _run(tmp, "usr1")
    assert resumed["status"] == "finished" and resumed["start_step"] == step and resumed["steps"] == step + 2
