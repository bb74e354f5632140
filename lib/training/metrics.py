"""Per-step throughput, MFU and peak memory."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from lib.models.language import n_elements
from lib.models.vlm import is_trained

# Dense peak TFLOP/s by device name fragment, for the MFU estimate (bf16/fp16 tensor cores; P100: fp16).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
    "V100": 125.0,
    "P100": 18.7,
    "T4": 65.0,
}


def peak_tflops(device: torch.device) -> float | None:
    """None on CPU: there is no agreed peak to divide by, so no MFU is claimed."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def flops_per_token(model) -> float:
    """Training FLOPs per token: forward 2N, backward 2N for activation gradients through the frozen
    LM, plus 2N_trained for weight gradients (LoRA + projector): 4N + 2N_trained."""
    lm = getattr(model, "lm", model)
    n = sum(n_elements(p) for p in lm.parameters())
    trained = sum(p.numel() for name, p in model.named_parameters() if is_trained(name))
    return 4.0 * n + 2.0 * trained


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    match = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())  # peak RSS of this process
    return int(match.group(1)) * 1024 if match else 0


def reset_peak_memory(device: torch.device) -> None:
    """Start the peak from the current use, so a second run in one process reports its own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets VmHWM to the current RSS (proc(5), clear_refs)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # no /proc (not Linux): peak_memory_bytes has no VmHWM to read either


def _local_bytes(t: torch.Tensor) -> int:
    t = getattr(t, "_local_tensor", t)  # a DTensor shard: only what this rank holds
    return t.numel() * t.element_size()


def model_state_bytes(model, optimizer) -> dict[str, int]:
    """What this rank holds of the model state: parameters (frozen + trained), gradients of the
    trained ones (allocated every step) and optimizer state. FSDP shards all three; DDP replicates."""
    params = sum(_local_bytes(p) for p in model.parameters())
    grads = sum(_local_bytes(p) for p in model.parameters() if p.requires_grad)
    optim = sum(
        _local_bytes(v)
        for s in optimizer.state.values()
        for v in s.values()
        if torch.is_tensor(v) and v.ndim > 0
    )
    return {"params": params, "grads": grads, "optimizer": optim, "total": params + grads + optim}


class StepMeter:
    """Step timing and throughput; samples and tokens are this rank's, rates are for the whole job
    (ranks step in lockstep, so the job processes ``replicas`` times this rank's share per step:
    ``world`` data-parallel ranks, or 1 for a pipeline, whose ranks all see the one batch). MFU divides
    by the peak of every device the job's model spans, and counts every real token the LM processed: the
    caption's and the ``visual_tokens`` each sample puts before it (tokens/s counts caption tokens)."""

    def __init__(
        self,
        flops_per_token: float,
        device: torch.device,
        replicas: int = 1,
        devices: int = 1,
        visual_tokens: int = 0,
    ):
        self.device, self.fpt, self.peak = device, flops_per_token, peak_tflops(device)
        self.replicas, self.devices, self.visual = replicas, devices, visual_tokens
        reset_peak_memory(device)
        # kept apart: a checkpoint save allocates its own buffers (the run's last step is always saved)
        self.train_peak, self.save_peak, self.since_save = 0, 0, True
        self.steps, self.seconds, self.samples, self.tokens = 0, 0.0, 0, 0
        self.durations: list[float] = []

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()

    def stop(self, samples: int, tokens: int, count: bool = True) -> dict:
        """count=False: report the step but leave it out of the summary (a profiled step runs slower)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - self.t0
        if self.steps > 0 and count:  # the first step pays one-off costs (allocations, lazy init)
            self.seconds, self.samples, self.tokens = (
                self.seconds + dt,
                self.samples + samples,
                self.tokens + tokens,
            )
            self.durations.append(dt)
        self.steps += count
        self.since_save = True
        return {
            "seconds": dt,
            **self._rates(samples, tokens, dt),
            "peak_memory_bytes": peak_memory_bytes(self.device),
        }

    @contextmanager
    def saving(self):
        """Around a checkpoint save: the peak so far counts as training's, the save's own peak is kept
        apart (``checkpoint_peak_memory_bytes``), and training's peak starts again after it."""
        self.train_peak = max(self.train_peak, peak_memory_bytes(self.device))
        reset_peak_memory(self.device)
        try:
            yield
        finally:
            self.save_peak = max(self.save_peak, peak_memory_bytes(self.device))
            reset_peak_memory(self.device)
            self.since_save = False

    def _rates(self, samples: int, tokens: int, seconds: float) -> dict:
        tps = self.replicas * tokens / seconds
        processed = self.replicas * (tokens + self.visual * samples) / seconds  # visual + caption tokens
        return {
            "samples_per_s": self.replicas * samples / seconds,
            "tokens_per_s": tps,
            # MFU per device: the job's FLOPs over the job's peak
            "mfu": processed * self.fpt / (self.devices * self.peak * 1e12) if self.peak else None,
        }

    def summary(self) -> dict:
        """Mean rates over the timed steps (what a run delivers), and the same at the median step time,
        which a few steps slowed by something else on the machine do not move (what benchmarks compare)."""
        rates = (
            self._rates(self.samples, self.tokens, self.seconds)
            if self.seconds
            else {"samples_per_s": None, "tokens_per_s": None, "mfu": None}
        )
        median = float(np.median(self.durations)) if self.durations else None
        typical = (
            self._rates(self.samples, self.tokens, median * len(self.durations))
            if median
            else {"samples_per_s": None, "tokens_per_s": None}
        )
        return {
            **rates,
            "flops_per_token": self.fpt,
            "timed_steps": max(0, self.steps - 1),
            "step_s": self.seconds / (self.steps - 1) if self.steps > 1 else None,
            "step_s_median": median,
            "samples_per_s_median": typical["samples_per_s"],
            "tokens_per_s_median": typical["tokens_per_s"],
            # training steps only; checkpoint saves separately (read before and after each save)
            "peak_memory_bytes": max(
                self.train_peak, peak_memory_bytes(self.device) if self.since_save else 0
            ),
            "checkpoint_peak_memory_bytes": self.save_peak or None,
        }


