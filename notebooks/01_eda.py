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
# # 01 · Exploratory data analysis of PMC-OA
#
# What the figure–caption pairs look like before anything is trained: which pairs are
# usable (and why the others are not), caption lengths, the medical vocabulary,
# imaging modalities, image sizes and colour modes.
#
# On the `default` profile this runs on the embedded, generated PMC-OA-format data;
# on `cluster` on the real release. Same code: `lib.data.validate` and `lib.eda`.

# %% tags=["parameters"]
profile = "default"
data_dir = "data/default"
work_dir = "outputs/default/work"
results_dir = "results"
figures_dir = "figures"
run_name = "default"
seed = 0
workers = 2
top_k = 25

# %%
import pandas as pd
from IPython.display import Image, display

from lib.config import resolve, shown
from lib.data import eda
from lib.data.validate import validate
from lib.results import write_results

data, work = resolve(data_dir), resolve(work_dir)
report_path, index_path = work / "validate_report.json", work / "index.jsonl"

# %% [markdown]
# ## Validation: every pair checked once
# Skipped pairs are counted with a reason; images in a convertible mode (CMYK, 16-bit,
# palette, alpha) are kept and converted. The clean index is what later stages read.

# %%
report = validate(data, report_path, index_path, workers=workers)
print(f"kept {report['kept']} pairs, skipped {report['skipped_count']}")
display(
    pd.DataFrame(
        [{"outcome": "skipped", "reason": r, "pairs": n} for r, n in report["reasons"].items()]
        + [{"outcome": "converted", "reason": c, "pairs": n} for c, n in report["conversions"].items()],
        columns=["outcome", "reason", "pairs"],
    )
)

# %% [markdown]
# ## Captions, vocabulary, modalities, images
# `caption_tokens` counts each caption in BioMistral-7B's tokens (Mistral-7B v0.1's SentencePiece model,
# shipped in the `mistral-common` wheel, so the count is exact offline), `<s>` and `</s>` included: what
# one training sequence holds, and the distribution `python -m lib bench padding` draws lengths from.

# %%
summary, arrays = eda.summarize(index_path, top_k=top_k)
display(
    pd.DataFrame(
        {
            k: summary[k]
            for k in ("caption_chars", "caption_words", "caption_tokens", "image_width", "image_height")
        }
    ).T
)
display(pd.DataFrame(summary["top_terms"], columns=["term", "count"]).head(15))
display(
    pd.DataFrame(
        {
            "modality": list(summary["modalities"]),
            "pairs": list(summary["modalities"].values()),
        }
    )
)
display(pd.DataFrame(summary["colour_modes"]).T)

# %%
paths = eda.figures(summary, resolve(figures_dir))
for p in paths:
    display(Image(filename=str(p)))

# %% [markdown]
# ## Results file
# The numbers above, with config, git commit, seed, hardware and library versions.

# %%
metrics = {
    **summary,
    "validation": {k: report[k] for k in ("kept", "skipped_count", "reasons", "conversions")},
}
config = {"profile": profile, "data_dir": shown(data), "top_k": top_k, "workers": workers}
out = write_results(resolve(results_dir), "eda", run_name, metrics, config, seed)
print(f"wrote {out}")
