"""The slurm/ scripts against a real scheduler: a single-node SLURM on localhost (slurm/local/start.sh),
the study's sbatch files submitted to it on a tiny profile, every job waited for and its files checked.

The local cluster overrides only what one CPU node cannot provide: fewer cores and minutes, the CPU
device, fake GPUs for ``--gres``. It needs root and apt (it installs slurmctld, slurmd and munge);
where they are missing, PMCOA_SKIP_SLURM=1 leaves this module out, and .ci/run says so loudly.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, as_root, tiny_profile, tiny_training

SKIP = os.environ.get("PMCOA_SKIP_SLURM") == "1"
pytestmark = pytest.mark.skipif(
    SKIP, reason="PMCOA_SKIP_SLURM=1: the sbatch scripts were NOT run against SLURM"
)
DONE = {
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
FAKE_GPUS = 2


def _up() -> bool:
    return (
        shutil.which("scontrol") is not None
        and subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("UP") > 0
    )


@pytest.fixture(scope="module")
def cluster():
    """The single-node cluster, started here unless one was up already (then it is left running)."""
    root = as_root()
    if root is None or not shutil.which("apt-get"):
        pytest.fail(
            "the SLURM tests install and start a local SLURM: they need root (or passwordless sudo) "
            "and apt-get; set PMCOA_SKIP_SLURM=1 to run the suite without them"
        )
    was_up = _up()
    env = {**os.environ, "LOCAL_SLURM_FAKE_GPUS": str(FAKE_GPUS)}
    subprocess.run([*root, "bash", str(ROOT / "slurm" / "local" / "start.sh")], env=env, check=True)
    yield
    if not was_up:  # stops the daemons by the pid files start.sh wrote, nothing else
        subprocess.run([*root, "bash", str(ROOT / "slurm" / "local" / "stop.sh")], check=True)


class Jobs:
    """sbatch from the repository root, as a user would, with the tiny profile in the environment."""

    def __init__(self, tmp: Path, params: Path):
        self.tmp, self.logs = tmp, tmp / "logs"
        self.logs.mkdir()
        self.env = {**os.environ, "PY": sys.executable, "PROFILE": "default", "PMCOA_PARAMS_DIR": str(params)}

    def submit(self, script: str, *args: str, opts: tuple = (), **env: str) -> str:
        name = "%x-%A_%a.out" if any(o.startswith("--array") for o in opts) else "%x-%j.out"
        cmd = ["sbatch", "--parsable", f"--output={self.logs}/{name}", *opts, f"slurm/{script}", *args]
        proc = subprocess.run(cmd, cwd=ROOT, env={**self.env, **env}, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
        return proc.stdout.strip().split(";")[0]

    def wait(self, job: str, timeout: float = 600) -> dict[str, dict]:
        """Every task of ``job`` (one, or an array's) once all have ended: {job id: scontrol's fields}."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = subprocess.run(
                ["scontrol", "-o", "show", "job", job], capture_output=True, text=True
            ).stdout
            tasks = {}
            for line in out.splitlines():
                fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                tasks[fields["JobId"]] = fields
            if (
                tasks
                and all(t["JobState"] in DONE for t in tasks.values())
                and not any(
                    t.get("ArrayTaskId", "").startswith("[") or "-" in t.get("ArrayTaskId", "")
                    for t in tasks.values()
                )
            ):
                return tasks
            time.sleep(1)
        raise AssertionError(f"job {job} still running after {timeout} s:\n{self.log(job)}")

    def log(self, job: str) -> str:
        paths = sorted([*self.logs.glob(f"*-{job}.out"), *self.logs.glob(f"*-{job}_*.out")])
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in paths)

    def completed(self, job: str, timeout: float = 600) -> dict[str, dict]:
        tasks = self.wait(job, timeout)
        states = {t["JobState"] for t in tasks.values()}
        assert states == {"COMPLETED"}, f"job {job}: {states}\n{self.log(job)}"
        return tasks


