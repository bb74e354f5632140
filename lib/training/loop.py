"""The one training loop every strategy uses (parallel wrappers change the model, not the loop).

Two stages, as LLaVA: steps < align_steps train the projector with the LM frozen; later steps train
the projector and the LoRA adapters. Gradient accumulation, clipping, AdamW, warm-up + cosine, AMP
(bf16 autocast; fp16 + GradScaler where bf16 is missing), optional gradient checkpointing.
SIGTERM / SIGUSR1 (SLURM's warning before a time limit) checkpoint and return cleanly.
"""

from __future__ import annotations

import json
import math
import signal
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from lib.training import checkpoint
from lib.training.data import CaptionData, Order
from lib.training.metrics import StepMeter


@dataclass
class TrainConfig:
    steps: int = 300
    align_steps: int = 60  # stage 1 (projector only); 0 skips it
    batch_size: int = 32  # global, per optimizer step
    grad_accum: int = 1
    lr: float = 2e-3
    warmup: int = 20
    weight_decay: float = 0.0
    clip: float = 1.0
    amp: str = "auto"  # auto | off | bf16 | fp16
    grad_ckpt: bool = False
    seed: int = 0
    ckpt_every: int = 100
    log_every: int = 10


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


class _Stop:
    """Turns SIGTERM/SIGUSR1 into a flag the loop checks after each step."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self.old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGUSR1)}
        return self

    def _set(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


def set_stage(model, stage: int) -> None:
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(stage == 2)
        elif name.startswith("projector."):
            p.requires_grad_(True)


def train(model, data: CaptionData, cfg: TrainConfig, out: str | Path, resume: str | Path | None = None,
          device: str | torch.device = "cpu", rank: int = 0, world: int = 1, progress: bool = True,
          on_step=None) -> dict:
    """Train ``model`` (a CaptionVLM, possibly wrapped) and checkpoint under ``out/ckpt``.
    Returns a summary: status (finished | preempted), steps, losses and throughput."""
    out, device = Path(out), torch.device(device)
    out.mkdir(parents=True, exist_ok=True)
    core = getattr(model, "module", model)
    set_stage(core, 2)  # the optimizer owns every trained parameter; stage 1 just leaves LoRA without grads
    params = [p for p in core.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    start = 0
    if resume is not None:
        ckpt = checkpoint.latest(resume)
        if ckpt is None:
            raise FileNotFoundError(f"no checkpoint under {resume}")
        start = checkpoint.resume(core, opt, sched, ckpt, scaler)
    if cfg.grad_ckpt:
        core.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.batch_size % cfg.grad_accum:
        raise ValueError(f"batch size {cfg.batch_size} must be a multiple of grad_accum {cfg.grad_accum}")
    order = Order(len(data), cfg.batch_size // cfg.grad_accum, cfg.seed, rank, world)  # global micro-batches
    meter = StepMeter(core, device)
    log = (out / "metrics.jsonl").open("a") if rank == 0 else None
    losses, status, step = [], "finished", start
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not progress or rank != 0)
    sync = getattr(model, "no_sync", None)  # DDP: all-reduce only on the last micro-batch
    with _Stop() as stop:
        for step in range(start, cfg.steps):
            set_stage(core, 1 if step < cfg.align_steps else 2)
            meter.start()
            total, tokens, samples = 0.0, 0, 0
            for a in range(cfg.grad_accum):
                batch = _to(data.batch(order.indices(step * cfg.grad_accum + a)), device)
                tokens += int(batch["attention_mask"].sum())
                samples += len(batch["input_ids"])
                last = a == cfg.grad_accum - 1
                with nullcontext() if last or sync is None else sync():
                    with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                        loss = model(batch) / cfg.grad_accum
                    (scaler.scale(loss) if scaler else loss).backward()
                total += loss.item()
            if scaler:
                scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.clip)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            losses.append(total)
            m = meter.stop(samples=samples * world, tokens=tokens * world)
            record = {"step": step + 1, "stage": 1 if step < cfg.align_steps else 2, "loss": total,
                      "lr": sched.get_last_lr()[0], "grad_norm": float(grad_norm), **m}
            if on_step:
                on_step(record)
            if log and ((step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps):
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{total:.3f}", stage=record["stage"])
            bar.update()
            done = step + 1
            if stop.signal or done % cfg.ckpt_every == 0 or done == cfg.steps:
                if rank == 0:
                    checkpoint.save(out / "ckpt", core, opt, sched, done, extra={"config": asdict(cfg)},
                                    scaler=scaler)
                if stop.signal:
                    status = f"preempted ({stop.signal})"
                    break
    bar.close()
    if log:
        log.close()
    return {"status": status, "start_step": start, "steps": step + 1 if cfg.steps > start else start,
            "losses": losses, **meter.summary()}


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
