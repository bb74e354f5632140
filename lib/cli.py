"""``python -m lib <command>``: one face for notebooks, SLURM scripts and tests.

Each subcommand parses its arguments and calls one library function. Options that are settings come
from the settings' dataclasses (``lib.options``), so a setting and its help are written once. Library
modules are imported inside the handlers: ``--help`` and a mistyped command answer at once instead of
after torch, transformers and open_clip load (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

from lib.bench.cli import INTS, bench_parsers
from lib.config import DATA_ENV
from lib.jobs.cli import evaluation_parsers
from lib.options import add_options, from_args, job_from, job_options
from lib.settings import DATA_HELP, RECIPE


def _generate(a):
    from lib.data.generate import generate

    print(json.dumps(generate(a.out, n=a.n, seed=a.seed, workers=a.workers, force=a.force, large=a.large)))


def _validate(a):
    from lib.data.validate import validate
    from lib.settings import Limits

    report = validate(a.data, a.report, a.index, workers=a.workers, limits=from_args(Limits, a))
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"kept {report['kept']}, skipped {report['skipped_count']} {report['reasons']}, "
        f"converted {sum(report['conversions'].values())} {report['conversions']} -> {a.report}"
    )


def _subset(a):
    from lib.data.subset import subset

    print(json.dumps(subset(a.data, a.n, a.out, seed=a.seed)))


def _preprocess(a):
    from lib.config import load_profile
    from lib.data.preprocess import preprocess
    from lib.settings import PrepConfig

    slurm = None
    if a.backend == "dask-slurm":
        slurm = load_profile(a.profile).notebook_params("02_preprocessing").get("slurm") or {}
    run = {k: getattr(a, k) for k in ("backend", "workers", "chunk_size", "index", "max_file_bytes")}
    print(json.dumps(preprocess(a.data, a.out, cfg=from_args(PrepConfig, a), slurm=slurm, **run)))


def _pretrain_encoder(a):
    from lib.models.encoder import pretrain
    from lib.settings import EncoderPretrain

    print(
        json.dumps(
            {
                k: v
                for k, v in pretrain(
                    a.shards, a.out, from_args(EncoderPretrain, a), workers=a.workers
                ).items()
                if k != "model_cfg"
            }
        )
    )


def _pretrain_lm(a):
    from lib.models.language import pretrain
    from lib.settings import LMPretrain

    print(json.dumps(pretrain(a.index, a.out, from_args(LMPretrain, a))))


def _encode(a):
    from lib.models.feature_cache import encode

    print(
        json.dumps(
            encode(a.shards, a.out, a.encoder, output=a.output, batch_size=a.batch_size, device=a.device)
        )
    )


def _train(a):
    from lib.training.stop import StopFlag

    with StopFlag() as stop:  # before torch loads: SLURM's warning during the imports is kept, not fatal
        from lib.jobs.train import train_job
        from lib.settings import TrainConfig, TrainJob

        train_job(job_from(TrainJob, TrainConfig, a), stop)


def _baseline(a):
    from lib.baseline.classify import summary
    from lib.jobs.baseline import baseline_job
    from lib.settings import BaselineConfig

    cfg = from_args(BaselineConfig, a, n_jobs=INTS(a.n_jobs))
    metrics, path = baseline_job(a.profile, a.params_dir, cfg, run_name=a.run, figures_dir=a.figures)
    print(f"{summary(metrics)}\nwrote {path}")


def _report(a):
    from lib.config import JOBS, load_profile, resolve
    from lib.report import build

    prof = load_profile(
        a.profile, a.params_dir
    )  # with --data: that run's results, never the committed report
    run = prof.notebook_params(JOBS)
    report = a.report or (f"outputs/{prof.run_name}/REPORT.md" if prof.data else "FINAL_REPORT.md")
    figures = None if a.no_figures or a.check else resolve(a.figures or run["figures_dir"])
    out = build(
        resolve(a.results or run["results_dir"]), resolve(report), figures, a.run or prof.run_name, a.check
    )
    if out.get("stale"):
        print(
            f"error: {report} no longer says what the results say in: {', '.join(out['stale'])}",
            file=sys.stderr,
        )
        return 1
    print(
        f"{out['results']} results files -> {len(out['blocks'])} tables in {report} "
        f"({'checked' if a.check else 'changed' if out['report_changed'] else 'unchanged'}), "
        f"{len(out['figures'])} figures"
    )


def _jupyter(a):
    from lib import lab

    for what, where in lab.install(user=a.user).items():
        print(f"{what}: {where}")


def _gpu_check(a):
    from lib.config import resolve
    from lib.jobs.gpu_check import CHECKS, gpu_check

    checks = a.checks.split(",") if a.checks else CHECKS
    outcome = gpu_check(resolve(a.work), resolve(a.results), dry_run=a.dry_run, checks=checks)
    failed = [k for k, v in outcome.items() if v.get("ok") is False]
    print(f"failed: {', '.join(failed)}" if failed else "every check passed")
    return 1 if failed else 0


def _run(a):
    from lib.study import run_notebooks

    overrides = {}
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"-p expects key=value, got {item!r}")
        overrides[key] = yaml.safe_load(value)  # so numbers and lists keep their types
    where = {"params_dir": a.params_dir, "output_dir": a.output_dir, "force": a.force}
    for path in run_notebooks(a.notebooks, profile=a.profile, overrides=overrides, **where):
        print(f"executed {path}")


def _profile_options(p, default: str = "default") -> None:
    p.add_argument("--profile", default=default, help="papermill_params/<profile>/")
    p.add_argument("--params-dir", help="folder of profiles (default: papermill_params/)")
    p.add_argument("--data", help=DATA_HELP)
    p.set_defaults(profile_data=True)


def parser() -> argparse.ArgumentParser:
    from lib import settings as s

    p = argparse.ArgumentParser(prog="python -m lib", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write the embedded PMC-OA-format dataset")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, default=3000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    g.add_argument("--force", action="store_true", help="regenerate even when complete")
    g.add_argument("--large", type=float, default=0.0, help="share of figures drawn at 1-4 megapixels (0-1)")
    g.set_defaults(fn=_generate)

    v = sub.add_parser("validate", help="check every pair; report skips with reasons; write the clean index")
    v.add_argument("--data", required=True)
    v.add_argument("--report", required=True)
    v.add_argument("--index", help="clean index (JSONL of kept pairs) for later stages")
    v.add_argument("--workers", type=int, default=1)
    add_options(v, s.Limits)
    v.set_defaults(fn=_validate)

    ss = sub.add_parser("subset", help="deterministic n-pair development subset")
    ss.add_argument("--data", required=True)
    ss.add_argument("--n", type=int, required=True)
    ss.add_argument("--out", required=True)
    ss.add_argument("--seed", type=int, default=0)
    ss.set_defaults(fn=_subset)

    pp = sub.add_parser("preprocess", help="validated pairs -> fixed-size uint8 image shards (resumable)")
    pp.add_argument("--data", required=True)
    pp.add_argument("--out", required=True)
    pp.add_argument("--index", help="clean index from validate (default: validate into --out first)")
    pp.add_argument("--backend", choices=s.BACKENDS, default="sequential")
    pp.add_argument("--workers", type=int, default=1)
    pp.add_argument(
        "--chunk-size", type=int, help="images a chunk (default: 4+ chunks a worker, at most 256)"
    )
    add_options(pp, s.PrepConfig)
    add_options(pp, s.Limits, skip=("max_pixels", "max_caption_chars"))
    pp.add_argument("--profile", default="cluster", help="where dask-slurm reads its SLURMCluster parameters")
    pp.set_defaults(fn=_preprocess)

    bench_parsers(
        sub.add_parser("bench", help="benchmarks that write results files").add_subparsers(
            dest="bench", required=True
        ),
        _profile_options,
    )

    pe = sub.add_parser("pretrain-encoder", help="contrastively pre-train the default's tiny CLIP (cached)")
    pe.add_argument("--shards", required=True, help="a preprocess output folder")
    pe.add_argument("--out", required=True)
    pe.add_argument("--workers", type=int, default=os.cpu_count(), help="processes drawing --generated pairs")
    add_options(pe, s.EncoderPretrain)
    pe.set_defaults(fn=_pretrain_encoder)

    pl = sub.add_parser(
        "pretrain-lm", help="train the default's tokenizer and tiny Mistral on captions (cached)"
    )
    pl.add_argument("--index", required=True, help="index.jsonl with a split field (preprocess output)")
    pl.add_argument("--out", required=True)
    add_options(pl, s.LMPretrain)
    pl.set_defaults(fn=_pretrain_lm)

    e = sub.add_parser("encode", help="frozen encoder over every shard -> fp16 feature cache (resumable)")
    e.add_argument("--shards", required=True, help="a preprocess output folder")
    e.add_argument("--out", required=True)
    e.add_argument("--encoder", required=True, help="hf-hub:org/name or local-dir:/path (open_clip layout)")
    e.add_argument("--output", choices=("pooled", "tokens"), default="pooled")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="cpu")
    e.set_defaults(fn=_encode)

    t = sub.add_parser(
        "train", help="train the captioner (builds missing artefacts), then caption the test split"
    )
    job_options(t, s.TrainJob, s.TrainConfig, RECIPE)
    t.set_defaults(fn=_train)

    evaluation_parsers(sub, _profile_options)

    bl = sub.add_parser(
        "baseline",
        help="modality classifiers: hand-crafted features + XGBoost (joblib, n_jobs "
        "scaling), CLIP zero-shot, linear probe",
    )
    _profile_options(bl)
    bl.add_argument(
        "--n-jobs", default="1,2", help="joblib workers / XGBoost threads to time (must include 1)"
    )
    add_options(bl, s.BaselineConfig)
    bl.add_argument("--figures", help="folder for the figures (default: none)")
    bl.add_argument("--name", dest="run", help="results file name (default: the profile)")
    bl.set_defaults(fn=_baseline)

    rp = sub.add_parser(
        "report", help="rebuild FINAL_REPORT.md's tables and the figures from results files alone"
    )
    _profile_options(rp)
    rp.add_argument("--results", help="results folder (default: the profile's)")
    rp.add_argument("--report", help="FINAL_REPORT.md, or outputs/<run>/REPORT.md for other data")
    rp.add_argument("--figures", help="figures folder (default: the profile's)")
    rp.add_argument("--no-figures", action="store_true", help="tables only")
    rp.add_argument("--run", help="whose results: a run name (default: the profile's)")
    rp.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 naming the blocks the results contradict"
    )
    rp.set_defaults(fn=_report)

    jp = sub.add_parser(
        "jupyter",
        help="register the study's kernel (pmcoa) and open notebooks/*.py as notebooks in JupyterLab",
    )
    jp.add_argument(
        "--user",
        action="store_true",
        help="into ~/.jupyter and ~/.local (a JupyterLab of another environment, e.g. Open OnDemand's) "
        "instead of this environment",
    )
    jp.set_defaults(fn=_jupyter)

    gc = sub.add_parser(
        "gpu-check",
        help="every GPU path in one prepared run (make gpu): full-size training from features and pixels, "
        "DDP/FSDP2/QLoRA with checkpoint-resume, captions/s, GPU JPEG decoding, the full-size step's "
        "speed-ups; results/gpu/",
    )
    gc.add_argument("--dry-run", action="store_true", help="the same on CPU at tiny sizes, gloo, 2 ranks")
    gc.add_argument("--work", default="outputs/gpu-check", help="stand-in models, data and runs")
    gc.add_argument("--results", default="results", help="writes <this>/gpu/<device>-<check>.json")
    gc.add_argument("--checks", help="comma-separated subset of the checks (default: all)")
    gc.set_defaults(fn=_gpu_check)

    r = sub.add_parser("run", help="execute numbered notebooks with papermill")
    r.add_argument("notebooks", nargs="*", help="e.g. 01_eda or 01 (default: all)")
    _profile_options(r)
    r.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a notebook parameter",
    )
    r.add_argument("--output-dir", help="executed notebooks go to <this>/<run>/ (default: outputs/)")
    r.add_argument("--force", action="store_true", help="run every chosen notebook, also those up to date")
    r.set_defaults(fn=_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "profile_data", False) and args.data:  # for this command and every job it starts
        os.environ[DATA_ENV] = os.path.abspath(args.data)
    from lib.data.clusters import WorkerDied
    from lib.models import ModelUnavailable
    from lib.study import NotebookFailed

    expected = (FileNotFoundError, ValueError, NotebookFailed, WorkerDied, ModelUnavailable)
    try:
        code = args.fn(args)  # a handler may return an exit status (report --check)
    except expected as e:  # a clear message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return code or 0
