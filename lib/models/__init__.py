"""Model parts: frozen image encoder, projector, language model (+LoRA), the VLM joining them. No
parallelism here."""

import hashlib
import logging
import warnings
from pathlib import Path

# Set before any model module imports peft: peft imports bitsandbytes whenever it is installed, and on CPU
# that logs an error about an optional kernels package even when no quantised weights are used.
# Quantised runs say what they use in their results.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# transformers deprecation raised inside peft's gradient-checkpointing set-up, not in our code.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


class ModelUnavailable(RuntimeError):
    """A model could not be loaded (no network, missing local folder); the message names the way out."""


def files_digest(folder: str | Path, prefix: str = "") -> str:
    """sha256 over the files of a model folder whose names start with ``prefix``, in name order: what a
    cache made from the model is keyed by, so a model rebuilt in the same folder is never taken for the
    one the cache was made from."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name.startswith(prefix)):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def warmup_share(steps: int) -> float:
    """The pre-trainings' one-cycle warm-up: 10% of the steps, but never exactly one step (OneCycleLR
    divides by the warm-up's length minus one: 10 steps in all would raise ZeroDivisionError)."""
    return 0.2 if steps == 10 else 0.1


def pretrain_step(loss, opt, sched, losses: list, bar) -> None:
    """One optimiser step of the default's encoder / LM pre-training, logged to the bar."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    losses.append(loss.item())
    bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.update()
