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
# # 07 · Evaluating the captions
#
# A trained captioner describes every test figure; pycocoevalcap scores the descriptions against
# the published captions: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D after its PTB tokenizer, on its
# 0-1 scale (papers often print ×100), with seeded 95% bootstrap intervals. SPICE needs Stanford
# CoreNLP, which pycocoevalcap downloads at first use: offline it is reported unavailable.
#
# Scores mean little alone, so the same split gets reference points: the most frequent training
# caption (what a collapsed model says), the caption of the nearest training image by encoder
# feature (retrieval, no generation at all) and, where images have several references, one
# reference against the others. Then diversity: the seed reported "30% mode collapse" without a
# definition; here it is the share of generated captions identical to another one, beside
# distinct-n, the vocabulary used and generic answers. `python -m lib evaluate` does the same.

# %% tags=["parameters"]
profile = "default"
results_dir = "results"
figures_dir = "figures"
run_name = "default"
seed = 0
train_run = "outputs/default/train"  # a train run's out folder: trained here when it has no finished run
train_steps = 0  # 0: the profile's steps
blind_run = "outputs/default/train-blind"  # the same recipe without images; "" leaves it out
blind_image = "zeros"  # what the blind captioner sees: zeros, or shuffled (another pair's image)
split = "test"
beams = 1
top_p = 1.0  # below 1: nucleus sampling (seeded) instead of search (notebook 08 scores 0.5, 0.7, 0.9)
resamples = 200  # bootstrap resamples of the 95% intervals
throughput_images = 32  # images captioned one at a time without cache (the slow reference)

# %%
import pandas as pd
from IPython.display import Image, display

from lib.config import resolve
from lib.evaluation import views
from lib.jobs.evaluate import evaluate_job
from lib.jobs.train import ensure_trained
from lib.settings import EvalConfig
from lib.training.checkpoint import latest

# %% [markdown]
# ## The trained captioner
# Training is the one job every part uses (`python -m lib train`), run here only when `train_run`
# holds no finished run; an interrupted one resumes from its newest checkpoint.

# %%
out = ensure_trained(train_run, profile, train_steps or None)
print("finished run, newest checkpoint", latest(out))
blind = None
if blind_run:  # the same recipe and steps, trained with no image
    blind = ensure_trained(blind_run, profile, train_steps or None, ("--image", blind_image))

# %%
cfg = EvalConfig(
    split=split,
    num_beams=beams,
    top_p=top_p,
    resamples=resamples,
    seed=seed,
    throughput_images=throughput_images,
)
record, path = evaluate_job(
    str(out),
    str(out / f"eval-{split}"),
    profile,
    cfg=cfg,
    run_name=run_name,
    figures_dir=figures_dir,
    results_dir=results_dir,
    blind=str(blind) if blind else None,
)
print(f"wrote {path}")

# %% [markdown]
# ## Scores against the reference points
# Intervals are 95% percentile bootstrap intervals over resampled test images.

# %%
display(
    pd.DataFrame(views.scores_table(record))
    .set_index("captions from")
    .rename_axis(f"{record['split']}, {record['pairs']} images")
)
print("reference vs reference:", record["reference_agreement"])
print("SPICE:", record["spice"])

# %% [markdown]
# ## Factual correctness
# Categorical F1 covers modality, region, finding and location; a size is right within the tolerance
# recorded. The references' row checks the reader (it must be 1).

# %%
facts = pd.DataFrame(views.facts_table(record))
display(facts.set_index("captions from").round(3) if len(facts) else "this data records no scene facts")

# %% [markdown]
# What the frozen features hold: a linear probe per categorical fact (fit on the training split's cached
# features), beside how often each captioner states the fact right. The probe reads the features
# linearly: a reference, not a bound (the projector and retrieval read them non-linearly).

# %%
probe = pd.DataFrame(views.probe_table(record))
display(probe.set_index("fact") if len(probe) else "this data records no scene facts")

# %% [markdown]
# ## Diversity and mode collapse
# `identical_share`: captions equal to another caption of the split; `top_share`: the single
# commonest one; `vocab_share`: distinct words used over the references' distinct words;
# `generic_share`: captions that are one of the 10 commonest training captions word for word.

# %%
display(pd.DataFrame(views.diversity_table(record)).set_index("captions from").round(3))

# %% [markdown]
# ## By modality

# %%
display(pd.DataFrame(views.modality_table(record)).set_index("modality"))
display(Image(filename=str(resolve(figures_dir) / "07_per_modality.png")))

# %% [markdown]
# ## Generation throughput
# Batched decoding with the KV cache (how the captions above were made) against one image at a time,
# with and without the cache. Greedy and beam search give the same captions all three ways; sampled
# captions are other draws (the batch changes which random numbers each caption gets).

# %%
t = record["throughput"]
display(pd.DataFrame(views.throughput_table(record)).set_index("decoding").round(3))
print(f"batched KV cache: {t['speedup']:.1f}x one at a time without cache ({t['images']} images)")

# %% [markdown]
# ## Gallery

# %%
display(Image(filename=str(resolve(figures_dir) / "07_gallery.png")))
