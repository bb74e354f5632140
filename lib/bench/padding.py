"""What padding costs: the one-device training step (``bench lm``) on a real caption-length
distribution, each caption padded to the length limit (64) against padding to the batch's longest (what
``train`` does) and against length-grouped batches (``train --group-by-length``), in one run.

Throughput counts real caption tokens only, never padding, so a mode that computes fewer pad positions
shows up as more real tokens per second. Modes run in turn (A B C A B C ...) and each mode's gain is
the median of its per-repeat ratios to padding to the limit, with the study's bootstrap interval
(``lib.stats``): a slow spell on a shared machine hits every mode of a repeat alike.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from tqdm import tqdm

from lib.bench.lm import SIZES, measure_lm
from lib.settings import PADDINGS, LMBench
from lib.stats import KIND, paired, shown, verdict

REFERENCE = "max"


def compare_padding(
    cfg: LMBench, device: str, modes: tuple[str, ...] = PADDINGS, repeats: int = 5, progress: bool = True
) -> tuple[dict, dict]:
    if not cfg.lengths:
        raise ValueError("padding only matters for captions of different lengths: give --lengths DATA_DIR")
    unknown = set(modes) - set(PADDINGS)
    if unknown or REFERENCE not in modes:
        raise ValueError(f"modes must include {REFERENCE!r} and be among {', '.join(PADDINGS)}")
    modes = (REFERENCE, *[m for m in modes if m != REFERENCE])
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    bar = tqdm(total=repeats * len(modes), desc="bench padding", unit="run", disable=not progress)
    for _ in range(repeats):
        for mode in modes:
            metrics, config = measure_lm(replace(cfg, padding=mode), device, progress=False)
            runs[mode].append(metrics)
            bar.update()
    bar.close()
    per_mode = {
        m: {
            "tokens_per_s": [r["tokens_per_s"] for r in rs],
            "samples_per_s": [r["samples_per_s"] for r in rs],
            "step_s": [r["step_s"] for r in rs],
            "real_token_share": rs[0]["real_token_share"],  # the same batches every repeat
            "final_loss": [r["final_loss"] for r in rs],
        }
        for m, rs in runs.items()
    }
    ref = per_mode[REFERENCE]["tokens_per_s"]
    gain = {m: paired(per_mode[m]["tokens_per_s"], ref) for m in modes if m != REFERENCE}
    metrics = {
        "modes": per_mode,
        "gain_vs_max": gain,  # real-token throughput of each mode / padding to the limit, per repeat
        "interval": KIND,
        "caption_lengths": runs[REFERENCE][0]["caption_lengths"],
        "repeats": repeats,
    }
    config = {
        "bench": asdict(cfg),
        "modes": list(modes),
        "architecture": SIZES[cfg.size],
        "device": device,
        "weights": "random (architecture only)",
        "order": "modes interleaved within each repeat",
        "workload": config["workload"],
    }
    return metrics, config


def summary(metrics: dict) -> str:
    lines = [
        f"captions: mean {metrics['caption_lengths']['mean']:.1f} tokens "
        f"(median {metrics['caption_lengths']['p50']:.0f}, p95 {metrics['caption_lengths']['p95']:.0f})"
    ]
    for mode, m in metrics["modes"].items():
        iv = metrics["gain_vs_max"].get(mode)
        ratio = (
            "" if iv is None else f"; real tokens/s x{shown(iv)} vs max: {verdict(iv, 'faster', 'slower')}"
        )
        lines.append(f"{mode:>8}: {m['real_token_share']:.0%} of positions are real tokens{ratio}")
    return "\n".join(lines)
