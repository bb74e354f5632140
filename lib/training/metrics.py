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


class StepMeter:
    def __init__(self, model, device: torch.device):
        self.device, self.fpt, self.peak = device, flops_per_token(model), peak_tflops(device)
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
        tps = tokens / dt
        return {"seconds": dt, "samples_per_s": samples / dt, "tokens_per_s": tps,
                "mfu": tps * self.fpt / (self.peak * 1e12) if self.peak else None,
                "peak_memory_bytes": peak_memory_bytes(self.device)}

    def summary(self) -> dict:
        if not self.seconds:
            return {"samples_per_s": None, "tokens_per_s": None, "mfu": None,
                    "peak_memory_bytes": peak_memory_bytes(self.device)}
        tps = self.tokens / self.seconds
        return {"samples_per_s": self.samples / self.seconds, "tokens_per_s": tps,
                "mfu": tps * self.fpt / (self.peak * 1e12) if self.peak else None,
                "flops_per_token": self.fpt, "peak_memory_bytes": peak_memory_bytes(self.device)}
