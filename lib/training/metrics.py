"""Per-step throughput, MFU and peak memory."""

from __future__ import annotations

import re
import time
from pathlib import Path

import torch

# Dense peak TFLOP/s by device name fragment, for the MFU estimate (bf16/fp16 tensor cores; P100: fp16).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0,
               "P100": 18.7, "T4": 65.0}


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
    n = sum(p.numel() for p in lm.parameters())
    trained = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name or name.startswith("projector."))
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
    optim = sum(_local_bytes(v) for s in optimizer.state.values() for v in s.values()
                if torch.is_tensor(v) and v.ndim > 0)
    return {"params": params, "grads": grads, "optimizer": optim, "total": params + grads + optim}


class StepMeter:
    """Step timing and throughput; samples and tokens are this rank's, rates are for the whole job
    (ranks step in lockstep, so the job processes ``world`` times this rank's share per step)."""

    def __init__(self, model, device: torch.device, world: int = 1):
        self.device, self.fpt, self.peak = device, flops_per_token(model), peak_tflops(device)
        self.world = world
        reset_peak_memory(device)
        self.steps, self.seconds, self.samples, self.tokens = 0, 0.0, 0, 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t0 = time.perf_counter()

    def stop(self, samples: int, tokens: int) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = time.perf_counter() - self.t0
        if self.steps > 0:  # the first step pays one-off costs (allocations, lazy init)
            self.seconds, self.samples, self.tokens = self.seconds + dt, self.samples + samples, self.tokens + tokens
        self.steps += 1
        return {"seconds": dt, **self._rates(samples, tokens, dt), "peak_memory_bytes": peak_memory_bytes(self.device)}

    def _rates(self, samples: int, tokens: int, seconds: float) -> dict:
        tps = self.world * tokens / seconds
        return {"samples_per_s": self.world * samples / seconds, "tokens_per_s": tps,
                # MFU per device: the job's FLOPs over the job's peak
                "mfu": tps * self.fpt / (self.world * self.peak * 1e12) if self.peak else None}

    def summary(self) -> dict:
        rates = (self._rates(self.samples, self.tokens, self.seconds) if self.seconds else
                 {"samples_per_s": None, "tokens_per_s": None, "mfu": None})
        return {**rates, "flops_per_token": self.fpt, "timed_steps": max(0, self.steps - 1),
                "step_s": self.seconds / (self.steps - 1) if self.steps > 1 else None,
                "peak_memory_bytes": peak_memory_bytes(self.device)}
