"""The one training loop every strategy uses. Parallelism reaches it only as a ``Parallelized``
(what ``lib.parallel`` built around the model): which module to call, how gradients are synchronised,
how many replicas share a step. A pipeline, whose schedule runs forward and backward itself, is the
one branch, and the loop knows it by that interface, as torchtitan's does.

Two stages, as LLaVA: steps < align_steps train the projector with the LM frozen; later steps train
the projector and the LoRA adapters. Gradient accumulation, clipping, AdamW, warm-up + cosine, AMP
(bf16 autocast; fp16 + GradScaler where bf16 is missing), optional gradient checkpointing.
SIGTERM / SIGUSR1 (SLURM's warning before a time limit) checkpoint and return cleanly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from lib.models.vlm import is_lora, is_trained
from lib.results import write_text_atomic
from lib.settings import TrainConfig
from lib.training import checkpoint
from lib.training.data import CaptionData, Order
from lib.training.metrics import CollectiveTimer, StepMeter, flops_per_token, model_state_bytes
from lib.training.stop import StopFlag


def _sync_always(last: bool) -> AbstractContextManager:
    return nullcontext()


@dataclass
class Parallelized:
    """What the loop knows of a parallel strategy; ``lib.parallel.parallelize`` builds it, a one-process
    run is ``Parallelized(model)``."""

    core: nn.Module  # the captioner itself (sharded, cut to a stage or spread over devices in place)
    module: nn.Module | None = (
        None  # what the loop calls, module(batch) -> loss (a DDP wrapper); default: core
    )
    step: Callable | None = None  # runs forward and backward of a whole batch itself (a pipeline schedule)
    microbatches: int = 1  # the schedule's micro-batches: its gradient accumulation
    replicas: int = 1  # data-parallel copies: each step processes ``replicas`` times this rank's batch
    devices: int = 1  # devices the job's model spans (the MFU denominator counts each one's peak)
    whole: bool = True  # this rank holds every trained parameter (checkpoints add one safetensors file)
    grad_sync: Callable[[bool], AbstractContextManager] = (
        _sync_always  # reduce gradients on this micro-batch?
    )
    norm_across_ranks: bool = False  # the trained parameters are spread over ranks: sum the norms first
    flops_per_token: float | None = None  # of the whole model, counted before it was cut or sharded
    name: str = "single"
    settings: dict = field(default_factory=dict)  # what the results file records of the strategy

    def __post_init__(self):
        self.module = self.module or self.core
        if self.flops_per_token is None:
            self.flops_per_token = flops_per_token(self.core)


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None  # bf16 autocast on CPU is slower than fp32 for these sizes
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def trained_parameters(model: nn.Module) -> tuple[list, list]:
    """(every parameter either stage trains, the LoRA ones). Both stages' parameters require gradients
    throughout, so a parallel wrapper is built once over a fixed set; stage 1 discards the LoRA gradients."""
    named = [(n, p) for n, p in model.named_parameters() if is_trained(n)]
    return [p for _, p in named], [p for n, p in named if is_lora(n)]


def train(
    model: nn.Module | Parallelized,
    data: CaptionData,
    cfg: TrainConfig,
    out: str | Path,
    resume: str | Path | None = None,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world: int = 1,
    progress: bool = True,
    on_step=None,
    stop: StopFlag | None = None,
) -> dict:
    """Train a captioner (a CaptionVLM, or one ``lib.parallel.parallelize`` wrapped) and checkpoint under
    ``out/ckpt``. Returns a summary: status (finished | preempted), steps, losses, throughput,
    communication time and memory."""
    out, device = Path(out), torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    par = model if isinstance(model, Parallelized) else Parallelized(model)
    accum = par.microbatches if par.step else cfg.grad_accum
    if par.step and cfg.grad_accum != par.microbatches:
        raise ValueError(
            f"a pipeline's micro-batches ({par.microbatches}) are its gradient accumulation: "
            f"set --microbatches, not --grad-accum ({cfg.grad_accum})"
        )
    # visual tokens are processed by the LM like caption tokens: MFU counts them (rank 0 reports a job's
    # rates, and its stage holds the projector)
    visual = getattr(getattr(par.core, "projector", None), "n_tokens", 0)
    meter = StepMeter(
        par.flops_per_token, device, replicas=par.replicas, devices=par.devices, visual_tokens=visual
    )
    params, lora = trained_parameters(par.core)  # a pipeline rank: only its stage's
    # fused: one kernel updates every parameter (torch's default on GPUs is the multi-tensor foreach one)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused_adam or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    if par.step and scaler:
        raise ValueError("fp16 loss scaling is not supported in a pipeline; use --amp bf16")
    start = 0
    if resume is not None:
        ckpt = checkpoint.latest(resume)
        if ckpt is None:
            raise FileNotFoundError(f"no checkpoint under {resume}")
        start = checkpoint.resume(par.core, opt, sched, ckpt, scaler)
    if cfg.grad_ckpt:
        par.core.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.batch_size % accum:
        raise ValueError(f"batch size {cfg.batch_size} must be a multiple of grad_accum {accum}")
    lengths = data.token_lengths() if cfg.group_by_length else None
    order = Order(len(data), cfg.batch_size, cfg.seed, par.replicas, accum, lengths=lengths)
    timer = CollectiveTimer(device, start + 1, max(0, min(cfg.profile_comm, cfg.steps - start - 1)))
    if rank == 0:
        _truncate_log(out / "metrics.jsonl", start)
    log = (out / "metrics.jsonl").open("a") if rank == 0 else None
    losses, status, step = [], "finished", start
    par.module.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not progress or rank != 0)
    with nullcontext(stop) if stop else StopFlag() as stop:
        for step in range(start, cfg.steps):
            meter.start()
            timer.start(step)
            if (
                par.step
            ):  # a pipeline: every stage reads the whole batch, padded to one width (buffers are sized once)
                rows = [i for a in range(accum) for i in order.indices(step, 0, a)]
                batch = _to(data.batch(rows, width=data.longest()), device)
                total = par.step(batch, dtype) or 0.0  # the loss comes back on the last stage only
                tokens, samples = int(batch["attention_mask"].sum()), len(rows)
            else:
                total, tokens, samples = 0.0, 0, 0
                for a in range(accum):
                    batch = _to(data.batch(order.indices(step, rank, a)), device)
                    tokens += int(batch["attention_mask"].sum())
                    samples += len(batch["input_ids"])
                    with par.grad_sync(a == accum - 1):  # reduce across ranks on the last micro-batch only
                        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                            loss = par.module(batch) / accum
                        (scaler.scale(loss) if scaler else loss).backward()
                    total += loss.item()
            if step < cfg.align_steps:  # stage 1: the LM, adapters included, stays as it is
                for p in lora:
                    p.grad = None
            if scaler:
                scaler.unscale_(opt)
            grad_norm = _clip(params, cfg.clip, across_ranks=par.norm_across_ranks)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            stopping = stop.signal
            if world > 1:  # one all-reduce: the job's loss, and whether any rank was told to stop
                # data parallel: the mean of the replicas' losses; pipeline: the last stage's (the others
                # add 0)
                total, stopped = _agree(total / par.replicas, stopping is not None, device)
                stopping = stopping or ("signal on another rank" if stopped else None)
            losses.append(total)
            m = meter.stop(samples, tokens, count=not timer.active(step))
            timer.stop(step)
            record = {
                "step": step + 1,
                "stage": 1 if step < cfg.align_steps else 2,
                "loss": total,
                "lr": sched.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                **m,
            }
            if on_step:
                on_step(record)
            if log and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{total:.3f}", stage=record["stage"])
            bar.update()
            done = step + 1
            if stopping or done % cfg.ckpt_every == 0 or done == cfg.steps:
                with meter.saving():
                    checkpoint.save(
                        out / "ckpt",
                        par.core,
                        opt,
                        sched,
                        done,
                        extra={"config": asdict(cfg)},
                        scaler=scaler,
                        rank=rank,
                        keep=cfg.keep_ckpts,
                        whole=par.whole,
                    )
                if stopping:  # every rank stops after the same step, so the checkpoint is collective
                    status = f"preempted ({stopping})"
                    break
    bar.close()
    if log:
        log.close()
    return {
        "status": status,
        "start_step": start,
        "steps": step + 1 if cfg.steps > start else start,
        "losses": losses,
        **meter.summary(),
        **timer.summary(),
        "model_state_bytes": model_state_bytes(par.core, opt),
    }


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log's records up to ``step``: a run resumed from an older checkpoint than its last logged
    step logs those steps again, and each step must appear once."""
    if not path.exists():
        return

    def logged(line: str) -> int | None:
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):  # a line torn by a kill mid-write
            return None

    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if (n := logged(line)) is not None and n <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def _agree(share: float, stop: bool, device: torch.device) -> tuple[float, bool]:
    """(sum of the ranks' loss shares, whether any rank got SIGTERM/SIGUSR1): signals reach ranks at
    different moments, and a rank that stopped alone would leave the others waiting in a collective."""
    t = torch.tensor([share, float(stop)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t[0].item(), bool(t[1].item() > 0)


def _clip(params: list, max_norm: float, across_ranks: bool = False) -> torch.Tensor:
    """Clip by the global gradient norm. A pipeline rank holds only its stage's gradients, so the
    squared norms of all stages are summed first (FSDP's DTensor norm is already global)."""
    with_grad = [p for p in params if p.grad is not None]
    if not across_ranks:
        norm = torch.nn.utils.clip_grad_norm_(with_grad, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    device = params[0].device if params else torch.device("cpu")
    local = (
        torch.nn.utils.get_total_norm([p.grad for p in with_grad])
        if with_grad
        else torch.zeros((), device=device)
    )  # stage 1: the last stage's adapters get no gradient
    sq = local.double().square()
    dist.all_reduce(sq)
    norm = sq.sqrt().float()
    torch.nn.utils.clip_grads_with_norm_(with_grad, max_norm, norm)
    return norm


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
