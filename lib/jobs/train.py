"""``python -m lib train``: one training run, in one process or as one rank of a torchrun job.

Reads top to bottom: settings -> distributed set-up -> artefacts -> model -> parallelize -> loop ->
gather -> caption the test split -> results. Strategies differ only inside ``lib.parallel.parallelize``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

from lib.config import DATA_ENV, resolve, shown
from lib.evaluation.evaluate import score_split
from lib.jobs.artefacts import for_profile, settings
from lib.jobs.made_from import MODEL, RECORD, differences, made_from, mismatch, recorded, run_of
from lib.models.build import build
from lib.options import job_from, job_options
from lib.parallel import dist
from lib.parallel.apply import full_trained_state, parallelize
from lib.results import write_json_atomic, write_jsonl_atomic, write_results
from lib.settings import RECIPE, ModelSpec, TrainConfig, TrainJob
from lib.training.checkpoint import latest, load_trained_state
from lib.training.data import CaptionData
from lib.training.loop import train
from lib.training.stop import StopFlag


def train_job(job: TrainJob, stop: StopFlag | None = None) -> dict | None:
    """Run ``job``; the record on rank 0 (None on other ranks). ``stop``: a flag the caller entered
    before its imports (the CLI does), else one is entered here."""
    if job.data:  # the run layout of that data, for this process and every job it starts
        os.environ[DATA_ENV] = os.path.abspath(job.data)
    with nullcontext(stop) if stop else StopFlag() as stop:  # a SIGUSR1/SIGTERM asks for a checkpoint
        if job.threads:
            torch.set_num_threads(job.threads)
        d = dist.init(job.device)
        try:
            return _train(job, d, stop)
        finally:
            dist.close()  # after _train returned: the model and optimizer holding the group are garbage


def _train(job: TrainJob, d: dist.Dist, stop: StopFlag) -> dict | None:
    # settings: the profile's recipe, with what the command line overrides
    s = settings(job.profile, job.params_dir)
    cfg = dataclasses.replace(s.train, **job.overrides)
    # artefacts: rank 0 builds what is missing, the other ranks then find it cached
    for turn in ((0,), range(1, d.world)):
        if d.rank in turn:
            art = for_profile(job.profile, job.params_dir, progress=d.main, verify_data=d.main)
        dist.barrier(d)
    # what this run is made from, recorded before its first step: a run made from anything else (other
    # features, another LM, another recipe) is never resumed into it
    key, out = None, resolve(job.out)
    if d.main:
        key = made_from(art, cfg, job.source)
        if job.resume:
            _check_resume(resolve(job.resume), key)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / RECORD, key)
    # model: the same seed gives the same projector and LoRA initialisation on every rank
    torch.manual_seed(cfg.seed)
    vlm, tok = build(art.spec, with_encoder=job.source == "pixels", device=str(d.device))
    vlm.label_smoothing = cfg.label_smoothing
    root = art.features if job.source == "features" else art.preprocessed
    data = CaptionData(root, "train", tok, source=job.source, image=cfg.image)
    # parallelize: wrap, shard, cut or spread the model for the strategy
    par = parallelize(
        vlm,
        job.strategy,
        d,
        schedule=job.schedule,
        microbatches=job.microbatches,
        devices=job.devices,
        cpu_offload=job.cpu_offload,
        compile_blocks=cfg.compile,
    )
    # from here each rank draws its own dropout masks (LoRA's), as it reads its own samples: with one
    # seed every data-parallel rank would drop the same units
    torch.manual_seed(cfg.seed + d.rank)
    if par.step:  # a pipeline accumulates gradients over its schedule's micro-batches
        cfg = dataclasses.replace(cfg, grad_accum=job.overrides.get("grad_accum", par.microbatches))
    # loop
    summary = train(
        par,
        data,
        cfg,
        out,
        resume=job.resume,
        device=d.device,
        rank=d.rank,
        world=d.world,
        progress=d.main,
        stop=stop,
    )
    # gather: the trained weights (collective under FSDP and pipeline) and every rank's numbers, on rank 0
    trained = full_trained_state(par.core)
    ranks = dist.gather(
        {
            "rank": d.rank,
            **{
                k: summary[k]
                for k in (
                    "peak_memory_bytes",
                    "checkpoint_peak_memory_bytes",
                    "model_state_bytes",
                    "step_s",
                    "comm_s",
                    "comm_ops",
                )
            },
            "final_loss": summary["losses"][-1] if summary["losses"] else None,
        },
        d,
    )
    record = None
    if d.main:
        print(
            f"{summary['status']} at step {summary['steps']}: {summary['samples_per_s'] or 0:.1f} samples/s "
            f"({d.world} rank{'s' if d.world > 1 else ''}, {par.name})"
        )
        record = {
            "strategy": job.strategy,
            **par.settings,
            "world_size": d.world,
            "threads_per_rank": torch.get_num_threads(),
            "source": job.source,
            "image": cfg.image,  # what `evaluate` shows it: a blind captioner sees no image there either
            "made_from": key,
            **{k: v for k, v in summary.items() if k != "losses"},
            "final_loss": summary["losses"][-1] if summary["losses"] else None,
            "losses": summary["losses"],
            "ranks": ranks,
        }
        if "devices" in par.settings and d.device.type == "cuda":  # the layer split: what each GPU held
            record["device_peak_memory_bytes"] = {
                x: torch.cuda.max_memory_allocated(x) for x in set(par.settings["devices"])
            }
        # caption the test split with the gathered weights
        if summary["status"] == "finished" and not job.no_eval:
            test = CaptionData(root, "test", tok, source=job.source, image=cfg.image)
            record["eval"] = _caption_test_split(art.spec, trained, job.source, data, test, d.device)
            captions = record["eval"].pop("captions")  # all of them beside the run; a sample in the results
            write_jsonl_atomic(out / "captions.jsonl", captions)
            record["eval"]["examples"] = captions[:8]
        # results
        write_json_atomic(out / "train.json", record)
        config = {
            "profile": job.profile,
            "train": asdict(cfg),
            "model": asdict(art.spec),
            "device": str(d.device),
            "strategy": job.strategy,
            **par.settings,
            "world_size": d.world,
            "threads_per_rank": torch.get_num_threads(),
            "workload": f"projector+LoRA on {'cached features' if job.source == 'features' else 'pixels'}",
        }
        # a blind captioner's record never takes the captioner's name
        name = job.name or (
            f"{s.profile.run_name}-{par.name}"
            + (f"-{d.world}" if d.world > 1 else "")
            + (f"-{cfg.image}" if cfg.image != "real" else "")
        )
        path = write_results(
            resolve(job.results_dir) if job.results_dir else s.results_dir,
            "training",
            name,
            record,
            config,
            cfg.seed,
        )
        print(f"wrote {path}")
    dist.barrier(d)
    return record


def _caption_test_split(
    spec: ModelSpec, trained: dict, source: str, data: CaptionData, test: CaptionData, device
) -> dict:
    """Caption the test split with a fresh single-process model holding the trained weights (the trained
    model may be sharded or wrapped; generation runs unwrapped on one device)."""
    vlm, _ = build(spec, with_encoder=source == "pixels", device=str(device))
    load_trained_state(vlm, trained, source="trained weights")
    result = score_split(vlm, data, test, str(device))
    m, base = result["model"], result["most_frequent"]
    print(
        f"test BLEU-4 {m['bleu4']:.3f} (most frequent caption {base['bleu4']:.3f}), CIDEr {m['cider']:.3f} "
        f"({base['cider']:.3f}), identical captions {m['identical_share']:.1%} "
        f"(references {result['references']['identical_share']:.1%}), commonest caption {m['top_share']:.1%}"
    )
    return result


def _check_resume(checkpoint: Path, key: dict) -> None:
    """A checkpoint resumes only into a run made from the same model, data and source; a recipe changed
    since (more steps) is the caller's choice, and said."""
    old = recorded(run) if (run := run_of(checkpoint)) else None
    why = mismatch(old, key, (*MODEL, "trained_on", "source"))
    if why:
        raise ValueError(
            f"cannot resume {checkpoint}: {why} than this run. Train in a new folder (or delete that one)"
        )
    if changed := differences(old, key, ("train",)):
        print(f"resuming {checkpoint} with a changed recipe: {', '.join(changed)}", file=sys.stderr)


