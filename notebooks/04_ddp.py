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
# # 04 · Data parallelism with DDP
#
# Every rank holds the whole captioner and trains on its own slice of each global batch; after
# the backward pass the gradients of what is trained (projector + LoRA, not the frozen 7B base)
# are all-reduced, so all ranks take the same step. The training job is the one every part
# uses, `python -m lib train --strategy ddp`, launched here with `torchrun` as a subprocess, as
# `slurm/` launches it with `srun` + `torchrun`.
#
# What to look for: the speed-up over one rank with the same per-rank batch (with its interval over
# paired repeats), what N ranks add to each step over one, and on a small CPU box, whether more
# ranks beat one process with more threads, or whether no difference was measured.

# %% tags=["parameters"]
profile = "default"
results_dir = "results"
figures_dir = "figures"
run_name = "default"
seed = 0
worlds = [2]  # rank counts to compare with 1
batches = [8, 16, 32]  # per-rank batch sizes (the batch-size sweep)
amps = ["off"]  # precisions: off (fp32), bf16, fp16
amp_compare = ["off", "bf16"]  # AMP vs FP32 at the middle batch
threads = 1  # torch threads per rank
compare_threads = 2  # also one process with this many threads (0: no)
steps = 20
repeats = 5  # each job this many times, in turn (A B A B); ratios per pair: median [95% interval]
comm_repeats = 20  # timed calls of each collective at each message size
comm_device = "cpu"  # cpu: gloo; cuda: NCCL
scratch = "outputs/default/work/bench/scaling/ddp"  # this sweep's jobs: an interrupted sweep resumes

# %%
import pandas as pd
from IPython.display import Image, display

from lib.bench import comm, comm_model, comm_views, scaling, scaling_views
from lib.config import resolve

# %% [markdown]
# ## One DDP run, as a user would start it
# `torchrun --standalone --nproc_per_node=2 -m lib train --strategy ddp ...`: rank 0 prints and
# gathers every rank's numbers into one `train.json`.

# %%
configs = scaling.grid(["ddp"], worlds, batches, threads, amps, compare_threads or None)
mid = batches[len(batches) // 2]
configs += [c for c in scaling.grid(["ddp"], worlds, [mid], threads, amp_compare, None) if c not in configs]
metrics = scaling.sweep(configs, resolve(scratch), profile, steps=steps, repeats=repeats)
first_ddp = next(r for r in metrics["runs"] if r["strategy"] == "ddp")
display(pd.DataFrame([first_ddp["model_state"]], index=["model state bytes, rank 0"]))

# %% [markdown]
# ## Throughput, speed-up and efficiency
# Speed-up is against one rank with the same threads, per-rank batch and precision; efficiency
# divides by the cores used (ranks x threads). Throughput is taken at each job's median step time.
# Every job runs `repeats` times, in turn (A B A B ...), and every repeat is kept: a busy spell on a
# shared machine slows one repeat of every configuration, so each ratio is taken per pair of repeats
# and shown as median [95% percentile-bootstrap interval] (`lib.stats`).

# %%
out = scaling.record(metrics, configs, resolve(results_dir), f"{run_name}-ddp", profile, seed)
print(f"wrote {out}")
table = pd.DataFrame(scaling_views.table(metrics))
display(table)

# %%
for path in scaling_views.figures(metrics, resolve(figures_dir), prefix="04_ddp"):
    display(Image(filename=str(path)))

# %% [markdown]
# ## What N ranks add to a step
# Overhead per step = T(N ranks) - T(1 rank), per pair of repeats: the all-reduce plus whatever the
# ranks compete for (on a 2-core box, memory bandwidth and the cores themselves), so it is not
# communication alone, and one world size says nothing on its own about larger ones.
# "comm in flight" is measured, not derived: the PyTorch profiler times each all-reduce from launch
# to completion over a few steps (the slowest rank's sum). DDP launches them during backward, so
# much of that time overlaps compute; the overhead is the part that does not.

# %%
display(pd.DataFrame(scaling_views.comm_table(metrics)))

# %% [markdown]
# ## What a collective costs, and a model of the step built on it
# The overhead above mixes communication with the ranks' contention. Here each collective is timed
# on its own over message sizes (4 KB-256 MB) and fitted as latency + size / bandwidth; the model
# T_N = s T_1 + (1 - o) C_N (contention s, overlap o, the strategy's collectives C_N from the fits)
# is fitted on two DDP runs and predicts the others, whose errors are its test. The report projects
# the full-size job to 1-64 GPUs with the same model (`lib.bench.projection`).

# %%
comm_metrics = comm.measure_collectives(worlds, repeats=comm_repeats, device=comm_device, threads=threads)
print(f"wrote {comm.record(comm_metrics, resolve(results_dir), run_name, threads)}")
display(pd.DataFrame(comm_model.fit_table(comm_metrics)))
model = comm_views.model_points(comm_metrics, metrics, None, comm_views.UNITS_TINY)
print(f"fitted on {comm_views.FIT_ON}: s = {model['s']:.2f}, o = {model['overlap']:.2f}")
display(pd.DataFrame(comm_views.validation_table(model)))

# %% [markdown]
# ## More ranks or more threads?
# On one small CPU the alternative to a second rank is a second thread in one process. Which
# is faster is a measurement, not a rule: the table says it for this machine, pair by pair, and
# says "no difference measured" where the interval holds 1.

# %%
display(pd.DataFrame(scaling_views.ranks_vs_threads(metrics)))
