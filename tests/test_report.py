"""`python -m lib report` rebuilds FINAL_REPORT.md's tables and the figures from results files alone:
deterministically, only where results changed, and saying what is missing."""

import json
import re
import shutil

import pytest

from lib import report
from lib.bench.scaling import derive

from conftest import ROOT, cli


def _blocks(text: str) -> dict[str, str]:
    return {m["name"]: m.group(0) for m in report.MARKER.finditer(text)}


@pytest.fixture()
def copy(tmp_path):
    """The recorded results and the report, copied: the report is rebuilt there, never in the repo."""
    shutil.copytree(ROOT / "results", tmp_path / "results")
    shutil.copy(ROOT / "FINAL_REPORT.md", tmp_path / "FINAL_REPORT.md")
    return tmp_path


def _build(tmp, figures=True):
    cli(
        "report",
        "--results",
        str(tmp / "results"),
        "--report",
        str(tmp / "FINAL_REPORT.md"),
        *(["--figures", str(tmp / "figures")] if figures else ["--no-figures"]),
    )
    return (tmp / "FINAL_REPORT.md").read_text()


def test_the_report_is_rebuilt_byte_for_byte_and_matches_the_committed_one(copy):
    first = _build(copy)
    pngs = {p.name: p.read_bytes() for p in (copy / "figures").glob("*.png")}
    assert first == _build(copy) and pngs == {
        p.name: p.read_bytes() for p in (copy / "figures").glob("*.png")
    }
    assert first == (ROOT / "FINAL_REPORT.md").read_text(), (
        "FINAL_REPORT.md is stale: run `python -m lib report`"
    )
    assert {p.name for p in (ROOT / "figures").glob("*.png")} == set(pngs)  # every figure of the study
    assert set(_blocks(first)) == set(report.SECTIONS)
    gpu_checks = [p for p in (ROOT / "results" / "gpu").glob("*.json") if "dry-run" not in p.name]
    for name, block in _blocks(first).items():
        if name == "gpu-check" and not gpu_checks:  # no GPU lent yet: the block says what is unmeasured
            assert "has not run on a GPU yet" in block and "Unmeasured" in block
        elif name != "seed" and name != "status":
            assert "Source: `results/" in block and re.search(r" · (2-core CPU|1x NVIDIA)", block), name


def test_a_changed_results_file_changes_only_its_tables(copy):
    before = _blocks(_build(copy, figures=False))
    path = copy / "results" / "baseline" / "default.json"
    rec = json.loads(path.read_text())
    rec["metrics"]["majority_class_accuracy"] = 0.123456
    path.write_text(json.dumps(rec))
    after = _blocks(_build(copy, figures=False))
    assert [k for k in before if before[k] != after[k]] == ["baseline"]
    assert "accuracy 0.123" in after["baseline"]


def test_missing_results_say_which_notebook_records_them(copy):
    shutil.rmtree(copy / "results" / "scaling")
    text = _build(copy, figures=False)
    assert "Not recorded yet: run notebook `04_ddp`" in _blocks(text)["ddp"]
    assert "ddp speed-up" not in _blocks(text)["seed"]  # no row without its results


def test_an_unknown_block_is_a_clear_error(copy):
    path = copy / "FINAL_REPORT.md"
    path.write_text(path.read_text() + "\n<!-- generated:nonsense -->\n<!-- /generated:nonsense -->\n")
    proc = cli(
        "report", "--results", str(copy / "results"), "--report", str(path), "--no-figures", check=False
    )
    assert proc.returncode == 2 and re.search(r"block 'nonsense'", proc.stderr)


def test_the_gpu_block_holds_only_gpu_runs(copy):
    cli(
        "bench",
        "lm",
        "--size",
        "tiny",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--amp",
        "off",
        "--results",
        str(copy / "results"),
    )
    gpu = [p for p in (copy / "results" / "lm_throughput").glob("*.json") if "cuda" in p.read_text()]
    before = _blocks(_build(copy, figures=False))
    assert (
        "tiny-cpu" not in before["gpu"] and before["gpu"].count("\n| ") == len(gpu) + 2
    )  # header, rule, a row each
    for p in gpu:
        p.unlink()
    after = _blocks(_build(copy, figures=False))
    assert "Not recorded yet" in after["gpu"] and "full size" not in after["seed"]


def _check(tmp):
    return cli(
        "report", "--results", str(tmp / "results"), "--report", str(tmp / "FINAL_REPORT.md"), "--check",
        check=False,
    )  # fmt: skip