@pytest.fixture(scope="module")
def jobs(cluster, tmp_path_factory):
    """Every job of the stage submitted at once (the scheduler fits them onto 2 cores), then waited for
    by the tests. Jobs that train need the tiny models, built here between the two submissions."""
    tmp = tmp_path_factory.mktemp("slurm")
    params = tiny_profile(tmp, n=60)
    tiny_training(params, {"steps": 4, "align_steps": 1, "batch_size": 8, "warmup": 1, "ckpt_every": 2})
    prep = yaml.safe_load((params / "default" / "02_preprocessing.yaml").read_text())
    prep["slurm"] = {
        "cores": 1,
        "processes": 1,
        "memory": "2GB",
        "walltime": "00:10:00",
        "queue": "debug",
        "log_directory": str(tmp / "logs"),
        "job_extra_directives": ["--signal=USR1@120"],
    }
    (params / "default" / "02_preprocessing.yaml").write_text(yaml.safe_dump(prep))
    before = os.environ.get("PMCOA_PARAMS_DIR")
    os.environ["PMCOA_PARAMS_DIR"] = str(params)  # for load_profile in this process, then restored
    try:
        from lib.data.generate import generate
        from lib.jobs.artefacts import for_profile

        generate(tmp / "data", n=60, seed=1, workers=1, progress=False)
        j = Jobs(tmp, params)
        one = ("--cpus-per-task=1", "--mem=2G")
        ids = {
            "preprocess": j.submit(
                "preprocess.sbatch",
                "--chunk-size",
                "16",
                opts=one,
                DATA=str(tmp / "data"),
                OUT=str(tmp / "pre-local"),
                BACKEND="dask-processes",
                WORKERS="1",
            ),
            "dask-slurm": j.submit(
                "preprocess.sbatch",
                "--chunk-size",
                "16",
                opts=one,
                DATA=str(tmp / "data"),
                OUT=str(tmp / "pre-slurm"),
                BACKEND="dask-slurm",
                WORKERS="1",
            ),
            "notebook": j.submit("run_notebook.sbatch", "01_eda", "--output-dir", str(tmp / "nb"), opts=one),
            "sweep": j.submit(
                "bench_lm.sbatch",
                "--steps",
                "3",
                opts=("--array=0-2", "--gres=gpu:1", "--cpus-per-task=1", "--mem=2G"),
                BATCHES="2 4 8",
                SIZE="tiny",
                DEVICE="cpu",
                AMP="off",
                RESULTS=str(tmp / "results"),
            ),
        }
        for_profile("default", progress=False)
        two = ("--cpus-per-task=2", "--mem=4G")
        # its USR1 warning comes ~60 s in, wherever the job has got to by then (still building its
        # model, it checkpoints after its first step). Not sooner: torchrun itself only catches the signal
        # once it has imported torch, which on a node busy with the other jobs takes tens of seconds
        ids["limit"] = j.submit(
            "train_cpu.sbatch",
            "--strategy",
            "single",
            "--max-steps",
            "1000000",
            "--ckpt-every",
            "1000000",
            "--no-eval",
            opts=("--time=2", "--signal=USR1@60", *one),
            RANKS="1",
            RUN_DIR=str(tmp / "limit"),
        )
        ids["ddp"] = j.submit(
            "train_cpu.sbatch",
            "--strategy",
            "ddp",
            "--name",
            "slurm-ddp",
            opts=two,
            RANKS="2",
            RUN_DIR=str(tmp / "ddp"),
        )
        ids["fsdp"] = j.submit(
            "train_cpu.sbatch",
            "--strategy",
            "fsdp",
            "--no-eval",
            "--name",
            "slurm-fsdp",
            opts=two,
            RANKS="2",
            RUN_DIR=str(tmp / "fsdp"),
        )
    finally:
        if before is None:
            os.environ.pop("PMCOA_PARAMS_DIR")
        else:
            os.environ["PMCOA_PARAMS_DIR"] = before
    return j, ids


def test_dask_preprocessing_job_in_its_allocation(jobs):
    j, ids = jobs
    j.completed(ids["preprocess"])
    manifest = json.loads((j.tmp / "pre-local" / "preprocess.json").read_text())
    assert manifest["backend"] == "dask-processes" and manifest["stored"] + manifest["quarantined"] == 60


