import json
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

from lib.data import eda
from lib.data.caption_tokens import caption_tokens
from lib.study import NotebookFailed, parameter_names, run_notebooks

from conftest import ROOT, cli, tiny_profile, tiny_training

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_py_and_ipynb_pair_are_in_sync_and_without_outputs(py):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make sync`"
    paired = nbformat.read(ipynb, as_version=4)
    source = jupytext.read(py)
    assert [(c.cell_type, c.source) for c in paired.cells] == [
        (c.cell_type, c.source) for c in source.cells
    ], f"{py.name} and {ipynb.name} differ: run `make sync`"
    assert not any(c.get("outputs") for c in paired.cells), f"{ipynb.name} holds outputs"
    assert parameter_names(source), f"{py.name} has no cell tagged 'parameters'"


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(py):
    """A parameter line papermill cannot parse (a comment holding ``=``, say) is no parameter to it: a
    value given for it is then 'unknown', only warned about, and the notebook's documentation of it lost."""
    import papermill

    read = set(papermill.inspect_notebook(str(py.with_suffix(".ipynb"))))
    assert read == parameter_names(jupytext.read(py)), f"{py.name}: papermill reads {sorted(read)}"


def test_eda_notebook_runs_through_papermill(tmp_path):
    params = tiny_profile(tmp_path, n=60)
    proc = cli(
        "run",
        "01_eda",
        "--profile",
        "default",
        "--params-dir",
        str(params),
        "--output-dir",
        str(tmp_path / "out"),
    )
    executed = tmp_path / "out" / "test" / "01_eda.ipynb"  # named by the run (the tiny profile's run_name)
    assert f"executed {executed}" in proc.stdout
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any(o.get("data", {}).get("image/png") for c in nb.cells for o in c.get("outputs", []))
    record = json.loads((tmp_path / "results" / "eda" / "test.json").read_text())
    summary, _ = eda.summarize(tmp_path / "work" / "index.jsonl", top_k=25)
    assert json.loads(json.dumps(summary)) == {k: record["metrics"][k] for k in summary}
    assert record["metrics"]["pairs"] == record["metrics"]["validation"]["kept"] == 60
    assert record["config"]["workers"] == 1 and record["seed"] == 0
    # caption lengths in BioMistral-7B's tokens (<s> and </s> included), counted by the real tokenizer
    rows = [json.loads(line) for line in open(tmp_path / "work" / "index.jsonl")]
    tokens = caption_tokens([r["caption"] for r in rows])
    assert record["metrics"]["caption_tokens"]["mean"] == round(float(tokens.mean()), 2)
    assert (
        record["metrics"]["caption_tokens"]["max"] == tokens.max() > record["metrics"]["caption_words"]["max"]
    )
    for name in ("caption_length", "terms_modalities", "images"):
        assert (tmp_path / "figures" / f"01_eda_{name}.png").stat().st_size > 1000


def test_failing_notebook_is_named_with_its_cell(tmp_path):
    params = tiny_profile(tmp_path, n=5)
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    (nbdir / "01_broken.py").write_text(
        '# %% tags=["parameters"]\nx = 1\n\n# %%\ny = x + 1\n\n# %%\nraise ValueError("bad input 42")\n'
    )
    with pytest.raises(NotebookFailed) as e:
        run_notebooks(
            ["01"], params_dir=params, notebooks_dir=nbdir, output_dir=tmp_path / "out", progress=False
        )
    msg = str(e.value)
    assert "01_broken" in msg and "cell 3" in msg and "ValueError: bad input 42" in msg
    assert "raise ValueError" in msg


def test_unknown_notebook_or_parameter_is_a_clear_error(tmp_path):
    params = tiny_profile(tmp_path, n=5)
    proc = cli("run", "99_nothing", "--params-dir", str(params), check=False)
    assert proc.returncode == 2 and "no notebook '99_nothing'" in proc.stderr
    proc = cli("run", "01", "--params-dir", str(params), "-p", "colour=blue", check=False)
    assert proc.returncode == 2 and "no parameter colour" in proc.stderr


def test_parallel_notebooks_launch_torchrun_and_report(tmp_path):
    """Notebooks 04, 05 and 06 on a tiny profile: real torchrun jobs, results files, figures. Each sweep
    runs its own jobs in its own folder: 05 compares FSDP with a DDP run of its own round, not one
    copied from 04."""
    params = tiny_profile(tmp_path, n=40)
    tiny_training(params)
    small = {"batches": [4], "steps": 3, "repeats": 1}  # intervals are tested on their own (test_scaling)
    scratch = {n: str(tmp_path / "scratch" / n) for n in ("ddp", "fsdp", "mp")}
    (params / "default" / "04_ddp.yaml").write_text(
        yaml.safe_dump(
            {
                **small,
                "scratch": scratch["ddp"],
                "worlds": [2],
                "amps": ["off"],
                "amp_compare": ["off"],
                "compare_threads": 2,
            }
        )
    )
    (params / "default" / "05_fsdp.yaml").write_text(
        yaml.safe_dump({**small, "scratch": scratch["fsdp"], "worlds": [2], "amps": ["off"]})
    )
    (params / "default" / "06_model_parallel.yaml").write_text(
        yaml.safe_dump(
            {
                **small,
                "scratch": scratch["mp"],
                "worlds": [2],
                "schedules": ["1f1b"],
                "microbatches": [2],
                "layer_split": True,
                "ddp": True,
            }
        )
    )
    cli(
        "run",
        "04",
        "05",
        "06",
        "--profile",
        "default",
        "--params-dir",
        str(params),
        "--output-dir",
        str(tmp_path / "out"),
    )
    ddp = json.loads((tmp_path / "results" / "scaling" / "test-ddp.json").read_text())["metrics"]["runs"]
    fsdp = json.loads((tmp_path / "results" / "scaling" / "test-fsdp.json").read_text())["metrics"]["runs"]
    assert {(r["strategy"], r["world"], r["threads"]) for r in ddp} == {
        ("single", 1, 1),
        ("ddp", 2, 1),
        ("single", 1, 2),
    }
    assert {r["strategy"] for r in fsdp} == {"single", "ddp", "fsdp"}
    assert not any(j["resumed"] for r in ddp + fsdp for j in r["jobs"])  # every job ran in its sweep
    mp = json.loads((tmp_path / "results" / "scaling" / "test-model-parallel.json").read_text())["metrics"][
        "runs"
    ]
    pipe = next(r for r in mp if r["strategy"] == "pipeline")
    assert (pipe["schedule"], pipe["microbatches"], pipe["world"], pipe["global_batch"]) == ("1f1b", 2, 2, 4)
    assert pipe["ideal_speedup"] == pytest.approx(4 / 3) and pipe["speedup_same_batch"]["median"] > 0
    assert any(k.endswith("send") for ops in pipe["comm_ops"] for k in ops)  # the profiler saw the sends
    jobs = {n: sorted(p.name for p in Path(d).iterdir()) for n, d in scratch.items()}
    assert jobs["fsdp"] == [
        "ddp-w2-t1-b4-off-r0",
        "fsdp-w2-t1-b4-off-r0",
        "single-w1-t1-b4-off-r0",
        "sweep.json",
    ]
    assert "pipeline-1f1b-m2-w2-t1-b4-off-r0" in jobs["mp"] and "ddp-w2-t1-b2-off-r0" in jobs["mp"]
    for name in ("04_ddp", "05_fsdp", "06_model_parallel"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000


def test_baseline_and_evaluation_notebooks_report_from_results(tmp_path):
    """Notebook 03 classifies modalities and times n_jobs; notebook 07 trains the tiny captioner
    (none finished yet), evaluates its checkpoint and shows the results file's numbers."""
    params = tiny_profile(tmp_path, n=60)
    tiny_training(params, {"steps": 4, "align_steps": 1, "batch_size": 8, "warmup": 1, "ckpt_every": 2})
    (params / "default" / "03_baselines.yaml").write_text(yaml.safe_dump({"n_jobs": [1, 2], "rounds": 20}))
    (params / "default" / "07_evaluation.yaml").write_text(
        yaml.safe_dump(
            {
                "train_run": str(tmp_path / "train"),
                "blind_run": str(tmp_path / "blind"),
                "resamples": 20,
                "throughput_images": 3,
            }
        )
    )
    cli(
        "run",
        "03",
        "07",
        "--profile",
        "default",
        "--params-dir",
        str(params),
        "--output-dir",
        str(tmp_path / "out"),
    )
    base = json.loads((tmp_path / "results" / "baseline" / "test.json").read_text())["metrics"]
    assert set(base["classifiers"]) == {
        "handcrafted_xgboost",
        "clip_xgboost",
        "clip_linear_probe",
        "clip_zero_shot",
    }
    assert base["labels"]["test"]["sources"]["dataset"] == base["pairs"]["test"] > 0
    assert [r["n_jobs"] for r in base["scaling"]["xgboost"]] == [1, 2]
    ev = json.loads((tmp_path / "results" / "evaluation" / "test.json").read_text())
    m = ev["metrics"]
    assert m["checkpoint"].endswith("step-000004") and ev["config"]["resamples"] == 20
    assert json.loads((tmp_path / "train" / "train.json").read_text())["status"] == "finished"
    # the blind captioner: the same `train` job with --image zeros, scored beside the others
    assert json.loads((tmp_path / "blind" / "train.json").read_text())["image"] == "zeros"
    trained = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results" / "training").glob("*.json")}
    assert {k: v["config"]["train"]["image"] for k, v in trained.items()} == {
        "test-single": "real",
        "test-single-zeros": "zeros",  # the blind run's record never overwrites the captioner's
    }
    assert m["blind"]["image"] == "zeros" and ev["config"]["blind"].startswith(str(tmp_path / "blind"))
    for who in ("model", "blind", "nearest_neighbour", "most_frequent"):
        facts, clip = m[who]["facts"], m[who]["clip"]
        assert set(facts["ci95"]) == {"categorical_f1", "all_f1", "hallucination_rate"}
        assert 0 <= clip["clip_s"] <= 2.5 and 0 <= clip["refclip_s"] <= 2.5 and "ci95" in clip
        assert "identical_share" in m[who] and set(m["per_modality"][who]) == set(m["per_modality"]["model"])
    assert m["references"]["facts"]["categorical_f1"] == 1.0  # the reader reads the generator exactly
    # which encoder made the numbers: the captioner's own (its run's record), and how it was pre-trained
    made = json.loads((tmp_path / "train" / "train.json").read_text())["made_from"]
    assert ev["config"]["weights"] == {"encoder": made["encoder"], "lm": made["lm"]}
    assert ev["config"]["encoder_pretraining"]["steps"] > 0
    probe = m["encoder_probe"]  # what the features hold, per fact, read by a linear probe
    assert probe["modality"]["pairs"] == m["pairs"] and 0 <= probe["modality"]["accuracy"] <= 1
    assert all(0 <= p["accuracy"] <= 1 and len(p["ci95"]) == 2 for p in probe.values())
    assert m["most_frequent"]["identical_share"] == 1.0
    for name in ("03_baselines_confusion", "03_baselines_njobs", "07_gallery", "07_per_modality"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
    for nb in ("03_baselines", "07_evaluation"):
        executed = nbformat.read(tmp_path / "out" / "test" / f"{nb}.ipynb", as_version=4)
        assert not [
            o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
        ]


def test_ablation_notebook_trains_each_row_once_and_resumes(tmp_path):
    """Notebook 08 on four rows: the recipe, a change the profile already has, one model change and one
    decoding change. The no-change and decoding rows score the recipe's run (two trainings, not four);
    run again, nothing is trained or scored."""
    from lib.jobs.ablation import ablate, select
    from lib.settings import AblationConfig

    params = tiny_profile(tmp_path, n=60)
    tiny_training(params, {"steps": 8, "align_steps": 2, "batch_size": 8, "warmup": 1, "ckpt_every": 4})
    rows = ["recipe", "pooled embedding", "16 patch tokens", "beam 3, no repeated 3-grams"]
    (params / "default" / "08_ablation.yaml").write_text(
        yaml.safe_dump({"steps": 4, "resamples": 20, "rows": rows})
    )
    cli("run", "08", "--params-dir", str(params), "--output-dir", str(tmp_path / "out"))
    rec = json.loads((tmp_path / "results" / "ablation" / "test.json").read_text())
    got = {r["name"]: r for r in rec["metrics"]["rows"]}
    assert list(got) == rows and rec["metrics"]["split"] == "valid"
    recipe, pooled, tokens, beam = (got[n] for n in rows)
    assert recipe["steps"] == 4 and recipe["train.yaml"]["train"]["align_steps"] == 1  # its share of 8
    assert tokens["model_spec"]["visual_tokens"] == 16 and tokens["model_spec"]["encoder_output"] == "tokens"
    assert beam["run"] == pooled["run"] == recipe["run"] != tokens["run"]  # pooled is profile.yaml's
    assert recipe["model_spec"]["visual_tokens"] == 4 and pooled["scores"] == recipe["scores"]
    assert beam["search"]["num_beams"] == 3 and recipe["search"]["num_beams"] == 1
    made = json.loads((tmp_path / recipe["run"] / "train.json").read_text())["made_from"]
    assert rec["metrics"]["weights"] == {
        "encoder": made["encoder"],
        "lm": made["lm"],
    }  # one pair for all rows
    for r in got.values():
        s = r["scores"]
        assert set(s["ci95"]) == {"bleu4", "cider", "rouge_l"} and "categorical_f1" in s["facts"]["ci95"]
    runs = sorted((tmp_path / "work" / "ablation" / "runs").iterdir())
    assert (
        len(runs) == 2 and not (tmp_path / "results" / "training").exists()
    )  # rows' records stay beside them
    stamps = {p: p.stat().st_mtime_ns for r in runs for p in r.rglob("*.json")}
    again = ablate(
        "default", str(params), AblationConfig(steps=4, resamples=20), select(rows), progress=False
    )
    assert [r["scores"] for r in again["rows"]] == [got[n]["scores"] for n in rows]
    assert {p: p.stat().st_mtime_ns for r in runs for p in r.rglob("*.json")} == stamps
    assert (tmp_path / "figures" / "08_ablation.png").stat().st_size > 1000


def test_an_ablation_row_that_sets_the_recipes_own_training_setting_shares_its_run(tmp_path):
    """A training setting the recipe already has, written out or left to its default, is no change."""
    from lib.jobs.ablation import row_params, select

    params = tiny_profile(tmp_path, n=5)
    recipe, grouped, random_order = select(
        ["recipe", "batches of similar lengths", "batches in random order"]
    )

    def folder(row):
        return row_params("default", str(params), row, 4, tmp_path / "scratch")

    assert folder(random_order)[0] == folder(recipe)[0] != folder(grouped)[0]  # left to its default
    assert folder(grouped)[1]["train"]["group_by_length"] is True
    path = params / "default" / "train.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["train"]["group_by_length"] = True  # a recipe that groups: now the other row is the change
    path.write_text(yaml.safe_dump(spec))
    assert folder(grouped)[0] == folder(recipe)[0] != folder(random_order)[0]
    assert folder(random_order)[1]["train"]["group_by_length"] is False
