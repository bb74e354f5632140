import json
import os
import subprocess

import numpy as np
import pytest

from lib.results import git_state, read_results, write_json_atomic, write_results

from conftest import ROOT


def test_results_file_records_numbers_and_provenance(tmp_path):
    path = write_results(
        tmp_path, "eda", "unit", {"pairs": np.int64(3), "mean": np.float32(1.5)}, {"top_k": 5}, seed=9
    )
    assert path == tmp_path / "eda" / "unit.json"
    rec = read_results(path)
    assert (rec["part"], rec["run"], rec["seed"], rec["config"]) == ("eda", "unit", 9, {"top_k": 5})
    assert rec["metrics"] == {"pairs": 3, "mean": 1.5}
    prov = rec["provenance"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert prov["git"]["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    hw = prov["hardware"]
    assert hw["cores"] == len(os.sched_getaffinity(0)) and hw["memory_bytes"] > 0 and hw["cpu_model"]
    assert hw["tag"]
    assert prov["libraries"]["numpy"] == np.__version__
    assert prov["python"] and prov["platform"]
    assert [p.name for p in (tmp_path / "eda").iterdir()] == ["unit.json"]  # no temp file left behind


def test_atomic_write_keeps_the_old_file_when_serialisation_fails(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_read_results_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a results file"):
        read_results(tmp_path / "x.json")


def test_rewritten_results_and_figures_do_not_make_a_run_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for name in ("results/eda/default.json", "figures/a.png", "lib/code.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "results/eda/default.json").write_text("2")
    (tmp_path / "figures/a.png").write_text("2")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "lib/code.py").write_text("2")
    assert git_state(tmp_path)["dirty"] is True


def test_a_tree_without_git_takes_its_commit_from_the_submitter(tmp_path, monkeypatch):
    monkeypatch.delenv("STUDY_GIT_COMMIT", raising=False)
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    monkeypatch.setenv("STUDY_GIT_COMMIT", "abc123")
    assert git_state(tmp_path) == {"commit": "abc123", "dirty": None, "from": "STUDY_GIT_COMMIT"}
