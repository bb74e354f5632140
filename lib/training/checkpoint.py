"""Checkpoints hold what is trained (projector + LoRA, safetensors) and the state to continue exactly:
optimizer, scheduler, RNG, step. Nothing is unpickled on load (safetensors + ``weights_only=True``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that is trained in any stage (projector and LoRA), by name."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if _is_trained(n)}


def _is_trained(name: str) -> bool:
    return name.startswith("projector.") or "lora_" in name


def save(folder: str | os.PathLike, model, optimizer, scheduler, step: int, extra: dict | None = None,
         scaler=None) -> Path:
    """Write ``folder/step-NNNNNN`` via a temp folder + rename, then point ``latest`` at it."""
    folder = Path(folder)
    final = folder / f"step-{step:06d}"
    tmp = folder / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng, "extra": extra or {}, "scaler": scaler.state_dict() if scaler else None},
               tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest = folder / "latest"
    (folder / ".latest.tmp").write_text(final.name)
    os.replace(folder / ".latest.tmp", latest)
    return final


def latest(folder: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``folder`` (a run's out/ckpt), or ``folder`` itself if it is one."""
    folder = Path(folder)
    if (folder / "trainable.safetensors").exists():
        return folder
    for ckpts in (folder / "ckpt", folder):
        if (ckpts / "latest").exists():
            return ckpts / (ckpts / "latest").read_text().strip()
    return None


def load_trainable(model, ckpt: str | os.PathLike, strict: bool = True) -> None:
    state = load_file(Path(ckpt) / "trainable.safetensors")
    own = dict(model.named_parameters())
    missing = [n for n in own if _is_trained(n) and n not in state]
    unknown = [n for n in state if n not in own]
    if strict and (missing or unknown):
        raise ValueError(f"{ckpt}: checkpoint does not match the model (missing {missing[:3]}, unknown {unknown[:3]})")
    with torch.no_grad():
        for n, t in state.items():
            if n in own:
                own[n].copy_(t)


def resume(model, optimizer, scheduler, ckpt: str | os.PathLike, scaler=None) -> int:
    """Restore everything a run needs to continue bit for bit; returns the step to start from."""
    load_trainable(model, ckpt)
    state = torch.load(Path(ckpt) / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):  # fp16: the loss scale reached so far
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["step"]
