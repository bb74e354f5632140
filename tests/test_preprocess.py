import json
import signal
import subprocess
import sys
import time

import numpy as np
import yaml

from lib.data.generate import generate
from lib.data.preprocess import PrepConfig, fit, open_shard, preprocess, slurm_cluster

import badfiles
from conftest import ROOT, cli


def _tree(out):
    files = sorted(p for p in (out / "shards").iterdir()) + [out / "index.jsonl", out / "quarantine.json"]
    return {p.name: p.read_bytes() for p in files}


def test_all_local_backends_write_identical_shards(small_data, tmp_path):
    index = tmp_path / "index.jsonl"
    from lib.data.validate import validate

    validate(small_data, tmp_path / "report.json", index, progress=False)
    trees = {}
    for backend in ("sequential", "dask-threads", "dask-processes"):
        m = preprocess(small_data, tmp_path / backend, backend=backend, workers=2, chunk_size=32,
                       cfg=PrepConfig(size=64), index=index, progress=False)
        assert (m["stored"], m["quarantined"], m["chunks"]) == (150, 0, 5)
        trees[backend] = _tree(tmp_path / backend)
    assert trees["sequential"] == trees["dask-threads"] == trees["dask-processes"]
    row = json.loads((tmp_path / "sequential" / "index.jsonl").read_text().splitlines()[40])
    pixels = open_shard(tmp_path / "sequential", row["shard"])
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (64, 64, 3) and row["offset"] < len(pixels)


def test_bad_images_are_quarantined_with_reasons_and_the_run_completes(tmp_path):
    badfiles.build(tmp_path / "data")
    index = tmp_path / "index.jsonl"
    rows = [{"split": "train", "line": i, "image": name, "caption": "c", "mode": "RGB", "conversion": None}
            for i, name in enumerate(["good.jpg", "truncated.jpg", "cmyk.jpg", "gone.jpg", "corrupt.jpg"], 1)]
    rows[2].update(mode="CMYK", conversion="cmyk_to_rgb")
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))  # as if files changed after validation
    m = preprocess(tmp_path / "data", tmp_path / "out", index=index, cfg=PrepConfig(size=32), progress=False)
    assert (m["stored"], m["quarantined"]) == (2, 3)
    reasons = {q["image"]: q["reason"] for q in json.loads((tmp_path / "out" / "quarantine.json").read_text())}
    assert reasons == {"truncated.jpg": "truncated", "gone.jpg": "unreadable", "corrupt.jpg": "corrupt"}


def test_run_killed_with_sigkill_resumes_to_identical_output(tmp_path):
    data = tmp_path / "data"
    generate(data, n=400, seed=3, workers=1, progress=False)
    cmd = [sys.executable, "-m", "lib", "preprocess", "--data", str(data), "--chunk-size", "16", "--size", "96"]
    cli(*cmd[3:], "--out", str(tmp_path / "whole"))
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "killed")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed" / "shards"
    deadline = time.time() + 120
    while len(list(shards.glob("shard-*.json"))) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(shards.glob("shard-*.json")))
    assert 0 < done < 25, f"kill landed after {done} of 25 chunks"
    resumed = json.loads(cli(*cmd[3:], "--out", str(tmp_path / "killed")).stdout)
    assert resumed["resumed_chunks"] >= done - 1
    assert _tree(tmp_path / "killed") == _tree(tmp_path / "whole")


def test_fit_keeps_the_whole_figure_when_padding():
    img = np.full((50, 100, 3), 200, np.uint8)
    out = fit(img, PrepConfig(size=40))
    assert out.shape == (40, 40, 3)
    assert out[0].max() == 0 and out[20].min() == 200  # letterbox bars above, the figure in the middle
    assert fit(img, PrepConfig(size=40, fit="crop")).min() == 200


def test_dask_slurm_backend_builds_the_job_from_the_cluster_profile():
    spec = yaml.safe_load((ROOT / "papermill_params" / "cluster" / "preprocess.yaml").read_text())["slurm"]
    spec = {**spec, "account": "proj42", "log_directory": None}
    with slurm_cluster(spec) as cluster:  # builds the job; nothing is submitted until it is scaled
        script = cluster.job_script()
    assert "#SBATCH -A proj42" in script and "#SBATCH -p cpu" in script
    assert "#SBATCH --signal=USR1@120" in script and "#SBATCH -t 02:00:00" in script
    assert "--nworkers 16" in script or "--nprocs 16" in script
