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
# # 08 · The recipe, by ablation
#
# Which settings make the captioner read the image? Each row changes one setting of the profile's
# recipe and is trained by the same `train` job every part uses, then scored on the **validation**
# split (the recipe is chosen there; notebook 07 scores the chosen one once, on test):
#
# - **visual tokens**: one pooled CLIP embedding against the encoder's patch tokens pooled over the
#   patch grid to 4, 16 or all of them (the tiny encoder has 6x6 = 36 patches; BiomedCLIP has
#   14x14, so on a cluster 49 is a 7x7 pooling);
# - **training length**: 1/4, 1/2 and 2x the row's steps (the projector-only stage keeps its share);
# - **LoRA**: rank 4 and 64 against 16, and adapters on q/v only against every linear layer (the
#   row the recipe already has shares its run);
# - **label smoothing** 0.1;
# - **batching**: batches of similar caption lengths (less padding computed: a speed setting) against
#   batches in random order (the row the recipe already has shares its run);
# - **decoding** of the recipe's model: beam search with 3-gram blocking, nucleus sampling
#   (p = 0.5, 0.7 and 0.9, seeded: how much of greedy's repetition sampling removes, at what cost),
#   a repetition penalty.
#
# Each row: CIDEr-D and the categorical fact F1 with 95% bootstrap intervals, the hallucination
# rate, the share of captions identical to another, and distinct-2. Rows train for fewer steps
# than the profile's recipe (`steps`, stated in the table) so the whole ablation fits a laptop;
# `python -m lib ablate` does the same from a shell.

# %% tags=["parameters"]
profile = "default"
results_dir = "results"
figures_dir = "figures"
run_name = "default"
seed = 0
steps = 300  # training steps of a row (the training-length rows scale it)
split = "valid"
resamples = 200  # bootstrap resamples of the 95% intervals
scratch = ""  # the rows' profiles and runs ("": <work_dir>/ablation)
rows = []  # names of the rows to run ([]: every row)

# %%
import pandas as pd
from IPython.display import Image, display

from lib.config import resolve
from lib.evaluation import ablation_views
from lib.jobs.ablation import ablation_job, select
from lib.settings import AblationConfig

cfg = AblationConfig(steps=steps, split=split, resamples=resamples, seed=seed, scratch=scratch or None)
record, path = ablation_job(
    profile, cfg=cfg, run_name=run_name, figures_dir=figures_dir, results_dir=results_dir, rows=select(rows)
)
print(f"wrote {path}")

# %% [markdown]
# ## Every row
# `sets` is what the row changes, in the profile's own keys (`train.yaml`'s model keys, `train.*`,
# and the decoding options of `evaluate`).

# %%
display(pd.DataFrame(ablation_views.table(record)).set_index("row"))

# %% [markdown]
# ## CIDEr-D and factual F1 with their intervals
# The grey band is the recipe row's interval: a row whose interval lies outside it differs.

# %%
display(Image(filename=str(resolve(figures_dir) / "08_ablation.png")))
