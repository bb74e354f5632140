"""A user's own folder as the study's input: the commands take it with no profile edited, nothing of
another dataset is reused from a cache, nothing the committed study wrote changes, and the same seed
gives the same numbers."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lib.config import load_profile, run_name_for
from lib.data.generate import generate
from lib.data.pmcoa import read_index
from lib.data.preprocess import preprocess, split_digest
from lib.data.validate import data_digest
from lib.jobs.artefacts import for_profile, settings
from lib.results import lock_state
from lib.settings import PrepConfig

from conftest import ROOT, cli, tiny_profile, tiny_training


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory):
    """A user's PMC-OA-format folder: 60 pairs, a quarter of the figures 1-4 megapixels."""
    data = tmp_path_factory.mktemp("users") / "chest-xrays"
    generate(data, n=60, seed=5, workers=2, large=0.25, progress=False)
    (data / "dataset.json").unlink()  # a user's folder has no generator manifest
    return data


def test_train_and_run_on_a_users_folder_write_nothing_of_the_committed_study(own_folder, tmp_path):
    before = _git_status()
    run = run_name_for(own_folder.resolve())
    outputs = ROOT / "outputs" / run
    try:
        train = cli(
            "train",
            "--data",
            str(own_folder),
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "3",
            "--batch-size",
            "8",
            "--align-steps",
            "1",
        )
        assert "finished at step 3" in train.stdout
        record = json.loads((outputs / "results" / "training" / f"{run}-single.json").read_text())
        assert record["metrics"]["eval"]["test_pairs"] > 0
        # the tiny encoder and LM were pre-trained on this folder's training split, in its own work folder
        pre = json.loads((outputs / "work" / "encoder" / "pretrain.json").read_text())
        assert pre["trained_on"] == split_digest(outputs / "work" / "preprocessed", "train")
        nb = ["-p", "bench_backends=[sequential]", "-p", "bench_max_workers=1", "-p", "bench_repeats=1"]
        cli("run", "01", "--data", str(own_folder))
        cli("run", "02", "--data", str(own_folder), *nb)
        eda = json.loads((outputs / "results" / "eda" / f"{run}.json").read_text())
        assert eda["config"]["data_dir"] == str(own_folder.resolve())  # outside the repository: as given
        assert (outputs / "01_eda.ipynb").exists() and (outputs / "figures" / "01_eda_images.png").exists()
        report = cli("report", "--data", str(own_folder))
        assert f"outputs/{run}/REPORT.md" in report.stdout and (outputs / "REPORT.md").exists()
        assert _git_status() == before  # results/, figures/, FINAL_REPORT.md untouched
    finally:
        shutil.rmtree(outputs, ignore_errors=True)