def test_dask_slurm_preprocessing_submits_its_own_worker_jobs(jobs):
    j, ids = jobs
    j.completed(ids["dask-slurm"])
    manifest = json.loads((j.tmp / "pre-slurm" / "preprocess.json").read_text())
    assert manifest["backend"] == "dask-slurm" and manifest["stored"] + manifest["quarantined"] == 60
    same = json.loads((j.tmp / "pre-local" / "preprocess.json").read_text())
    assert manifest["stored"] == same["stored"]
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True).stdout
    workers = [
        line for line in out.splitlines() if "JobName=dask-worker" in line and f"StdOut={j.logs}/" in line
    ]
    assert workers, "no dask-jobqueue worker job reached the scheduler"


def test_ddp_job_runs_two_ranks_through_srun_and_torchrun(jobs):
    j, ids = jobs
    j.completed(ids["ddp"])
    rec = json.loads((j.tmp / "results" / "training" / "slurm-ddp.json").read_text())
    assert (rec["metrics"]["strategy"], rec["metrics"]["world_size"], rec["metrics"]["status"]) == (
        "ddp",
        2,
        "finished",
    )
    assert rec["metrics"]["eval"]["model"]["cider"] >= 0 and (j.tmp / "ddp" / "captions.jsonl").exists()
    assert f"job {ids['ddp']} on" in j.log(ids["ddp"])  # common.sh's line: the job ran the script as written


def test_fsdp_job_shards_over_two_ranks(jobs):
    j, ids = jobs
    j.completed(ids["fsdp"])
    rec = json.loads((j.tmp / "results" / "training" / "slurm-fsdp.json").read_text())
    assert (rec["metrics"]["strategy"], rec["metrics"]["world_size"], rec["metrics"]["status"]) == (
        "fsdp",
        2,
        "finished",
    )
    assert len(list((j.tmp / "fsdp" / "ckpt").glob("step-*/dcp/*.distcp"))) >= 2  # one shard file per rank


def test_notebook_job_runs_papermill(jobs):
    j, ids = jobs
    j.completed(ids["notebook"])
    assert json.loads((j.tmp / "results" / "eda" / "test.json").read_text())["metrics"]["pairs"] == 60
    assert (j.tmp / "nb" / "test" / "01_eda.ipynb").exists()  # named by the run


def test_array_job_sweeps_batch_sizes_on_fake_gpus(jobs):
    j, ids = jobs
    tasks = j.completed(ids["sweep"])
    assert sorted(t["ArrayTaskId"] for t in tasks.values()) == ["0", "1", "2"]
    for batch in (2, 4, 8):
        rec = json.loads((j.tmp / "results" / "lm_throughput" / f"tiny-fp32-b{batch}.json").read_text())
        assert rec["config"]["bench"]["batch"] == batch and rec["metrics"]["samples_per_s"] > 0
    assert all(t["TresPerNode"] == "gres:gpu:1" for t in tasks.values())
    assert j.log(ids["sweep"]).count("GPUs ") == 3  # each task was given a (fake) GPU: CUDA_VISIBLE_DEVICES


def test_time_limit_warning_checkpoints_and_the_job_resumes(jobs):
    j, ids = jobs
    (task,) = j.completed(ids["limit"], timeout=300).values()
    run = j.tmp / "limit"
    first = json.loads((run / "train.json").read_text())
    assert first["status"] == "preempted (SIGUSR1)", j.log(ids["limit"])
    assert "preempted; checkpoint" in j.log(
        ids["limit"]
    )  # torchrun's exit on the signal did not fail the job
    step = first["steps"]
    assert (run / "ckpt" / f"step-{step:06d}").is_dir() and (
        run / "ckpt" / "latest"
    ).read_text() == f"step-{step:06d}"
    again = j.submit(
        "train_cpu.sbatch",
        "--strategy",
        "single",
        "--resume",
        str(run),
        "--max-steps",
        str(step + 2),
        "--no-eval",
        opts=("--cpus-per-task=1", "--mem=2G"),
        RANKS="1",
        RUN_DIR=str(run),
    )
    j.completed(again)
    rest = json.loads((run / "train.json").read_text())
    assert (rest["status"], rest["start_step"], rest["steps"]) == ("finished", step, step + 2)