class CollectiveTimer:
    """Time each rank spends in communication (all-reduce, all-gather, reduce-scatter, send/recv), read
    from the PyTorch profiler over a few steps: the process group records every operation as
    ``gloo:<op>`` (from launch to completion, so time overlapped with compute counts too) and, on GPU,
    NCCL's kernels (device time). Each profiled step is its own profile, ended before any checkpoint;
    profiling slows those steps, so they are left out of throughput."""

    def __init__(self, device: torch.device, first: int, steps: int):
        self.device, self.steps = device, range(first, first + steps)
        self.prof, self.ops = None, {}

    def active(self, step: int) -> bool:
        return step in self.steps

    def start(self, step: int) -> None:
        if self.active(step):
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            self.prof = profile(activities=acts)
            self.prof.__enter__()

    def stop(self, step: int) -> None:
        if self.prof is None:
            return
        self.prof.__exit__(None, None, None)
        for e in self.prof.key_averages():
            name = e.key.lower()
            if name.startswith("gloo:"):
                us = e.cpu_time_total
            elif e.device_time_total and "nccl" in name:  # the NCCL kernels themselves
                us = e.device_time_total
            else:
                continue
            self.ops[e.key] = self.ops.get(e.key, 0.0) + us / 1e6 / len(self.steps)
        self.prof = None

    def summary(self) -> dict:
        """Seconds per step in communication, in all and by operation; None when nothing was profiled."""
        if not self.steps:
            return {"comm_s": None, "comm_ops": {}}
        return {"comm_s": sum(self.ops.values()), "comm_ops": self.ops}
