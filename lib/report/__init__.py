"""``python -m lib report``: FINAL_REPORT.md's tables and the figures drawn from results, rebuilt from
the results files alone (no training, no preprocessing).

The report is hand-written narrative with generated blocks between markers::

    <!-- generated:NAME -->
    ...replaced on every run...
    <!-- /generated:NAME -->

Each block is one function of the results files; every table ends with the files it read, the
hardware they were measured on, the workload and the commit. Missing results leave the block
saying which notebook records them. The same results give the same bytes (figures included).
"""

import json
import os
import re
from pathlib import Path

from lib.baseline import classify as baseline_run
from lib.bench import comm_views, projection, scaling_views
from lib.bench import preprocess as bench
from lib.bench.scaling import has_pairs
from lib.data import eda
from lib.evaluation import ablation_views
from lib.evaluation.views import gallery, modality_figure
from lib.report.communication import communication, projected_run
from lib.report.findings import findings
from lib.report.gpu_paths import gpu_checks, padding
from lib.report.parts import (
    ablation,
    baseline,
    ddp,
    encoder,
    evaluation,
    fsdp,
    model_parallel,
    preprocess,
    status,
    tower,
)
from lib.report.seed_study import gpu, seed_study
from lib.results import write_text_atomic

MARKER = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n).*?(<!-- /generated:(?P=name) -->)", re.S)


def load(results_dir: str | os.PathLike) -> dict[str, dict]:
    """Every results file, keyed ``part/run``, with its path relative to the repository."""
    root = Path(results_dir)
    out = {}
    for path in sorted(root.glob("*/*.json")):
        rec = json.loads(path.read_text())
        rec["_path"] = f"{root.name}/{path.parent.name}/{path.name}"
        out[f"{path.parent.name}/{path.stem}"] = rec
    return out


SECTIONS = {
    "status": status,
    "findings": findings,
    "preprocess": preprocess,
    "baseline": baseline,
    "ddp": ddp,
    "fsdp": fsdp,
    "model-parallel": model_parallel,
    "communication": communication,
    "evaluation": evaluation,
    "ablation": ablation,
    "encoder": encoder,
    "tower": tower,
    "seed": seed_study,
    "gpu": gpu,
    "padding": padding,
    "gpu-check": gpu_checks,
}


def figures(res: dict, out: Path, run: str = "default") -> list[Path]:
    """Every figure of the study, from the results files (the evaluation's holds its gallery images)."""
    m = {
        k.replace(f"/{run}", "/RUN", 1): r["metrics"]
        for k, r in res.items()
        if k.split("/", 1)[1].startswith(run)
    }
    paths = []
    if "histograms" in m.get("eda/RUN", {}):  # EDA results older than the histograms cannot be redrawn
        paths += eda.figures(m["eda/RUN"], out)
    if "preprocess/RUN" in m:
        paths += bench.figures(m["preprocess/RUN"], out)
    if "baseline/RUN" in m:
        paths += baseline_run.figures(m["baseline/RUN"], out)
    paired = {k for k, v in m.items() if k.startswith("scaling/") and has_pairs(v)}
    for key, prefix in (("scaling/RUN-ddp", "04_ddp"), ("scaling/RUN-fsdp", "05_fsdp")):
        if key in paired:  # recorded before repeats were paired: the report names it, nothing to draw
            paths += scaling_views.figures(m[key], out, prefix=prefix)
    gpu = projected_run(res)
    if "comm/RUN" in m and gpu:
        paths += comm_views.figure(m["comm/RUN"], projection.project(gpu, comm_views.UNITS_7B), out)
    if "scaling/RUN-model-parallel" in paired:
        paths += scaling_views.pipeline_figure(m["scaling/RUN-model-parallel"], out)
    if "evaluation/RUN" in m:
        paths.append(modality_figure(m["evaluation/RUN"], out / "07_per_modality.png"))
        if "gallery" in m["evaluation/RUN"]:  # evaluations recorded before it held its images have none
            paths.append(gallery(m["evaluation/RUN"]["gallery"], out / "07_gallery.png"))
    if "ablation/RUN" in m:
        paths.append(ablation_views.figure(m["ablation/RUN"], out / "08_ablation.png"))
    return paths


def fill(text: str, res: dict, run: str = "default") -> tuple[str, list[str]]:
    """The report with every known generated block rebuilt; and the blocks' names."""
    names = []

    def block(match: re.Match) -> str:
        name = match["name"]
        if name not in SECTIONS:
            raise ValueError(
                f"FINAL_REPORT.md has a generated block {name!r} that the report does not know "
                f"(known: {', '.join(SECTIONS)})"
            )
        names.append(name)
        return match.group(1) + SECTIONS[name](res, run) + match.group(3)

    return MARKER.sub(block, text), names


def template(run: str) -> str:
    """A report of a run with no hand-written narrative (a user's own data): every block, under a heading."""
    blocks = "".join(
        f"## {name}\n\n<!-- generated:{name} -->\n<!-- /generated:{name} -->\n\n" for name in SECTIONS
    )
    intro = "Generated by `python -m lib report` from this run's results files alone."
    return f"# Study run `{run}`\n\n{intro}\n\n{blocks}"


def build(
    results_dir: str | os.PathLike,
    report: str | os.PathLike,
    figures_dir: str | os.PathLike | None,
    run: str = "default",
    check: bool = False,
) -> dict:
    """Rewrite ``report``'s generated blocks (atomically) and, with ``figures_dir``, the figures, from
    the results of ``run`` (a profile's run_name: default, cluster). ``check``: write nothing, and list
    under ``stale`` the blocks whose text the results no longer give (a sentence a results file now
    contradicts among them)."""
    res = load(results_dir)
    report = Path(report)
    before = report.read_text(encoding="utf-8") if report.exists() else template(run)
    text, names = fill(before, res, run)
    changed = text != before or not report.exists()
    if check:
        old = {m["name"]: m.group(0) for m in MARKER.finditer(before)}
        new = {m["name"]: m.group(0) for m in MARKER.finditer(text)}
        stale = [n for n in new if old.get(n) != new[n]]
        return {
            "results": len(res),
            "blocks": names,
            "report_changed": changed,
            "stale": stale,
            "figures": [],
        }
    if changed:
        write_text_atomic(report, text)
    paths = figures(res, Path(figures_dir), run) if figures_dir else []
    return {
        "results": len(res),
        "blocks": names,
        "report_changed": changed,
        "figures": [str(p) for p in paths],
    }
