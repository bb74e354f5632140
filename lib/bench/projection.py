"""The full-size job (BioMistral-7B + LoRA) projected to 1-64 GPUs for DDP and FSDP, from its measured
one-GPU step times (``bench lm``) and the communication model (``lib.bench.comm_model``) on stated
interconnects. Nothing here is measured on more than one GPU: every input is printed beside the result.

Assumptions (printed with the table): 8 GPUs a node on NVLink, one InfiniBand NIC a GPU between nodes;
a ring's time is set by its slowest link, so past one node every collective runs at the InfiniBand
rate; per-GPU compute as measured on one GPU; trained parameters (LoRA, projector) in fp32 with fp32
gradients, frozen weights in bf16; overlap unknown on GPUs, so both bounds are given: none (T_1 + C_N)
and complete (max(T_1, C_N)).
"""

from __future__ import annotations

from lib.bench.comm_model import comm_s

GPUS = (1, 2, 4, 8, 16, 32, 64)
PER_NODE = 8
INTERCONNECTS = {
    "nvlink": {
        "gb_s": 450.0,
        "alpha_us": 5.0,
        "source": "NVIDIA H100 SXM datasheet: NVLink 900 GB/s per GPU, i.e. 450 GB/s each way; "
        "latency per ring step assumed (no datasheet gives NCCL's)",
    },
    "infiniband": {
        "gb_s": 50.0,
        "alpha_us": 10.0,
        "source": "NVIDIA ConnectX-7 datasheet: 400 Gb/s NDR InfiniBand a port, one port a GPU as in DGX "
        "H100; latency per ring step assumed",
    },
}


def _links(n: int) -> dict:
    net = INTERCONNECTS["nvlink" if n <= PER_NODE else "infiniband"]
    lk = {"alpha_s": net["alpha_us"] * 1e-6, "beta_s_per_byte": 1e-9 / net["gb_s"]}
    return dict.fromkeys(("all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor"), lk)


def project(run: dict, units: int, algo: str = "ring") -> list[dict]:
    """Rows per strategy and GPU count from one ``bench lm`` results file (its step time per GPU)."""
    m, cfg = run["metrics"], run["config"]
    trained = m["trained_parameters"]
    params_bytes = (m["parameters"] - trained) * 2 + trained * 4
    grads_bytes = trained * 4
    t1 = m["step_s"]
    rows = []
    for strategy in ("ddp", "fsdp"):
        for n in GPUS:
            c = comm_s(strategy, params_bytes, grads_bytes, units, n, _links(n), algo) if n > 1 else 0.0
            slow, fast = t1 + c, max(t1, c)
            rows.append(
                {
                    "strategy": strategy,
                    "GPUs": n,
                    "batch/GPU": cfg["bench"]["batch"],
                    "compute s": t1,
                    "comm s": c,
                    "speed-up, no overlap": n * t1 / slow,
                    "speed-up, full overlap": n * t1 / fast,
                    "efficiency, no overlap": t1 / slow,
                    "efficiency, full overlap": t1 / fast,
                }
            )
    return rows


def assumptions(run: dict, units: int) -> dict:
    m = run["metrics"]
    return {
        "parameters": m["parameters"],
        "trained_parameters": m["trained_parameters"],
        "fsdp_units": units,
        "gpus_per_node": PER_NODE,
        "interconnects": INTERCONNECTS,
        "compute": f"{m['step_s']:.3f} s a step at batch {run['config']['bench']['batch']} per GPU, "
        f"measured on {run['provenance']['hardware']['tag']}",
    }
