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
# # 06 · Model parallelism: layer split and pipelines
#
# When the model does not fit on one device, its layers are cut into runs, one per device.
#
# - **Layer split** (what the seed did, with a device map): one process, blocks 0..k on the first
#   device, the rest on the next; accelerate's hooks move the activations across. Only one device
#   works at a time.
# - **Pipeline** (`torch.distributed.pipelining`, one rank per stage): the batch is cut into M
#   micro-batches that flow through the S stages, so the stages work at the same time except
#   while the pipeline fills and drains. That bubble bounds the speed-up at S·M / (M + S − 1).
#   GPipe runs every forward, then every backward; 1F1B alternates them once the pipeline is full,
#   so a stage holds at most S micro-batches of activations instead of M.
#
# Every stage keeps the parameter names of the whole model, so a pipeline checkpoint resumes under
# any other strategy. A pipeline needs one activation shape for all steps: its batches are padded to
# the longest training caption, so it does more work per sample than one process (tokens/s counts
# real tokens only).

# %% tags=["parameters"]
profile = "default"
results_dir = "results"
figures_dir = "figures"
run_name = "default"
seed = 0
worlds = [2]  # pipeline stages (one rank each)
batches = [32]  # the whole batch per step
schedules = ["gpipe", "1f1b"]
microbatches = [1, 2, 4, 8]
threads = 1  # torch threads per rank
layer_split = (
    True  # also one process with the blocks split over devices (every GPU; two CPU parts without one)
)
ddp = True  # also DDP on the same ranks with the same global batch
steps = 20
repeats = 5  # each job this many times, in turn (A B A B); ratios per pair: median [95% interval]
scratch = (
    "outputs/default/work/bench/scaling/model-parallel"  # this sweep's jobs: an interrupted sweep resumes
)

# %%
import pandas as pd
from IPython.display import Image, display

from lib.bench import scaling, scaling_views
from lib.config import resolve

# %% [markdown]
# ## One pipeline run, as a user would start it
# `torchrun --standalone --nproc_per_node=2 -m lib train --strategy pipeline --schedule 1f1b
# --microbatches 4 ...`; the sweep below launches that job for every schedule and micro-batch count.

# %%
configs = scaling.pipeline_grid(
    worlds, batches, schedules, microbatches, threads, layers=layer_split, ddp=ddp
)
metrics = scaling.sweep(configs, resolve(scratch), profile, steps=steps, repeats=repeats)
out = scaling.record(metrics, configs, resolve(results_dir), f"{run_name}-model-parallel", profile, seed)
print(f"wrote {out}")

# %% [markdown]
# ## Throughput against one process, and the bubble
# "vs 1 process" divides by one process (one thread) training the same batch; "ideal (bubble)" is
# S·M / (M + S − 1). Candidates for the gap between them: the sends and receives (timed by the
# profiler, in flight, per step: the one measured here), the padding, and on this 2-core box two ranks
# competing for the cores and memory bandwidth (not separated here). Each ratio is per pair of repeats,
# with its interval, and "verdict" says faster or slower only where the interval excludes 1.

# %%
display(pd.DataFrame(scaling_views.pipeline_table(metrics)))

# %%
for path in scaling_views.pipeline_figure(metrics, resolve(figures_dir), prefix="06_model_parallel"):
    display(Image(filename=str(path)))

# %% [markdown]
# ## Memory per rank
# Each pipeline rank holds only its stage: its blocks, plus the projector and embeddings on the
# first and the head on the last. DDP holds everything on every rank.

# %%
display(pd.DataFrame(scaling_views.memory_table(metrics)))
