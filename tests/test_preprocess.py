import json
import signal
import subprocess
import sys
import time

import numpy as np
import yaml

from lib.config import run_name_for
from lib.data.clusters import slurm_cluster
from lib.data.generate import generate
from lib.data.preprocess import decode_factor, fit, open_shard, preprocess
from lib.settings import PrepConfig

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
        m = preprocess(
            small_data,
            tmp_path / backend,
            backend=backend,
            workers=2,
            chunk_size=32,
            cfg=PrepConfig(size=64),
            index=index,
            progress=False,
        )
        assert (m["stored"], m["quarantined"], m["chunks"]) == (150, 0, 5)
        trees[backend] = _tree(tmp_path / backend)
    assert trees["sequential"] == trees["dask-threads"] == trees["dask-processes"]
    row = json.loads((tmp_path / "sequential" / "index.jsonl").read_text().splitlines()[40])
    pixels = open_shard(tmp_path / "sequential", row["shard"])
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (64, 64, 3) and row["offset"] < len(pixels)


def test_bad_images_are_quarantined_with_reasons_and_the_run_completes(tmp_path):
    badfiles.build(tmp_path / "data")
    index = tmp_path / "index.jsonl"
    rows = [
        {"split": "train", "line": i, "image": name, "caption": "c", "mode": "RGB", "conversion": None}
        for i, name in enumerate(["good.jpg", "truncated.jpg", "cmyk.jpg", "gone.jpg", "corrupt.jpg"], 1)
    ]
    rows[2].update(mode="CMYK", conversion="cmyk_to_rgb")
    index.write_text("".join(json.dumps(r) + "\n" for r in rows))  # as if files changed after validation
    m = preprocess(tmp_path / "data", tmp_path / "out", index=index, cfg=PrepConfig(size=32), progress=False)
    assert (m["stored"], m["quarantined"]) == (2, 3)
    reasons = {
        q["image"]: q["reason"] for q in json.loads((tmp_path / "out" / "quarantine.json").read_text())
    }
    assert reasons == {"truncated.jpg": "truncated", "gone.jpg": "missing_file", "corrupt.jpg": "corrupt"}


def test_run_killed_with_sigkill_resumes_to_identical_output(tmp_path):
    data = tmp_path / "data"
    generate(data, n=400, seed=3, workers=1, progress=False)
    cmd = [
        sys.executable,
        "-m",
        "lib",
        "preprocess",
        "--data",
        str(data),
        "--chunk-size",
        "16",
        "--size",
        "96",
    ]
    cli(*cmd[3:], "--out", str(tmp_path / "whole"))
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "killed")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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


def test_large_jpegs_are_decoded_at_the_smallest_size_that_is_never_enlarged():
    pad, crop = PrepConfig(size=224), PrepConfig(size=224, fit="crop")
    assert decode_factor(1500, 2000, pad) == 8  # 188 x 250 >= 168 x 224, the padded figure's size
    assert decode_factor(1500, 2000, crop) == 4  # the crop needs a 224 short side: 375 x 500
    assert decode_factor(400, 600, pad) == 2 and decode_factor(238, 271, pad) == 1  # PMC-OA's typical figure


def test_fit_keeps_the_whole_figure_when_padding():
    img = np.full((50, 100, 3), 200, np.uint8)
    out = fit(img, PrepConfig(size=40))
    assert out.shape == (40, 40, 3)
    assert out[0].max() == 0 and out[20].min() == 200  # letterbox bars above, the figure in the middle
    assert fit(img, PrepConfig(size=40, fit="crop")).min() == 200


def test_dask_slurm_backend_builds_the_job_from_the_cluster_profile():
    spec = yaml.safe_load((ROOT / "papermill_params" / "cluster" / "02_preprocessing.yaml").read_text())[
        "slurm"
    ]
    spec = {**spec, "account": "proj42", "log_directory": None}
    with slurm_cluster(spec) as cluster:  # builds the job; nothing is submitted until it is scaled
        script = cluster.job_script()
    assert "#SBATCH -A proj42" in script and "#SBATCH -p cpu" in script
    assert "#SBATCH --signal=USR1@120" in script and "#SBATCH -t 02:00:00" in script
    assert "--nworkers 16" in script or "--nprocs 16" in script


