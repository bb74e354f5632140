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
# # 03 · CPU baseline and CLIP zero-shot: image-modality classification
#
# Before training a captioner on GPUs: how far do cheap methods get on a simpler question,
# which imaging modality a figure shows? Three classifiers on one train/test split:
#
# - **hand-crafted features + XGBoost** (the seed's CPU baseline): colour, intensity, edge,
#   texture and frequency statistics extracted in parallel with joblib, then XGBoost `hist`;
# - **CLIP zero-shot**: no training, each class described by prompt templates;
# - **CLIP linear probe**: logistic regression on the frozen encoder's image embeddings.
#
# and how the CPU baseline scales with `n_jobs`. Labels are the dataset's `modality` field,
# or for PMC-OA (which has none) the one modality a caption names; captions naming none or
# several are skipped and counted. `python -m lib baseline` does the same from a shell.

# %% tags=["parameters"]
profile = "default"
results_dir = "results"
figures_dir = "figures"
run_name = "default"
seed = 0
n_jobs = [1, 2]  # joblib workers / XGBoost threads to time; 1 is the reference
rounds = 200  # XGBoost boosting rounds

# %%
import pandas as pd
from IPython.display import Image, display

from lib.baseline.classify import figures, table
from lib.config import resolve
from lib.jobs.baseline import baseline_job
from lib.settings import BaselineConfig

cfg = BaselineConfig(n_jobs=tuple(n_jobs), rounds=rounds, seed=seed)
metrics, path = baseline_job(profile, cfg=cfg, run_name=run_name, results_dir=results_dir)
print(f"wrote {path}")
display(pd.DataFrame(metrics["labels"]).T)

# %% [markdown]
# ## The three classifiers
# Accuracy and macro-F1 (every class weighs the same) on the held-out split; a classifier that
# always answers the commonest class would reach the accuracy printed below the table.

# %%
display(pd.DataFrame(table(metrics)).set_index("classifier").round(3))
print(f"commonest class alone: accuracy {metrics['majority_class_accuracy']:.3f}")

# %% [markdown]
# Zero-shot depends on wording: each prompt template alone, against their ensemble.

# %%
zs = metrics["classifiers"]["clip_zero_shot"]
display(
    pd.Series({**zs["templates"], "ensemble of all": zs["accuracy"]}, name="accuracy").to_frame().round(3)
)

# %% [markdown]
# ## Where they err
# Row-normalised confusion matrices: rows are the true modality.

# %%
paths = figures(metrics, resolve(figures_dir))
display(Image(filename=str(paths[0])))

# %% [markdown]
# ## Scaling with n_jobs
# Feature extraction is one joblib task per chunk of images (loky processes, started before
# the clock); XGBoost `hist` builds each tree with `n_jobs` threads. Efficiency is speed-up
# divided by `n_jobs`. The predictions do not depend on `n_jobs`.

# %%
for key in ("features", "xgboost"):
    display(pd.DataFrame(metrics["scaling"][key]).set_index("n_jobs").round(3).rename_axis(key))
print("same predictions at every n_jobs:", metrics["scaling"]["same_predictions"])
display(Image(filename=str(paths[1])))