def test_no_model_and_no_data_are_errors_that_name_the_setting(tmp_path):
    params = tiny_profile(tmp_path, n=20)
    spec_path = params / "default" / "profile.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec_path.write_text(
        yaml.safe_dump({**spec, "params": {k: v for k, v in spec["params"].items() if k != "encoder"}})
    )
    with pytest.raises(ValueError, match=rf"{spec_path}: no 'encoder' model: .*'tiny'"):
        settings("default", str(params))
    spec_path.write_text(yaml.safe_dump(spec))
    missing = cli(
        "train",
        "--params-dir",
        str(params),
        "--data",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert missing.returncode == 2 and "no data at" in missing.stderr and "--data DIR" in missing.stderr


def _profile_on(params, data) -> None:
    path = params / "default" / "profile.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["params"]["data_dir"] = str(data)
    spec["generate"] = None
    path.write_text(yaml.safe_dump(spec))


def test_switching_datasets_in_one_work_folder_uses_nothing_of_the_other(tmp_path, capfd):
    """Dataset A, then B in the same work folder (a profile whose data_dir was edited), then A again:
    index, shards, encoder, LM and features are each rebuilt from the data at hand."""
    params = tiny_training(tiny_profile(tmp_path, n=40))
    data = {k: tmp_path / k for k in "AB"}
    for k, seed in (("A", 11), ("B", 12)):
        generate(data[k], n=40, seed=seed, workers=1, progress=False)
    made = {}
    for k in "ABA":
        _profile_on(params, data[k])
        art = for_profile("default", str(params), progress=False)
        work = art.preprocessed.parent
        rows = list(read_index(art.preprocessed / "index.jsonl"))
        captions = [
            json.loads(line)["caption"]
            for s in ("train", "valid", "test")
            for line in (data[k] / f"{s}.jsonl").read_text().splitlines()
        ]
        assert sorted(r["caption"] for r in rows) == sorted(captions)
        assert json.loads((work / "validate_report.json").read_text())["source"] == data_digest(data[k])
        trained = json.loads((work / "encoder" / "pretrain.json").read_text())["trained_on"]
        assert trained == split_digest(art.preprocessed, "train")
        assert list(read_index(art.features / "index.jsonl")) == rows
        made[k] = (trained, json.loads((work / "lm" / "pretrain.json").read_text())["trained_on"])
    assert made["A"] != made["B"]
    err = capfd.readouterr().err  # each stale cache was named, then rebuilt
    assert "was made from other data" in err and "pre-trained on other data" in err
    assert "pre-trained on other captions" in err


def test_same_seed_same_numbers(tmp_path):
    """Two runs of the default captioner from nothing (data, tiny models, features, training, captions),
    one seed, on one machine: the same numbers to the last bit."""
    results = []
    for k in range(2):
        params = tiny_training(
            tiny_profile(tmp_path / str(k), n=40),
            {"steps": 4, "align_steps": 1, "batch_size": 8, "warmup": 1},
        )
        cli("train", "--params-dir", str(params), "--out", str(tmp_path / str(k) / "run"))
        results.append(json.loads((tmp_path / str(k) / "run" / "train.json").read_text()))
    first, second = results
    assert first["losses"] == second["losses"]
    for who in ("model", "most_frequent"):
        assert {m: first["eval"][who][m] for m in ("bleu4", "cider", "meteor", "rouge_l")} == {
            m: second["eval"][who][m] for m in ("bleu4", "cider", "meteor", "rouge_l")
        }


def test_large_images_give_identical_shards_on_every_backend_with_the_users_umask(own_folder, tmp_path):
    previous = os.umask(0o022)
    try:
        kw = {"cfg": PrepConfig(size=64), "workers": 2, "progress": False}
        one = preprocess(own_folder, tmp_path / "seq", backend="sequential", **kw)
        two = preprocess(own_folder, tmp_path / "threads", backend="dask-threads", **kw)
    finally:
        os.umask(previous)
    assert one["stored"] == two["stored"] == 60 and one["chunks"] >= 4  # several chunks a worker
    for npy in sorted((tmp_path / "seq" / "shards").glob("*.npy")):
        assert np.array_equal(np.load(npy), np.load(tmp_path / "threads" / "shards" / npy.name))
        assert npy.stat().st_mode & 0o777 == 0o644  # readable by the project group, as the umask says


def test_results_record_the_locked_environment():
    state = lock_state()
    assert state["file"] == "requirements.lock" and len(state["sha256"]) == 64
    if sys.version_info[:2] == (3, 11):  # `make setup` installs from the lock on the lock's Python
        assert state["installed_as_locked"], state["differs"]
    lock = (ROOT / "requirements.lock").read_text()
    pinned = (ROOT / "constraints.txt").read_text()
    for line in (x for x in pinned.splitlines() if "==" in x):
        assert f"\n{line} \\" in lock  # the lock keeps the constraints' pins
    profile = load_profile("default", ROOT / "papermill_params")
    assert profile.with_data(ROOT / "data" / "default") is profile  # its own data: the committed study