def _peak_rss_mb(data, index, out, chunk_size: int) -> float:
    """Peak RSS of a fresh process that preprocesses ``index`` sequentially. VmHWM, not ru_maxrss:
    the latter survives exec, so a child forked from a large pytest process reports pytest's size."""
    code = (
        "import re, sys\n"
        "from lib.data.preprocess import preprocess\n"
        "preprocess(sys.argv[1], sys.argv[2], index=sys.argv[3], chunk_size=int(sys.argv[4]), "
        "progress=False)\n"
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(data), str(out), str(index), str(chunk_size)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout.split()[-1]) / 1024


def test_peak_memory_follows_chunk_size_not_dataset_size(small_data, tmp_path):
    """1,200 images of 224x224x3 would hold 180 MB if kept; a 16-image chunk is 2.4 MB, a 256-image one
    38 MB."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    source = next((small_data / "images").glob("*.jpg"))
    rows = []
    for i in range(1200):
        (data / "images" / f"img{i:05d}.jpg").hardlink_to(source)
        rows.append(
            {
                "split": "train",
                "line": i + 1,
                "image": f"img{i:05d}.jpg",
                "caption": f"figure {i}",
                "mode": "RGB",
                "conversion": None,
            }
        )
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in rows[:300]))
    large.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rss_small = _peak_rss_mb(data, small, tmp_path / "a", chunk_size=16)
    rss_large = _peak_rss_mb(data, large, tmp_path / "b", chunk_size=16)
    rss_large_chunks = _peak_rss_mb(data, large, tmp_path / "c", chunk_size=256)
    assert len((tmp_path / "b" / "index.jsonl").read_text().splitlines()) == 1200
    assert rss_large - rss_small < 10, (rss_small, rss_large)  # 4x the images, the same peak
    assert rss_large_chunks - rss_large > 25, (rss_large, rss_large_chunks)  # a 16x larger chunk shows


def test_bench_preprocess_records_every_backend_and_worker_count(small_data, tmp_path):
    out = cli(
        "bench",
        "preprocess",
        "--data",
        str(small_data),
        "--backends",
        "sequential",
        "dask-threads",
        "--max-workers",
        "2",
        "--chunk-size",
        "32",
        "--size",
        "64",
        "--repeats",
        "1",
        "--limit",
        "100",
        "--scratch",
        str(tmp_path / "scratch"),
        "--results",
        str(tmp_path / "results"),
        "--figures",
        str(tmp_path / "figures"),
    )
    assert "wrote" in out.stdout
    # not the default's data: the file is named by this data's run, never the committed default.json
    record = json.loads(
        (tmp_path / "results" / "preprocess" / f"{run_name_for(small_data)}.json").read_text()
    )
    m = record["metrics"]
    assert [(r["backend"], r["workers"]) for r in m["runs"]] == [
        ("sequential", 1),
        ("dask-threads", 1),
        ("dask-threads", 2),
    ]
    assert all(r["images"] == 100 and r["chunks"] == 4 and r["img_per_s"] > 0 for r in m["runs"])
    assert m["identical_outputs"] is True
    assert [r["speedup"] for r in m["runs"] if r["workers"] == 1] == [1.0, 1.0]
    assert set(m["breakdown"]["ms_per_img"]) == {"read", "decode", "resize", "write"}
    assert m["floor_opencv"]["images"] == 100 and record["config"]["limit"] == 100
    assert set(m["reduced_vs_full"]) == set(m["floor_opencv"]["formats"]) == {"JPEG", "PNG"}
    assert record["config"]["data_dir"] == str(small_data)  # outside the repository: as given
    assert record["provenance"]["hardware"]["tag"] and record["provenance"]["git"]["commit"]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "02_preprocess_breakdown.png",
        "02_preprocess_scaling.png",
    ]
    assert list((tmp_path / "scratch").iterdir()) == []  # the runs' shards are cleaned up
