"""``python -m lib bench ...``: the benchmark commands, each measuring one thing and writing a results file.

Part of the command line (``lib.cli``): library modules are imported inside the handlers, so
``--help`` stays instant.
"""

from __future__ import annotations

from lib.options import add_options, from_args
from lib.settings import BACKENDS, COLLECTIVES, COMM_SIZES, PADDINGS, SCHEDULES, LMBench

INTS = lambda s: tuple(int(x) for x in s.split(",") if x)  # noqa: E731 - "1,2,4" -> (1, 2, 4)


def _bench_preprocess(a):
    from lib.bench import preprocess as bench
    from lib.config import JOBS, load_profile
    from lib.results import write_results
    from lib.settings import PrepConfig

    metrics, config = bench.measure_backends(
        a.data,
        a.index,
        backends=a.backends,
        max_workers=a.max_workers,
        chunk_size=a.chunk_size,
        cfg=PrepConfig(size=a.size),
        repeats=a.repeats,
        limit=a.limit,
        formats=tuple(a.formats) if a.formats else None,
        scratch=a.scratch,
    )
    # the default's data records the committed study's file; other data a file of its own run
    run = load_profile("default").with_data(a.data).notebook_params(JOBS)
    path = write_results(
        a.results or run["results_dir"], "preprocess", a.run or run["run_name"], metrics, config, None
    )
    for row in bench.table(metrics):
        print(row)
    if a.figures:
        bench.figures(metrics, a.figures)
    print(f"wrote {path}")


def _bench_cache(a):
    from lib.bench.cache import measure_cache
    from lib.jobs.artefacts import for_profile
    from lib.results import write_results

    art = for_profile(a.profile, a.params_dir)
    metrics, config = measure_cache(art, steps=a.steps, device=a.device)
    path = write_results(
        art.settings.results_dir,
        "feature_cache",
        a.run or art.settings.profile.run_name,
        metrics,
        {**config, "profile": a.profile},
        art.settings.params.get("seed"),
    )
    print(
        f"cached features {metrics['features']['samples_per_s']:.1f} samples/s, pixels "
        f"{metrics['pixels']['samples_per_s']:.1f} samples/s ({metrics['speedup']:.1f}x); wrote {path}"
    )


def _bench_scaling(a):
    import tempfile

    from lib.bench import scaling, scaling_views
    from lib.jobs.artefacts import settings

    s = settings(a.profile, a.params_dir)
    if a.bench == "pipeline":
        configs = scaling.pipeline_grid(
            INTS(a.worlds),
            INTS(a.batches),
            a.schedules.split(","),
            INTS(a.microbatches),
            a.threads,
            a.amps.split(","),
            layers=not a.no_layers,
            ddp=not a.no_ddp,
        )
    else:
        configs = scaling.grid(
            a.strategies.split(","),
            INTS(a.worlds),
            INTS(a.batches),
            a.threads,
            a.amps.split(","),
            a.compare_threads or None,
        )
    with tempfile.TemporaryDirectory() as tmp:
        metrics = scaling.sweep(
            configs,
            a.scratch or tmp,
            a.profile,
            a.params_dir,
            a.steps,
            profile_comm=a.profile_comm,
            repeats=a.repeats,
        )
    name = a.run or (s.profile.run_name + ("-model-parallel" if a.bench == "pipeline" else ""))
    path = scaling.record(metrics, configs, s.results_dir, name, a.profile, s.params.get("seed"))
    for row in (scaling_views.pipeline_table if a.bench == "pipeline" else scaling_views.table)(metrics):
        print(row)
    if a.figures:
        (scaling_views.pipeline_figure if a.bench == "pipeline" else scaling_views.figures)(
            metrics, a.figures
        )
    print(f"wrote {path}")


def _bench_comm(a):
    from lib.bench import comm, comm_model

    ops = a.ops.split(",")
    metrics = comm.measure_collectives(INTS(a.worlds), INTS(a.sizes), ops, a.repeats, a.device, a.threads)
    path = comm.record(metrics, a.results, a.run, a.threads)
    for row in comm_model.fit_table(metrics):
        print(row)
    print(f"wrote {path}")


def _bench_comm_rank(a):
    from lib.bench import comm

    comm.write_rank_times(
        a.out, sizes=INTS(a.sizes), ops=a.ops.split(","), repeats=a.repeats, device=a.device
    )


def _bench_lm(a):
    from lib.bench.lm import measure_lm, summary
    from lib.config import resolve
    from lib.results import write_results
    from lib.settings import LMBench

    cfg = from_args(LMBench, a)
    metrics, config = measure_lm(cfg, a.device)
    path = write_results(
        resolve(a.results),
        "lm_throughput",
        a.run or f"{a.size}-{a.device.split(':')[0]}",
        metrics,
        config,
        cfg.seed,
    )
    print(f"{summary(metrics)}\nwrote {path}")


