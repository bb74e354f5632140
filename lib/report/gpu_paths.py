"""The report's blocks on what a step computes and where it runs: padding against real caption lengths
(``bench padding``), and every GPU path of ``make gpu`` (``gpu-check``), or that it has not run."""

from __future__ import annotations

import statistics

from lib.report.markdown import source, table
from lib.stats import shown, verdict

WHAT = {  # gpu-check's checks, in its order
    "features": "train from cached features (bf16, one GPU)",
    "pixels": "train with the encoder in the loop (--source pixels)",
    "ddp": "DDP under NCCL, DCP checkpoint, resumed",
    "fsdp": "FSDP2 (bf16 parameters, fp32 reduction), DCP checkpoint, resumed",
    "fsdp-4bit": "FSDP2 over NF4 base weights (QLoRA), DCP checkpoint, resumed",
    "captions": "captions/s, batched with the KV cache",
    "decode": "JPEG decode + resize on the GPU (nvJPEG) vs CPU",
    "step": "full-size step on real caption lengths: padded to 64, grouped, + fused AdamW, + compile",
}


def padding(res: dict, run: str) -> str:
    recs = [r for k, r in sorted(res.items()) if k.startswith("padding/")]
    if not recs:
        return (
            "_Not recorded yet: `python -m lib bench padding --lengths data/default --size tiny "
            "--device cpu`._\n"
        )
    out = []
    for r in recs:
        m, b = r["metrics"], r["config"]["bench"]
        rows = [
            {
                "padding": mode,
                "real tokens / positions computed": f"{v['real_token_share']:.0%}",
                "real tokens/s (median)": statistics.median(v["tokens_per_s"]),
                "vs padding to the limit": shown(m["gain_vs_max"].get(mode)) or "1 (reference)",
                "verdict": verdict(m["gain_vs_max"][mode], "faster", "slower")
                if mode in m["gain_vs_max"]
                else "",
            }
            for mode, v in m["modes"].items()
        ]
        lengths = m["caption_lengths"]
        out.append(
            f"Captions of `{lengths['source']}` in BioMistral-7B's tokens: mean {lengths['mean']:.1f}, "
            f"median {lengths['p50']:.0f}, 95th percentile {lengths['p95']:.0f}, "
            f"{lengths['over_limit']:.1%} over the {lengths['limit']}-token limit. The `{b['size']}` "
            f"architecture on {r['config']['device']}, batch {b['batch']}, {b['steps']} steps per run, "
            f"{m['repeats']} rounds of every mode in turn ({m['interval']}).\n\n"
            + table(rows)
            + "\n"
            + source(r)
        )
    return "\n".join(out)


def gpu_checks(res: dict, run: str) -> str:
    recs = {k.split("/", 1)[1]: r for k, r in res.items() if k.startswith("gpu/") and "dry-run" not in k}
    if not recs:
        return (
            "_`make gpu` has not run on a GPU yet. Unmeasured on any GPU: training with the encoder in the "
            "loop, DDP, FSDP2 and FSDP2 over NF4 (QLoRA) under NCCL with DCP checkpoints and resume, "
            "captions/s, and JPEG decoding on the GPU. Its dry run (CPU, tiny sizes, gloo) passes in the "
            "test suite._\n"
        )
    rows = []
    for _, r in sorted(recs.items()):
        m, check = r["metrics"], r["config"]["check"]
        rows.append(
            {
                "check": check,
                "what": WHAT.get(check, check),
                "device": r["provenance"]["hardware"]["tag"],
                "passed": "yes" if m["ok"] else f"no: {m.get('error', '')[:120]}",
                "result": _result(check, m) if m["ok"] else "",
                "seconds": m["seconds"],
            }
        )
    order = list(WHAT)
    rows.sort(key=lambda row: order.index(row["check"]) if row["check"] in order else len(order))
    return table(rows) + "\n" + source(*recs.values())


def _result(check: str, m: dict) -> str:
    if check in ("features", "pixels", "ddp", "fsdp", "fsdp-4bit"):
        run = m.get("resumed") or m["run"]
        mfu = f", MFU {run['mfu']:.1%}" if run.get("mfu") is not None else ""
        resumed = f", resumed at step {m['resumed']['start_step']}" if "resumed" in m else ""
        loss = f"loss {run['losses'][0]:.3f} → {run['final_loss']:.3f}"
        return f"{run['samples_per_s']:.1f} samples/s{mfu}, {loss}{resumed}"
    if check == "captions":
        return f"{m['batched_kv_cache']['captions_per_s']:.1f} captions/s (batch {m['batch']})"
    if check == "step":
        return "; ".join(
            f"{name}: {v['tokens_per_s']:,.0f} tokens/s"
            + (f", MFU {v['mfu']:.1%}" if v["mfu"] is not None else "")
            + f", seed's run {v['seed_run_projected_hours'] * 60:.1f} min"
            for name, v in m["variants"].items()
        )
    if check == "decode":
        return f"x{shown(m['gain_vs_cpu'])} images/s vs CPU ({verdict(m['gain_vs_cpu'], 'faster', 'slower')})"
    return ""
