"""From a profile to a trained, evaluated captioner: the artefacts each step needs, built when missing
(every one is cached and resumable), the VLM assembled from its specs, training, then captions of
held-out images scored against the most-frequent-caption baseline."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lib.config import Profile, resolve


@dataclass
class ModelSpec:
    encoder: str  # "hf-hub:..." or "local-dir:/path"
    lm: str  # hub id or local folder
    encoder_output: str = "pooled"  # pooled | tokens
    visual_tokens: int = 4
    projector_hidden: int = 512
    quant: str | None = None  # None | 8bit | 4bit
    lora: dict = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05, "targets": ["q_proj", "v_proj"]})


@dataclass
class Artefacts:
    data: Path
    index: Path
    preprocessed: Path
    features: Path


def model_spec(params: dict) -> ModelSpec:
    keys = ModelSpec.__dataclass_fields__
    return ModelSpec(**{k: params[k] for k in keys if params.get(k) is not None})


def prepare(profile: Profile, params: dict, progress: bool = True, pretrain_cfg: dict | None = None) -> tuple[Artefacts, ModelSpec]:
    """Make sure data, clean index, shards, encoder, LM and feature cache exist; build what is missing.
    The tiny encoder and LM are pre-trained only for profiles that generate their data (the default)."""
    from lib.data.generate import generate
    from lib.data.preprocess import preprocess
    from lib.data.validate import validate
    from lib.models import encoder as enc
    from lib.models import language
    from lib.models.encode import encode

    work, spec = resolve(params["work_dir"]), model_spec(params)
    data = resolve(params["data_dir"])
    if profile.generate:
        g = profile.generate
        generate(resolve(g["out"]), n=g["n"], seed=g["seed"], workers=params.get("workers"), progress=progress)
    index = work / "index.jsonl"
    if not index.exists():
        validate(data, work / "validate_report.json", index, workers=params.get("workers", 1), progress=progress)
    preprocessed = work / "preprocessed"
    workers = params.get("workers", 1)
    preprocess(data, preprocessed, backend="dask-threads" if workers > 1 else "sequential", workers=workers,
               index=index, progress=progress)
    pre = pretrain_cfg or {}
    if profile.generate:
        enc_dir = Path(spec.encoder.removeprefix("local-dir:"))
        enc.pretrain(preprocessed, resolve(enc_dir), enc.PretrainConfig(**pre.get("encoder", {})), progress=progress)
        lm_cfg = pre.get("lm", {})
        lm_cfg = language.LMPretrain(**{**lm_cfg, "model": language.TinyLM(**lm_cfg.get("model", {}))})
        language.pretrain(preprocessed / "index.jsonl", resolve(spec.lm), lm_cfg, progress=progress)
    features = work / "features" / spec.encoder_output
    encode(preprocessed, features, local_spec(spec.encoder), output=spec.encoder_output, progress=progress)
    return Artefacts(data, index, preprocessed, features), spec


def local_spec(spec: str) -> str:
    """Local paths in profiles are relative to the repository root; hub ids pass through."""
    if spec.startswith("local-dir:"):
        return f"local-dir:{resolve(spec.removeprefix('local-dir:'))}"
    if spec.startswith("hf-hub:") or not resolve(spec).exists():
        return spec
    return str(resolve(spec))


def build(spec: ModelSpec, with_encoder: bool = False, device: str = "cpu"):
    """(CaptionVLM, tokenizer) from a spec; the encoder is attached only to train from pixels."""
    from lib.models.encoder import FrozenEncoder, create
    from lib.models.language import LoraSpec, load_lm, load_tokenizer
    from lib.models.vlm import CaptionVLM, Projector

    lm_path = local_spec(spec.lm)
    tok = load_tokenizer(lm_path)
    lora = LoraSpec(**{**spec.lora, "targets": tuple(spec.lora["targets"])})
    lm = load_lm(lm_path, lora=lora, quant=spec.quant)
    clip, _ = create(local_spec(spec.encoder))
    encoder = FrozenEncoder(clip, spec.encoder_output)
    projector = Projector(encoder.dim, lm.config.hidden_size, spec.projector_hidden, spec.visual_tokens,
                          pooled=spec.encoder_output == "pooled")
    vlm = CaptionVLM(projector, lm, tok, encoder if with_encoder else None)
    return vlm.to(device), tok


@torch.no_grad()
def caption(vlm, data, batch_size: int = 64, num_beams: int = 1, max_new_tokens: int = 48,
            device: str = "cpu", indices=None, use_cache: bool = True,
            progress: bool = False) -> tuple[dict[str, str], float]:
    """Generated caption per id over a whole split (or its rows ``indices``), and captions per second."""
    from tqdm import tqdm

    vlm.eval()
    rows = list(range(len(data)) if indices is None else indices)
    out, t0 = {}, time.perf_counter()
    for lo in tqdm(range(0, len(rows), batch_size), desc="caption", unit="batch", disable=not progress):
        batch = data.batch(rows[lo:lo + batch_size])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        for i, ids in zip(batch["ids"], vlm.generate(batch, max_new_tokens, num_beams, use_cache), strict=True):
            out[i] = data.tok.decode(ids, skip_special_tokens=True).strip()
    return out, len(out) / (time.perf_counter() - t0)


def evaluate(vlm, train_data, test_data, device: str = "cpu", num_beams: int = 1, resamples: int = 200,
             seed: int = 0, progress: bool = False) -> dict:
    """Scores of the captioner (with seeded 95% bootstrap intervals over ``resamples`` resamples of the
    test images) and of the most-frequent-caption baseline on ``test_data``."""
    from lib.evaluation.captions import collapse, most_frequent_caption, score

    hyps, per_s = caption(vlm, test_data, num_beams=num_beams, device=device, progress=progress)
    refs = {r["id"]: [r["caption"]] for r in test_data.rows}
    if len(refs) != len(test_data.rows) or hyps.keys() != refs.keys():  # every test pair scored, once
        raise RuntimeError(f"{len(test_data.rows)} test pairs, {len(refs)} distinct ids, {len(hyps)} captions: "
                           f"pairs would be dropped from the scores")
    frequent = most_frequent_caption([r["caption"] for r in train_data.rows])
    return {
        "model": {**score(refs, hyps, resamples=resamples, seed=seed), **collapse(list(hyps.values())),
                  "captions_per_s": per_s},
        "most_frequent": {**score(refs, dict.fromkeys(refs, frequent)), "caption": frequent},
        # the same diversity measures on the held-out references: how much repetition the data itself has
        "references": collapse([v[0] for v in refs.values()]),
        "captions": [{"id": k, "reference": refs[k][0], "generated": hyps[k]} for k in refs],
        "test_pairs": len(refs),
    }


@dataclass
class TrainJob:
    """One `python -m lib train` run, in one process or as one rank of a torchrun job."""
    out: str
    profile: str = "default"
    params_dir: str | None = None
    strategy: str = "single"  # single | ddp | fsdp | pipeline | layers
    schedule: str = "1f1b"  # pipeline: gpipe | 1f1b
    microbatches: int = 4  # pipeline: micro-batches per step
    devices: str | None = None  # layers: "cuda:0,cuda:1"
    profile_comm: int | None = None  # steps to time communication in with the profiler
    resume: str | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    seed: int | None = None
    amp: str | None = None
    align_steps: int | None = None
    ckpt_every: int | None = None
    source: str = "features"  # features | pixels
    device: str = "auto"
    threads: int | None = None
    cpu_offload: bool = False
    no_eval: bool = False
    run: str | None = None
    results_dir: str | None = None  # default: the profile's


def ensure_trained(out: str, profile: str = "default", max_steps: int | None = None) -> Path:
    """A finished training run in ``out``: left as it is when there is one, resumed from its newest
    checkpoint when interrupted, else trained. Runs `python -m lib train` in a child process (as
    SLURM would), so a notebook's kernel never holds the training job's memory. Returns ``out``."""
    import json
    import subprocess
    import sys

    from lib.training.checkpoint import latest

    out = resolve(out)
    done = out / "train.json"
    if done.exists() and json.loads(done.read_text())["status"] == "finished":
        return out
    cmd = [sys.executable, "-m", "lib", "train", "--profile", profile, "--out", str(out), "--no-eval"]
    cmd += ["--max-steps", str(max_steps)] if max_steps else []
    cmd += ["--resume", str(out)] if latest(out) else []
    subprocess.run(cmd, check=True)
    return out


def train_job(job: TrainJob) -> dict | None:
    """Build what is missing (rank 0 first, the others then find it cached), train with the strategy,
    gather every rank's numbers to rank 0, caption the test split there and write the results.
    Returns the record on rank 0 (None on other ranks)."""
    from lib.parallel import dist
    from lib.training.loop import StopFlag

    with StopFlag() as stop:  # from here a SIGUSR1/SIGTERM is a request to checkpoint, not the end
        if job.threads:
            torch.set_num_threads(job.threads)
        d = dist.init(job.device)
        try:
            return _train(job, d, stop)
        finally:
            dist.close()  # after _train returned: the model and optimizer holding the group are garbage


def _train(job: TrainJob, d, stop) -> dict | None:
    from lib.config import load_profile
    from lib.parallel import dist
    from lib.parallel.apply import full_trained_state, parallelizer, split_devices
    from lib.results import write_json_atomic, write_jsonl_atomic, write_results
    from lib.training.data import CaptionData
    from lib.training.loop import TrainConfig, train

    profile = load_profile(job.profile, job.params_dir)
    profile.apply_env()  # HF_HUB_OFFLINE=1 on the default: a hub call fails at once instead of retrying
    params = profile.notebook_params("train")
    overrides = {k: getattr(job, k) for k in ("batch_size", "lr", "seed", "grad_accum", "amp", "align_steps",
                                              "ckpt_every") if getattr(job, k) is not None}
    if job.max_steps is not None:
        overrides["steps"] = job.max_steps
    if job.profile_comm is not None:
        overrides["profile_comm"] = job.profile_comm
    if job.strategy == "pipeline":  # the schedule's micro-batches are the gradient accumulation
        if job.grad_accum not in (None, job.microbatches):
            raise ValueError("a pipeline accumulates over its micro-batches: set --microbatches, not --grad-accum")
        overrides["grad_accum"] = job.microbatches
    cfg = TrainConfig(**{**params.get("train", {}), **overrides})
    devices = split_devices(job.devices, d.device) if job.strategy == "layers" else None
    wrap = parallelizer(job.strategy, d, cpu_offload=job.cpu_offload, schedule=job.schedule,
                        microbatches=job.microbatches, devices=devices)
    for turn in ((0,), range(1, d.world)):  # rank 0 builds artefacts; the rest then read them
        if d.rank in turn:
            art, spec = prepare(profile, params, progress=d.main, pretrain_cfg=params.get("pretrain"))
        dist.barrier(d)
    torch.manual_seed(cfg.seed)  # projector and LoRA init: same seed, same starting weights on every rank
    vlm, tok = build(spec, with_encoder=job.source == "pixels", device=str(d.device))
    root = art.features if job.source == "features" else art.preprocessed
    data = CaptionData(root, "train", tok, source=job.source)
    out = resolve(job.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = train(vlm, data, cfg, out, resume=job.resume, device=d.device, rank=d.rank, world=d.world,
                    progress=d.main, parallelize=wrap, stop=stop)
    trained = full_trained_state(vlm)  # collective under FSDP and pipeline; on rank 0 only
    strategy = job.strategy + (f"-{job.schedule}" if job.strategy == "pipeline" else "")
    ranks = dist.gather({"rank": d.rank, "peak_memory_bytes": summary["peak_memory_bytes"],
                         "model_state_bytes": summary["model_state_bytes"], "step_s": summary["step_s"],
                         "comm_s": summary["comm_s"], "comm_ops": summary["comm_ops"],
                         "final_loss": summary["losses"][-1] if summary["losses"] else None}, d)
    record = None
    if d.main:
        print(f"{summary['status']} at step {summary['steps']}: {summary['samples_per_s'] or 0:.1f} samples/s "
              f"({d.world} rank{'s' if d.world > 1 else ''}, {strategy})")
        settings = ({"schedule": job.schedule, "microbatches": job.microbatches} if job.strategy == "pipeline" else
                    {"devices": devices} if devices else {})
        record = {"strategy": job.strategy, **settings, "world_size": d.world, "threads_per_rank": torch.get_num_threads(),
                  "source": job.source, **{k: v for k, v in summary.items() if k != "losses"},
                  "final_loss": summary["losses"][-1] if summary["losses"] else None,
                  "losses": summary["losses"], "ranks": ranks}
        if devices and d.device.type == "cuda":  # the layer split: what each GPU of the one process held
            record["device_peak_memory_bytes"] = {x: torch.cuda.max_memory_allocated(x) for x in set(devices)}
        if summary["status"] == "finished" and not job.no_eval:
            record["eval"] = _evaluate_trained(spec, trained, job, data, root, tok, d.device)
            captions = record["eval"].pop("captions")  # all of them beside the run; a sample in the results
            write_jsonl_atomic(out / "captions.jsonl", captions)
            record["eval"]["examples"] = captions[:8]
        write_json_atomic(out / "train.json", record)
        config = {"profile": job.profile, "train": asdict(cfg), "model": asdict(spec), "device": str(d.device),
                  "strategy": job.strategy, **settings, "world_size": d.world,
                  "threads_per_rank": torch.get_num_threads(),
                  "workload": f"projector+LoRA on {'cached features' if job.source == 'features' else 'pixels'}"}
        name = job.run or (f"{job.profile}-{strategy}" + (f"-{d.world}" if d.world > 1 else ""))
        path = write_results(resolve(job.results_dir or params["results_dir"]), "training", name, record, config,
                             cfg.seed)
        print(f"wrote {path}")
    dist.barrier(d)
    return record


def _evaluate_trained(spec, trained: dict, job: TrainJob, data, root, tok, device) -> dict:
    """Caption the test split with a fresh single-process model holding the trained weights (the
    trained model may be sharded or wrapped; generation runs unwrapped on one device)."""
    from lib.training.checkpoint import load_trained_state
    from lib.training.data import CaptionData

    vlm, _ = build(spec, with_encoder=job.source == "pixels", device=str(device))
    load_trained_state(vlm, trained, source="trained weights")
    result = evaluate(vlm, data, CaptionData(root, "test", tok, source=job.source), str(device))
    m, base = result["model"], result["most_frequent"]
    print(f"test BLEU-4 {m['bleu4']:.3f} (most frequent caption {base['bleu4']:.3f}), CIDEr {m['cider']:.3f} "
          f"({base['cider']:.3f}), identical captions {m['identical_share']:.1%} "
          f"(references {result['references']['identical_share']:.1%}), commonest caption {m['top_share']:.1%}")
    return result