def _bench_padding(a):
    from lib.bench.padding import compare_padding, summary
    from lib.config import resolve
    from lib.results import write_results
    from lib.settings import LMBench

    cfg = from_args(LMBench, a)
    metrics, config = compare_padding(cfg, a.device, tuple(a.modes.split(",")), a.repeats)
    path = write_results(
        resolve(a.results),
        "padding",
        a.run or f"{a.size}-{a.device.split(':')[0]}",
        metrics,
        config,
        cfg.seed,
    )
    print(f"{summary(metrics)}\nwrote {path}")


def _bench_encoder(a):
    from lib.bench import encoder as be

    metrics, config = be.bench_encoder(
        be.parse_runs(a.runs), a.profile, a.params_dir, a.scratch, a.split, a.resamples, a.seed
    )
    path = be.record(metrics, config, a.results, a.run or a.profile, a.seed)
    print("\n".join(str(row) for row in be.table(metrics)) + f"\nwrote {path}")


def _bench_tower(a):
    from lib.bench import tower as bt

    metrics, config = bt.bench_tower(
        bt.parse_runs(a.runs), a.profile, a.params_dir, a.scratch, a.generated, a.split, a.resamples, a.seed
    )
    path = bt.record(metrics, config, a.results, a.run or a.profile, a.seed)
    print("\n".join(str(row) for row in bt.table(metrics)) + f"\nwrote {path}")


def _scored_options(p, part: str, scratch: str, seed: str) -> None:
    """What bench encoder and bench tower take besides their runs: they score scene facts on a split."""
    p.add_argument("--split", default="test", help="the split the scores are on")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples of the intervals")
    p.add_argument("--seed", type=int, default=0, help=seed)
    p.add_argument("--scratch", help=f"{scratch} (default: <work_dir>/bench/{part})")
    p.add_argument("--results", default="results", help=f"writes <this>/{part}/<name>.json")
    p.add_argument("--name", dest="run", help="results file name (default: the profile)")


def _sweep_options(p, profile_options, default_name: str) -> None:
    """What every torchrun sweep (bench scaling, bench pipeline) takes besides its grid."""
    profile_options(p)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--amps", default="off", help="precisions, e.g. off,bf16")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="runs of each job, in turn (A B A B): ratios per pair, with an interval",
    )
    p.add_argument("--profile-comm", type=int, default=5, help="steps of each job timed by the profiler")
    p.add_argument("--scratch", help="where the jobs write (default: a temporary folder)")
    p.add_argument("--figures", help="folder for the figure (default: none)")
    p.add_argument("--name", dest="run", help=f"results file name (default: {default_name})")
    p.set_defaults(fn=_bench_scaling)


def _comm_options(p) -> None:
    p.add_argument("--sizes", default=",".join(map(str, COMM_SIZES)), help="message sizes in bytes")
    p.add_argument("--ops", default=",".join(COLLECTIVES), help="collectives to time")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per size, after 2 warm-up calls")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL)")


