# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: PMC-OA study
#     language: python
#     name: pmcoa
# ---

# %% [markdown]
# # 05 · Sharding with FSDP2
#
# DDP keeps a full copy of the model, its gradients and its optimizer state on every rank. FSDP2
# (`torch.distributed.fsdp.fully_shard`, one unit per LM block, the rest as the root unit) keeps
# 1/N of each on each rank and all-gathers a block's weights just before it runs. The frozen base
# weights and the LoRA adapters are sharded together; FSDP2 keeps each parameter's
# `requires_grad`, so only the adapters and the projector get gradients and optimizer state.
#
# What to look for: model state per rank against DDP (the seeds saw -57% memory), and what the
# extra all-gathers cost per step. Checkpoints are sharded (torch.distributed.checkpoint) and load
# at any world size, one process included.

# %% tags=["parameters"]
profile = "default"
results_dir = "results"
figures_dir = "figures"
run_name = "default"
seed = 0
worlds = [2]
batches = [16]  # per-rank batch
amps = ["off"]
threads = 1
steps = 20
repeats = 5  # each job this many times, in turn (A B A B); ratios per pair: median [95% interval]
scratch = "outputs/default/work/bench/scaling/fsdp"  # this sweep's jobs: an interrupted sweep resumes

# %%
import pandas as pd
from IPython.display import Image, display

from lib.bench import scaling, scaling_views
from lib.config import resolve

# %% [markdown]
# ## DDP and FSDP at the same per-rank batch
# Each configuration is a `torchrun ... -m lib train --strategy ddp|fsdp` job; its `train.json`
# holds every rank's model-state bytes (parameters + gradients + optimizer state that rank holds)
# and peak memory.

# %%
configs = scaling.grid(["ddp", "fsdp"], worlds, batches, threads, amps, compare_threads=None)
metrics = scaling.sweep(configs, resolve(scratch), profile, steps=steps, repeats=repeats)
out = scaling.record(metrics, configs, resolve(results_dir), f"{run_name}-fsdp", profile, seed)
print(f"wrote {out}")
display(pd.DataFrame(scaling_views.table(metrics)))

# %% [markdown]
# ## Memory per rank
# Model state splits into parameters (mostly the frozen LM), gradients and AdamW state (two fp32
# moments per trained parameter). Peak RSS on CPU also counts the Python process, libraries and
# activations, which FSDP does not shard.

# %%
display(pd.DataFrame(scaling_views.memory_table(metrics)))
display(pd.DataFrame(scaling_views.fsdp_vs_ddp(metrics)))

# %%
for path in scaling_views.figures(metrics, resolve(figures_dir), prefix="05_fsdp"):
    display(Image(filename=str(path)))