def ensure_trained(
    out: str,
    profile: str = "default",
    max_steps: int | None = None,
    options: tuple[str, ...] = (),
    params_dir: str | None = None,
) -> Path:
    """A finished training run in ``out``, made from the profile's data, models and recipe: left as it
    is when there is one, resumed from its newest checkpoint when interrupted, else trained. A run in
    ``out`` made from anything else (the encoder pre-trained again, a changed recipe) is deleted and
    trained again, and a message says why. Runs `python -m lib train` in a child process (as SLURM
    would), so a notebook's kernel never holds the training job's memory; ``options`` are more of its
    command-line options (``("--image", "zeros")``). Returns ``out``."""
    out = resolve(out)
    args = ["--profile", profile, "--out", str(out), "--no-eval"]
    args += ["--max-steps", str(max_steps)] if max_steps else []
    args += ["--params-dir", str(params_dir)] if params_dir else []
    args += list(options)
    parser = argparse.ArgumentParser(prog="python -m lib train")
    job_options(parser, TrainJob, TrainConfig, RECIPE)
    job = job_from(TrainJob, TrainConfig, parser.parse_args(args))
    cfg = dataclasses.replace(settings(profile, params_dir).train, **job.overrides)
    key = made_from(for_profile(profile, params_dir, progress=False, verify_data=False), cfg, job.source)
    done = out / "train.json"
    if done.exists():
        rec = json.loads(done.read_text())
        if rec["status"] == "finished" and rec.get("made_from") == key:
            return out
    old = recorded(out)
    if old != key and (old or done.exists() or latest(out)):
        print(f"{shown(out)}: {mismatch(old, key)}; training it again", file=sys.stderr)
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "lib", "train", *args]
    cmd += ["--resume", str(out)] if latest(out) else []
    subprocess.run(cmd, check=True)
    return out