def bench_parsers(b, profile_options) -> None:
    """The `bench` subcommands, under ``b`` (the `bench` parser's subparsers)."""
    bp = b.add_parser("preprocess", help="img/s per backend x workers, bare OpenCV floor, per-image cost")
    bp.add_argument("--data", required=True)
    bp.add_argument("--index", help="clean index (default: validate first, untimed)")
    bp.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=["sequential", "dask-processes", "dask-threads"]
    )
    bp.add_argument("--max-workers", type=int, default=2, help="each Dask backend runs with 1..N workers")
    bp.add_argument(
        "--chunk-size",
        type=int,
        help="images a chunk, every run (default: 4+ chunks a worker at the most workers)",
    )
    bp.add_argument("--size", type=int, default=224)
    bp.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is reported")
    bp.add_argument("--limit", type=int, help="benchmark the first N pairs only")
    bp.add_argument("--formats", nargs="+", help="only pairs whose image has one of these formats, e.g. JPEG")
    bp.add_argument(
        "--scratch",
        default="outputs/bench",
        help="folder for the runs' temporary shards, on the file system real output would use",
    )
    bp.add_argument(
        "--results",
        help="writes <this>/preprocess/<name>.json (default: results/ for the default's "
        "data, else outputs/<run>/results/)",
    )
    bp.add_argument("--name", dest="run", help="results file name (default: the data's run name)")
    bp.add_argument("--figures", help="also draw the scaling and cost figures into this folder")
    bp.set_defaults(fn=_bench_preprocess)

    bc = b.add_parser("cache", help="training steps on cached features vs re-encoding pixels every step")
    profile_options(bc)
    bc.add_argument("--steps", type=int, default=20)
    bc.add_argument("--device", default="cpu")
    bc.add_argument("--name", dest="run", help="results file name (default: the profile)")
    bc.set_defaults(fn=_bench_cache)

    bs = b.add_parser("scaling", help="the training job at 1..N ranks through torchrun: speed-up, memory, R")
    bs.add_argument("--strategies", default="ddp,fsdp")
    bs.add_argument("--worlds", default="2", help="rank counts, e.g. 2,4")
    bs.add_argument("--batches", default="16", help="per-rank batch sizes, e.g. 8,16,32")
    bs.add_argument(
        "--compare-threads", type=int, default=2, help="also one process with this many threads (0: no)"
    )
    _sweep_options(bs, profile_options, "the profile")

    bl = b.add_parser(
        "lm",
        help="one-device training throughput of the full-size architecture, random weights: "
        "tokens/s, MFU, projected hours for the seed study's run",
    )
    add_options(bl, LMBench)
    bl.add_argument("--device", default="cuda")
    bl.add_argument("--results", default="results", help="writes <this>/lm_throughput/<name>.json")
    bl.add_argument("--name", dest="run", help="results file name (default: <size>-<device type>)")
    bl.set_defaults(fn=_bench_lm)

    bp = b.add_parser(
        "padding",
        help="real-token training throughput on a real caption-length distribution: padding to the limit "
        "against the batch's longest and length-grouped batches, interleaved repeats",
    )
    add_options(bp, LMBench, skip=("padding",))
    bp.add_argument(
        "--modes", default=",".join(PADDINGS), help="padding modes to compare (max is the reference)"
    )
    bp.add_argument("--repeats", type=int, default=5, help="rounds of every mode in turn")
    bp.add_argument("--device", default="cuda")
    bp.add_argument("--results", default="results", help="writes <this>/padding/<name>.json")
    bp.add_argument("--name", dest="run", help="results file name (default: <size>-<device type>)")
    bp.set_defaults(fn=_bench_padding)

    be = b.add_parser(
        "encoder",
        help="the default's tiny encoder pre-trained at several scales: what a linear probe reads from its "
        "frozen features, per scene fact",
    )
    profile_options(be)
    be.add_argument(
        "--runs",
        default="0:12,8000:10",
        help="GENERATED:EPOCHS pairs: generated pairs added to the training split, passes over them",
    )
    _scored_options(be, "encoder", "the runs' encoders and features", "seed of the intervals")
    be.set_defaults(fn=_bench_encoder)

    bt = b.add_parser("tower", help="the tiny CLIP's image tower and a ResNet, trained on the facts")
    profile_options(bt)
    bt.add_argument("--runs", default="vit:324,vit:1296,cnn:324", help="TOWER:STEPS; towers: vit, cnn")
    bt.add_argument("--generated", type=int, default=8000, help="generated pairs added to the training split")
    _scored_options(bt, "tower", "each run's result", "seed of the weights, the order and the intervals")
    bt.set_defaults(fn=_bench_tower)

    bk = b.add_parser(
        "comm",
        help="all_reduce, all_gather, reduce_scatter, send/recv over message sizes at each world size: "
        "latency + size/bandwidth fit per collective",
    )
    _comm_options(bk)
    bk.add_argument("--worlds", default="2", help="rank counts, e.g. 2,4")
    bk.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    bk.add_argument("--results", default="results", help="writes <this>/comm/<name>.json")
    bk.add_argument("--name", dest="run", default="default", help="results file name")
    bk.set_defaults(fn=_bench_comm)
    bw = b.add_parser("comm-rank", help="(run by `bench comm` under torchrun) one rank's timings")
    _comm_options(bw)
    bw.add_argument("--out", required=True)
    bw.set_defaults(fn=_bench_comm_rank)

    bm = b.add_parser(
        "pipeline",
        help="model parallelism at one batch: pipeline schedules x micro-batches, "
        "layer split, DDP, against one process",
    )
    bm.add_argument("--worlds", default="2", help="pipeline stages (ranks), e.g. 2,4")
    bm.add_argument("--batches", default="32", help="whole batch per step, e.g. 32,64")
    bm.add_argument("--schedules", default=",".join(SCHEDULES))
    bm.add_argument("--microbatches", default="1,2,4,8")
    bm.add_argument("--no-layers", action="store_true", help="leave out the one-process layer split")
    bm.add_argument("--no-ddp", action="store_true", help="leave out DDP at the same global batch")
    _sweep_options(bm, profile_options, "<profile>-model-parallel")
