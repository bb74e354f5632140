"""``python -m lib <command>``: one face for notebooks, SLURM scripts and tests.

Each subcommand parses its arguments and calls one library function; imports
happen inside the handlers so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml


def _generate(a):
    from lib.data.generate import generate

    manifest = generate(a.out, n=a.n, seed=a.seed, workers=a.workers, force=a.force)
    print(json.dumps(manifest))


def _validate(a):
    from lib.data.validate import Limits, validate

    report = validate(a.data, a.report, a.index, workers=a.workers,
                      limits=Limits(max_pixels=a.max_pixels, max_caption_chars=a.max_caption_chars,
                                    max_file_bytes=a.max_file_bytes))
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"kept {report['kept']}, skipped {report['skipped_count']} {report['reasons']}, "
          f"converted {sum(report['conversions'].values())} {report['conversions']} -> {a.report}")


def _subset(a):
    from lib.data.subset import subset

    print(json.dumps(subset(a.data, a.n, a.out, seed=a.seed)))


def _preprocess(a):
    from lib.config import load_profile
    from lib.data.preprocess import PrepConfig, preprocess

    slurm = None
    if a.backend == "dask-slurm":
        slurm = load_profile(a.profile).notebook_params("02_preprocessing").get("slurm") or {}
    cfg = PrepConfig(size=a.size, fit=a.fit, clahe=a.clahe, gamma=a.gamma, denoise=a.denoise)
    manifest = preprocess(a.data, a.out, backend=a.backend, workers=a.workers, chunk_size=a.chunk_size, cfg=cfg,
                          index=a.index, slurm=slurm, max_file_bytes=a.max_file_bytes)
    print(json.dumps(manifest))


def _bench_preprocess(a):
    from lib.bench import preprocess as bench
    from lib.data.preprocess import PrepConfig
    from lib.results import write_results

    metrics, config = bench.run(a.data, a.index, backends=a.backends, max_workers=a.max_workers,
                                chunk_size=a.chunk_size, cfg=PrepConfig(size=a.size), repeats=a.repeats,
                                limit=a.limit, scratch=a.scratch)
    path = write_results(a.results, "preprocess", a.run, metrics, config, seed=None)
    for row in bench.table(metrics):
        print(row)
    if a.figures:
        bench.figures(metrics, a.figures)
    print(f"wrote {path}")


def _profile_params(name: str, notebook: str, params_dir: str | None = None) -> tuple:
    from lib.config import load_profile

    profile = load_profile(name, params_dir)
    profile.apply_env()  # HF_HUB_OFFLINE=1 on the default: a hub call fails at once instead of retrying
    return profile, profile.notebook_params(notebook)


def _pretrain_encoder(a):
    from lib.models.encoder import PretrainConfig, pretrain

    cfg = PretrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    print(json.dumps({k: v for k, v in pretrain(a.shards, a.out, cfg).items() if k != "model_cfg"}))


def _pretrain_lm(a):
    from lib.models.language import LMPretrain, pretrain

    print(json.dumps(pretrain(a.index, a.out, LMPretrain(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                                                          seed=a.seed))))


def _encode(a):
    from lib.models.encode import encode

    print(json.dumps(encode(a.shards, a.out, a.encoder, output=a.output, batch_size=a.batch_size,
                            device=a.device)))


def _train(a):
    from dataclasses import fields

    from lib.captioner import TrainJob, train_job

    train_job(TrainJob(**{f.name: getattr(a, f.name) for f in fields(TrainJob)}))


def _evaluate(a):
    from lib.evaluation import run

    cfg = run.EvalConfig(split=a.split, num_beams=a.beams, resamples=a.resamples, seed=a.seed,
                         throughput_images=a.throughput_images)
    rec, path = run.job(a.checkpoint, a.out, a.profile, a.params_dir, cfg, run_name=a.run, figures_dir=a.figures,
                        device=a.device)
    for name in ("model", "nearest_neighbour", "most_frequent"):
        m = rec[name]
        print(f"{name:<18} BLEU-4 {m['bleu4']:.3f}  METEOR {m['meteor']:.3f}  ROUGE-L {m['rouge_l']:.3f}  "
              f"CIDEr-D {m['cider']:.3f}")
    m, t = rec["model"], rec["throughput"]
    print(f"identical captions {m['identical_share']:.1%} (references {rec['references']['identical_share']:.1%}), "
          f"vocabulary {m['vocab']}/{m['reference_vocab']}, generic {m['generic_share']:.1%}; "
          f"batched KV-cache generation {t['speedup']:.1f}x one-at-a-time without cache")
    print(f"wrote {path}")


def _bench_cache(a):
    from lib import captioner
    from lib.bench import cache
    from lib.config import resolve
    from lib.results import write_results
    from lib.training.loop import TrainConfig

    profile, params = _profile_params(a.profile, "train", a.params_dir)
    art, spec = captioner.prepare(profile, params, pretrain_cfg=params.get("pretrain"))
    metrics, config = cache.run(art, spec, TrainConfig(**params.get("train", {})), steps=a.steps, device=a.device)
    path = write_results(resolve(params["results_dir"]), "feature_cache", a.run or a.profile, metrics,
                         {**config, "profile": a.profile}, params.get("seed"))
    print(f"cached features {metrics['features']['samples_per_s']:.1f} samples/s, pixels "
          f"{metrics['pixels']['samples_per_s']:.1f} samples/s ({metrics['speedup']:.1f}x); wrote {path}")


def _bench_scaling(a):
    import tempfile

    from lib.bench import scaling
    from lib.config import resolve

    profile, params = _profile_params(a.profile, "train", a.params_dir)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    if a.bench == "pipeline":
        configs = scaling.pipeline_grid(ints(a.worlds), ints(a.batches), a.schedules.split(","), ints(a.microbatches),
                                        a.threads, a.amps.split(","), layers=not a.no_layers, ddp=not a.no_ddp)
    else:
        configs = scaling.grid(a.strategies.split(","), ints(a.worlds), ints(a.batches), a.threads,
                               a.amps.split(","), a.compare_threads or None)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = scaling.run(configs, a.scratch or tmp, a.profile, a.params_dir, a.steps,
                              profile_comm=a.profile_comm, repeats=a.repeats)
    name = a.run or (a.profile + ("-model-parallel" if a.bench == "pipeline" else ""))
    path = scaling.record(metrics, configs, resolve(params["results_dir"]), name, a.profile, params.get("seed"))
    for row in (scaling.pipeline_table if a.bench == "pipeline" else scaling.table)(metrics):
        print(row)
    if a.figures:
        (scaling.pipeline_figure if a.bench == "pipeline" else scaling.figures)(metrics, a.figures)
    print(f"wrote {path}")


def _bench_lm(a):
    from lib.bench import lm
    from lib.config import resolve
    from lib.results import write_results

    cfg = lm.LMBench(size=a.size, batch=a.batch_size, caption_tokens=a.caption_tokens, visual_tokens=a.visual_tokens,
                     steps=a.steps, amp=a.amp, grad_ckpt=a.grad_ckpt, quant=a.quant)
    metrics, config = lm.run(cfg, a.device)
    path = write_results(resolve(a.results), "lm_throughput", a.run or f"{a.size}-{a.device.split(':')[0]}", metrics,
                         config, cfg.seed)
    mfu = f", MFU {metrics['mfu']:.1%}" if metrics["mfu"] is not None else ""
    print(f"{metrics['tokens_per_s']:.0f} tokens/s, {metrics['samples_per_s']:.1f} samples/s{mfu}; the seed's "
          f"47.5K x 3-epoch run: {metrics['seed_run_projected_hours']:.2f} h\nwrote {path}")


def _baseline(a):
    from lib.baseline import run

    cfg = run.BaselineConfig(n_jobs=tuple(int(x) for x in a.n_jobs.split(",")), rounds=a.rounds,
                             test_split=a.split, seed=a.seed)
    metrics, path = run.job(a.profile, a.params_dir, cfg, run_name=a.run, figures_dir=a.figures)
    for row in run.table(metrics):
        print(f"{row['classifier']:<26} accuracy {row['accuracy']:.3f}  macro-F1 {row['macro_f1']:.3f}  "
              f"train {row['train_s']:.2f} s")
    for key in ("features", "xgboost"):
        print(key, ", ".join(f"n_jobs={r['n_jobs']}: {r['speedup']:.2f}x" for r in metrics["scaling"][key]))
    print(f"wrote {path}")


def _report(a):
    from lib.config import resolve
    from lib.report import build

    out = build(resolve(a.results), resolve(a.report), None if a.no_figures else resolve(a.figures), a.run)
    print(f"{out['results']} results files -> {len(out['blocks'])} tables in {a.report} "
          f"({'changed' if out['report_changed'] else 'unchanged'}), {len(out['figures'])} figures")


def _sweep_options(p, default_name: str) -> None:
    """What every torchrun sweep (bench scaling, bench pipeline) takes besides its grid."""
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--amps", default="off", help="precisions, e.g. off,bf16")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=1, help="runs of each job, in turn; the median is reported")
    p.add_argument("--profile-comm", type=int, default=5, help="steps of each job timed by the profiler")
    p.add_argument("--scratch", help="where the jobs write (default: a temporary folder)")
    p.add_argument("--figures", help="folder for the figure (default: none)")
    p.add_argument("--name", dest="run", help=f"results file name (default: {default_name})")
    p.set_defaults(fn=_bench_scaling)


def _jupyter(a):
    from lib import lab

    for what, where in lab.install(user=a.user).items():
        print(f"{what}: {where}")


def _run(a):
    from lib.study import run

    overrides = {}
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"-p expects key=value, got {item!r}")
        overrides[key] = yaml.safe_load(value)  # so numbers and lists keep their types
    for path in run(a.notebooks, profile=a.profile, overrides=overrides, params_dir=a.params_dir,
                    output_dir=a.output_dir, force=a.force):
        print(f"executed {path}")


def parser() -> argparse.ArgumentParser:
    from lib.data.files import MAX_FILE_BYTES
    from lib.data.images import MAX_PIXELS

    p = argparse.ArgumentParser(prog="python -m lib", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write the embedded PMC-OA-format dataset")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, default=3000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    g.add_argument("--force", action="store_true", help="regenerate even when complete")
    g.set_defaults(fn=_generate)

    v = sub.add_parser("validate", help="check every pair; report skips with reasons; write the clean index")
    v.add_argument("--data", required=True)
    v.add_argument("--report", required=True)
    v.add_argument("--index", help="clean index (JSONL of kept pairs) for later stages")
    v.add_argument("--workers", type=int, default=1)
    v.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
    v.add_argument("--max-caption-chars", type=int, default=10_000)
    v.add_argument("--max-file-bytes", type=int, default=MAX_FILE_BYTES, help="larger image files are refused unread")
    v.set_defaults(fn=_validate)

    s = sub.add_parser("subset", help="deterministic n-pair development subset")
    s.add_argument("--data", required=True)
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=_subset)

    from lib.data.preprocess import BACKENDS

    pp = sub.add_parser("preprocess", help="validated pairs -> fixed-size uint8 image shards (resumable)")
    pp.add_argument("--data", required=True)
    pp.add_argument("--out", required=True)
    pp.add_argument("--index", help="clean index from validate (default: validate into --out first)")
    pp.add_argument("--backend", choices=BACKENDS, default="sequential")
    pp.add_argument("--workers", type=int, default=1)
    pp.add_argument("--chunk-size", type=int, default=256)
    pp.add_argument("--size", type=int, default=224)
    pp.add_argument("--fit", choices=("pad", "crop"), default="pad")
    pp.add_argument("--clahe", action="store_true", help="CLAHE on the L channel of LAB")
    pp.add_argument("--gamma", type=float, default=1.0)
    pp.add_argument("--denoise", type=int, default=0, help="median filter aperture (odd), 0 = off")
    pp.add_argument("--max-file-bytes", type=int, default=MAX_FILE_BYTES, help="larger image files are refused unread")
    pp.add_argument("--profile", default="cluster", help="where dask-slurm reads its SLURMCluster parameters")
    pp.set_defaults(fn=_preprocess)

    b = sub.add_parser("bench", help="benchmarks that write results files").add_subparsers(dest="bench", required=True)
    bp = b.add_parser("preprocess", help="img/s per backend x workers, bare OpenCV floor, per-image cost")
    bp.add_argument("--data", required=True)
    bp.add_argument("--index", help="clean index (default: validate first, untimed)")
    bp.add_argument("--backends", nargs="+", choices=BACKENDS, default=["sequential", "dask-processes", "dask-threads"])
    bp.add_argument("--max-workers", type=int, default=2, help="each Dask backend runs with 1..N workers")
    bp.add_argument("--chunk-size", type=int, default=256)
    bp.add_argument("--size", type=int, default=224)
    bp.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is reported")
    bp.add_argument("--limit", type=int, help="benchmark the first N pairs only")
    bp.add_argument("--scratch", default="outputs/bench",
                    help="folder for the runs' temporary shards, on the file system real output would use")
    bp.add_argument("--results", default="results", help="writes <this>/preprocess/<run>.json")
    bp.add_argument("--name", dest="run", default="default", help="results file name")
    bp.add_argument("--figures", help="also draw the scaling and cost figures into this folder")
    bp.set_defaults(fn=_bench_preprocess)
    bc = b.add_parser("cache", help="training steps on cached features vs re-encoding pixels every step")
    bc.add_argument("--profile", default="default")
    bc.add_argument("--params-dir", help="folder of profiles (default: papermill_params/)")
    bc.add_argument("--steps", type=int, default=20)
    bc.add_argument("--device", default="cpu")
    bc.add_argument("--name", dest="run", help="results file name (default: the profile)")
    bc.set_defaults(fn=_bench_cache)

    bs = b.add_parser("scaling", help="the training job at 1..N ranks through torchrun: speed-up, memory, R")
    bs.add_argument("--profile", default="default")
    bs.add_argument("--params-dir", help="folder of profiles (default: papermill_params/)")
    bs.add_argument("--strategies", default="ddp,fsdp")
    bs.add_argument("--worlds", default="2", help="rank counts, e.g. 2,4")
    bs.add_argument("--batches", default="16", help="per-rank batch sizes, e.g. 8,16,32")
    bs.add_argument("--compare-threads", type=int, default=2, help="also one process with this many threads (0: no)")
    _sweep_options(bs, "the profile")

    bl = b.add_parser("lm", help="one-device training throughput of the full-size architecture, random weights: "
                                 "tokens/s, MFU, projected hours for the seed's run")
    bl.add_argument("--size", choices=("biomistral-7b", "tiny"), default="biomistral-7b")
    bl.add_argument("--device", default="cuda")
    bl.add_argument("--batch-size", type=int, default=16)
    bl.add_argument("--caption-tokens", type=int, default=64)
    bl.add_argument("--visual-tokens", type=int, default=4)
    bl.add_argument("--steps", type=int, default=20)
    bl.add_argument("--amp", choices=("off", "bf16", "fp16"), default="bf16")
    bl.add_argument("--grad-ckpt", action="store_true")
    bl.add_argument("--quant", choices=("8bit", "4bit"), help="bitsandbytes base weights under LoRA (CUDA only)")
    bl.add_argument("--results", default="results", help="writes <this>/lm_throughput/<name>.json")
    bl.add_argument("--name", dest="run", help="results file name (default: <size>-<device type>)")
    bl.set_defaults(fn=_bench_lm)

    bm = b.add_parser("pipeline", help="model parallelism at one batch: pipeline schedules x micro-batches, "
                                       "layer split, DDP, against one process")
    bm.add_argument("--profile", default="default")
    bm.add_argument("--params-dir", help="folder of profiles (default: papermill_params/)")
    bm.add_argument("--worlds", default="2", help="pipeline stages (ranks), e.g. 2,4")
    bm.add_argument("--batches", default="32", help="whole batch per step, e.g. 32,64")
    bm.add_argument("--schedules", default="gpipe,1f1b")
    bm.add_argument("--microbatches", default="1,2,4,8")
    bm.add_argument("--no-layers", action="store_true", help="leave out the one-process layer split")
    bm.add_argument("--no-ddp", action="store_true", help="leave out DDP at the same global batch")
    _sweep_options(bm, "<profile>-model-parallel")

    pe = sub.add_parser("pretrain-encoder", help="contrastively pre-train the default's tiny CLIP (cached)")
    pe.add_argument("--shards", required=True, help="a preprocess output folder")
    pe.add_argument("--out", required=True)
    pe.add_argument("--epochs", type=int, default=12)
    pe.add_argument("--batch-size", type=int, default=128)
    pe.add_argument("--lr", type=float, default=1e-3)
    pe.add_argument("--seed", type=int, default=0)
    pe.set_defaults(fn=_pretrain_encoder)

    pl = sub.add_parser("pretrain-lm", help="train the default's tokenizer and tiny Mistral on captions (cached)")
    pl.add_argument("--index", required=True, help="index.jsonl with a split field (preprocess output)")
    pl.add_argument("--out", required=True)
    pl.add_argument("--epochs", type=int, default=6)
    pl.add_argument("--batch-size", type=int, default=32)
    pl.add_argument("--lr", type=float, default=2e-3)
    pl.add_argument("--seed", type=int, default=0)
    pl.set_defaults(fn=_pretrain_lm)

    e = sub.add_parser("encode", help="frozen encoder over every shard -> fp16 feature cache (resumable)")
    e.add_argument("--shards", required=True, help="a preprocess output folder")
    e.add_argument("--out", required=True)
    e.add_argument("--encoder", required=True, help="hf-hub:org/name or local-dir:/path (open_clip layout)")
    e.add_argument("--output", choices=("pooled", "tokens"), default="pooled")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default="cpu")
    e.set_defaults(fn=_encode)

    t = sub.add_parser("train", help="train the captioner (builds missing artefacts), then caption the test split")
    t.add_argument("--profile", default="default")
    t.add_argument("--params-dir", help="folder of profiles (default: papermill_params/)")
    t.add_argument("--strategy", choices=("single", "ddp", "fsdp", "pipeline", "layers"), default="single",
                   help="ddp / fsdp / pipeline under torchrun: torchrun --nproc_per_node=N -m lib train --strategy ddp ...; "
                        "layers: one process, LM blocks split over --devices")
    t.add_argument("--devices", help="layers: e.g. cuda:0,cuda:1 (default: every visible GPU; cpu,cpu without one)")
    t.add_argument("--schedule", choices=("gpipe", "1f1b"), default="1f1b", help="pipeline: the micro-batch schedule")
    t.add_argument("--microbatches", type=int, default=4,
                   help="pipeline: micro-batches per step (they are its gradient accumulation)")
    t.add_argument("--out", required=True)
    t.add_argument("--resume", help="a run folder (its latest checkpoint) or a checkpoint folder")
    t.add_argument("--max-steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--grad-accum", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"))
    t.add_argument("--align-steps", type=int, help="stage-1 steps (projector only); 0 skips stage 1")
    t.add_argument("--ckpt-every", type=int)
    t.add_argument("--source", choices=("features", "pixels"), default="features",
                   help="cached features, or pixels through the frozen encoder every step")
    t.add_argument("--device", default="auto", help="auto (cuda:LOCAL_RANK when there is a GPU, else cpu), cpu, cuda")
    t.add_argument("--threads", type=int, help="torch threads per process (torchrun sets 1 per rank)")
    t.add_argument("--profile-comm", type=int, metavar="STEPS",
                   help="time communication per rank with the PyTorch profiler over this many steps (left out of throughput)")
    t.add_argument("--cpu-offload", action="store_true", help="fsdp: keep parameters and optimizer state on CPU")
    t.add_argument("--no-eval", action="store_true", help="skip captioning the test split")
    t.add_argument("--name", dest="run", help="results file name (default: <profile>-<strategy>[-<ranks>])")
    t.add_argument("--results-dir", help="where results/training/<name>.json goes (default: the profile's)")
    t.set_defaults(fn=_train)

    ev = sub.add_parser("evaluate", help="caption a split with a trained checkpoint; pycocoevalcap scores with "
                        "intervals, reference points, diversity, per-modality, generation throughput")
    ev.add_argument("--checkpoint", required=True, help="a train run's out folder, its ckpt/, or a step-N folder")
    ev.add_argument("--out", required=True, help="folder for eval.json and captions.jsonl")
    ev.add_argument("--split", default="test")
    ev.add_argument("--profile", default="default")
    ev.add_argument("--params-dir")
    ev.add_argument("--beams", type=int, default=1, help="1: greedy; more: beam search")
    ev.add_argument("--resamples", type=int, default=200, help="bootstrap resamples of the 95%% intervals")
    ev.add_argument("--throughput-images", type=int, default=32, help="images timed one at a time without cache")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--figures", help="folder for the gallery figure (default: none)")
    ev.add_argument("--name", dest="run", help="results file name (default: the profile)")
    ev.set_defaults(fn=_evaluate)

    bl = sub.add_parser("baseline", help="modality classifiers: hand-crafted features + XGBoost (joblib, n_jobs "
                        "scaling), CLIP zero-shot, linear probe")
    bl.add_argument("--profile", default="default")
    bl.add_argument("--params-dir")
    bl.add_argument("--n-jobs", default="1,2", help="joblib workers / XGBoost threads to time (must include 1)")
    bl.add_argument("--rounds", type=int, default=200, help="XGBoost boosting rounds")
    bl.add_argument("--split", default="test", help="the split to score on (train on train)")
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument("--figures", help="folder for the figures (default: none)")
    bl.add_argument("--name", dest="run", help="results file name (default: the profile)")
    bl.set_defaults(fn=_baseline)

    rp = sub.add_parser("report", help="rebuild FINAL_REPORT.md's tables and the figures from results files alone")
    rp.add_argument("--results", default="results")
    rp.add_argument("--report", default="FINAL_REPORT.md")
    rp.add_argument("--figures", default="figures")
    rp.add_argument("--no-figures", action="store_true", help="tables only")
    rp.add_argument("--run", default="default", help="whose results: a profile's run_name (default, cluster)")
    rp.set_defaults(fn=_report)

    jp = sub.add_parser("jupyter", help="register the study's kernel (pmcoa) and open notebooks/*.py as notebooks in JupyterLab")
    jp.add_argument("--user", action="store_true",
                    help="into ~/.jupyter and ~/.local (a JupyterLab of another environment, e.g. Open OnDemand's) "
                         "instead of this environment")
    jp.set_defaults(fn=_jupyter)

    r = sub.add_parser("run", help="execute numbered notebooks with papermill")
    r.add_argument("notebooks", nargs="*", help="e.g. 01_eda or 01 (default: all)")
    r.add_argument("--profile", default="default")
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a notebook parameter")
    r.add_argument("--params-dir", help="folder of profiles (default: papermill_params/)")
    r.add_argument("--output-dir", help="executed notebooks go to <this>/<profile>/ (default: outputs/)")
    r.add_argument("--force", action="store_true", help="run every chosen notebook, also those up to date")
    r.set_defaults(fn=_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from lib.data.preprocess import WorkerDied
    from lib.models import ModelUnavailable
    from lib.study import NotebookFailed

    try:
        args.fn(args)
    except (FileNotFoundError, ValueError, NotebookFailed, WorkerDied, ModelUnavailable) as e:  # expected failures: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