def test_a_results_file_that_contradicts_a_finding_fails_the_check(copy):
    """The findings are written from the results: change one measurement in a copy and the committed
    sentence no longer holds, so ``report --check`` fails naming its block (and writes nothing)."""
    assert _check(copy).returncode == 0  # the committed report says what the committed results say
    path = copy / "results" / "scaling" / "default-ddp.json"
    rec = json.loads(path.read_text())
    for r in rec["metrics"]["runs"]:
        if r["strategy"] == "ddp":  # DDP as slow as a third of one rank in every repeat
            base = next(
                x for x in rec["metrics"]["runs"] if x["strategy"] == "single" and x["batch"] == r["batch"]
            )
            r["samples_per_s_repeats"] = [x / 3 for x in base["samples_per_s_repeats"]]
    rec["metrics"]["runs"] = derive(rec["metrics"]["runs"])  # the ratios, as the sweep derives them
    path.write_text(json.dumps(rec))
    before = (copy / "FINAL_REPORT.md").read_text()
    proc = _check(copy)
    assert proc.returncode == 1 and "findings" in proc.stderr and "ddp" in proc.stderr
    assert (copy / "FINAL_REPORT.md").read_text() == before  # --check writes nothing
    findings = _blocks(_build(copy, figures=False))["findings"]
    assert "batch 16 off: 0.33 [0.33, 0.33] (slower)" in findings
    assert "(faster)" not in findings.split("Data parallelism")[1].split("\n")[0]


def test_an_ablation_recorded_on_another_encoder_than_notebook_07s_says_so(copy):
    """The ablation ranks recipes on one encoder; where its rows' encoder is not the evaluated
    captioner's, its block says so instead of passing it off as the study's."""
    assert "another" not in _blocks(_build(copy, figures=False))["ablation"]
    path = copy / "results" / "ablation" / "default.json"
    rec = json.loads(path.read_text())
    rec["metrics"]["weights"]["encoder"] = "0" * 64  # pre-trained again since notebook 07
    path.write_text(json.dumps(rec))
    block = _blocks(_build(copy, figures=False))["ablation"]
    assert "Recorded with another encoder than notebook 07's captioner" in block


def test_the_default_decodes_as_the_recorded_ablation_chooses():
    """The report and 07_evaluation.yaml say the default samples at the decoding row of notebook 08 that
    repeats fewest captions among those whose CIDEr-D and fact F1 intervals overlap greedy's (the
    recipe's): checked against the recorded ablation, so a new recording that changes the choice fails
    here until the default's decoding follows it. Notebook 07's recording must have used it."""
    import yaml

    rows = json.loads((ROOT / "results" / "ablation" / "default.json").read_text())["metrics"]["rows"]
    greedy = next(r for r in rows if r["group"] == "recipe")

    def overlaps(row, ci):
        (lo, hi), (glo, ghi) = ci(row), ci(greedy)
        return hi >= glo and ghi >= lo

    def cider(r):
        return r["scores"]["ci95"]["cider"]

    def f1(r):
        return r["scores"]["facts"]["ci95"]["categorical_f1"]

    fine = [
        r for r in rows if r["group"] in ("recipe", "decoding") and overlaps(r, cider) and overlaps(r, f1)
    ]
    chosen = min(fine, key=lambda r: r["scores"]["identical_share"])["search"]
    params = yaml.safe_load((ROOT / "papermill_params" / "default" / "07_evaluation.yaml").read_text())
    assert params.get("top_p", 1.0) == chosen["top_p"] and params.get("beams", 1) == chosen["num_beams"]
    evaluated = json.loads((ROOT / "results" / "evaluation" / "default.json").read_text())["config"]
    assert {k: evaluated[k] for k in chosen} == chosen


def test_the_tower_finding_compares_each_run_with_the_vits_longest_by_intervals():
    """`bench tower`'s sentence: every run against the ViT's longest run, the word chosen by intervals."""
    from lib.report.probe_findings import tower_runs

    def run(tower, steps, finding, zone):
        acc = {
            k: {"accuracy": v, "ci95": [v - 0.05, v + 0.05]}
            for k, v in (("finding", finding), ("zone", zone))
        }
        return {"tower": tower, "steps": steps, "scores": acc}

    runs = [run("vit", 324, 0.50, 0.20), run("vit", 1296, 0.62, 0.40), run("cnn", 324, 0.66, 0.90)]
    text = tower_runs({"tower/default": {"metrics": {"split": "test", "runs": runs}}}, "default")
    assert "ViT image tower reads the finding and the location in 62% [57%, 67%] and 40% [35%, 45%]" in text
    assert "after 1296 steps; the same tower after 324 steps, 50% [45%, 55%] (lower) and 20%" in text
    assert "a small ResNet (timm resnet10t) after 324 steps, 66% [61%, 71%] (no difference) and " in text
    assert "90% [85%, 95%] (higher) (each against the ViT's 1296 steps" in text
    assert tower_runs({"tower/default": {"metrics": {"split": "test", "runs": runs[2:]}}}, "default") is None
