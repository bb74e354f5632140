"""The report's blocks of the study's parts, one function each, from the results files alone: which part
is recorded, preprocessing, the baseline, DDP, FSDP, model parallelism and the evaluation."""

from __future__ import annotations

from lib.baseline import classify as baseline_run
from lib.bench import encoder as encoder_bench
from lib.bench import preprocess as bench
from lib.bench import scaling_views
from lib.bench import tower as tower_bench
from lib.bench.scaling import has_pairs
from lib.evaluation import ablation_views
from lib.evaluation.views import (
    diversity_table,
    facts_table,
    modality_table,
    probe_table,
    scores_table,
    throughput_table,
)
from lib.report.markdown import missing, source, table
from lib.report.seed_study import gpu_runs


def status(res: dict, run: str) -> str:
    parts = [
        ("EDA", "01_eda", f"eda/{run}"),
        ("Dask preprocessing", "02_preprocessing", f"preprocess/{run}"),
        ("CPU baseline, zero-shot", "03_baselines", f"baseline/{run}"),
        ("DDP", "04_ddp", f"scaling/{run}-ddp"),
        ("FSDP", "05_fsdp", f"scaling/{run}-fsdp"),
        ("Model parallel", "06_model_parallel", f"scaling/{run}-model-parallel"),
        ("Training", "07_evaluation", f"training/{run}-single"),
        ("Evaluation", "07_evaluation", f"evaluation/{run}"),
        ("Recipe ablation", "08_ablation", f"ablation/{run}"),
    ]
    rows = []
    for part, nb, key in parts + [
        ("Full-size training throughput", "python -m lib bench lm", "lm_throughput/gpu")
    ]:
        hits = gpu_runs(res) if key == "lm_throughput/gpu" else [res[key]] if key in res else []
        files = (
            ", ".join(f"`{r['_path']}`" for r in hits)
            if len(hits) < 3
            else f"`results/{key.split('/')[0]}/` ({len(hits)} runs)"
        )
        rows.append(
            {
                "part": part,
                "notebook": f"`{nb}`",
                "results": files or "–",
                "hardware": ", ".join(sorted({r["provenance"]["hardware"]["tag"] for r in hits})) or "–",
            }
        )
    return table(rows)


def preprocess(res: dict, run: str) -> str:
    r = res.get(f"preprocess/{run}")
    if not r:
        return missing("02_preprocessing")
    m, two = r["metrics"], r["metrics"].get("two_workers_vs_one")
    return (
        table(bench.table(m))
        + f"\nBare OpenCV decode + resize on one core: {m['floor_opencv']['img_per_s']:.0f} img/s; "
        f"one worker reaches {m['one_worker_vs_floor']:.2f}x of it, "
        + (f"two workers {two:.2f}x one.\n\n" if two is not None else "one worker measured.\n\n")
        + source(r)
        + large_images(res)
    )


def _one_worker(m: dict) -> str:
    """One worker against the full-decode loop: the ratio of medians, and the range of the ratios of
    repeats run in turn (worker k beside floor k)."""
    one = next(x for x in m["runs"] if x["workers"] == 1)
    paired = [
        w["images"] / w["process_s"] / f["img_per_s"]
        for w, f in zip(one["samples"], m["floor_opencv"]["samples"], strict=True)
    ]
    return (
        f"{m['one_worker_vs_floor']:.2f}x (medians; repeat by repeat {min(paired):.2f}-{max(paired):.2f}x, "
        f"{len(paired)} repeats)"
    )


def large_images(res: dict) -> str:
    """Large figures (1-4 megapixels), decoded at reduced size where the format allows it: every format
    (``large-images``), and the JPEGs alone (``large-jpeg``)."""
    r, jpeg = res.get("preprocess/large-images"), res.get("preprocess/large-jpeg")
    if not r:
        return ""
    m = r["metrics"]
    full, fast = m["floor_opencv"]["formats"], m["floor_reduced_decode"]["formats"]
    rows = [
        {
            "format": k,
            "full decode img/s": full[k]["img_per_s"],
            "reduced decode img/s": fast[k]["img_per_s"],
            "reduced / full": m["reduced_vs_full"][k],
        }
        for k in full
    ]
    alone = f"; on the JPEGs alone, {_one_worker(jpeg['metrics'])}" if jpeg else ""
    return (
        f"\nLarge figures ({', '.join(full)}; bare OpenCV loop on one core, full-size decode against "
        "decoding a JPEG at 1/2-1/8 size where that still gives at least the size it is resized to):\n\n"
        + table(rows)
        + f"\nOne preprocessing worker against the full-decode loop: on all of them {_one_worker(m)}"
        f"{alone}.\n\n" + source(*([r, jpeg] if jpeg else [r]))
    )


def baseline(res: dict, run: str) -> str:
    r = res.get(f"baseline/{run}")
    if not r:
        return missing("03_baselines")
    m = r["metrics"]
    scaling = [
        {"stage": k, **{c: v for c, v in row.items()}}
        for k in ("features", "xgboost")
        for row in m["scaling"][k]
    ]
    return (
        table(baseline_run.table(m))
        + f"\nCommonest class alone: accuracy {m['majority_class_accuracy']:.3f}.\n\n"
        + table(scaling)
        + "\n"
        + source(r)
    )


def _scaling(res: dict, key: str, notebook: str, tables) -> str:
    r = res.get(key)
    if not r:
        return missing(notebook)
    if not has_pairs(r["metrics"]):
        return (
            f"_`{r['_path']}` was recorded before repeats were kept in pairs: run notebook `{notebook}` "
            f"again (`python -m lib run {notebook[:2]}`)._\n"
        )
    jobs = [j for run in r["metrics"]["runs"] for j in run.get("jobs", [])]
    resumed = sum(j["resumed"] for j in jobs)
    how = f"{r['metrics']['repeats']} repeats of each configuration, run in turn and compared per pair; " + (
        f"{resumed} of the {len(jobs)} jobs come from an interrupted run of this same sweep (resumed)."
        if resumed
        else f"all {len(jobs)} jobs ran in this sweep."
    )
    return "\n".join(table(t(r["metrics"])) for t in tables) + f"\n{how}\n\n" + source(r)


def ddp(res: dict, run: str) -> str:
    return _scaling(
        res,
        f"scaling/{run}-ddp",
        "04_ddp",
        (scaling_views.table, scaling_views.comm_table, scaling_views.ranks_vs_threads),
    )


def fsdp(res: dict, run: str) -> str:
    return _scaling(
        res, f"scaling/{run}-fsdp", "05_fsdp", (scaling_views.fsdp_vs_ddp, scaling_views.memory_table)
    )


def model_parallel(res: dict, run: str) -> str:
    return _scaling(
        res, f"scaling/{run}-model-parallel", "06_model_parallel", (scaling_views.pipeline_table,)
    )


def _facts(m: dict) -> str:
    rows = facts_table(m)
    if not rows:
        return "No factual scores: this data records no scene facts (real data has none).\n\n"
    tol = m["model"]["facts"]["size_tolerance"]
    return (
        "Factual correctness against the facts of each generated scene (the default's counterpart of "
        "CheXbert / RadGraph F1 in radiology report generation; real data has no such facts): each caption "
        "is read with the generator's grammar, and a stated fact is right when the scene has it, a size "
        f"within {tol:.0%}. Categorical F1 covers modality, region, finding and location; the hallucination "
        "rate is the share of captions stating an abnormality the image does not have. The references' row "
        "checks the reader.\n\n" + table(rows) + "\n" + _probe(m)
    )


def _probe(m: dict) -> str:
    rows = probe_table(m)
    if not rows:
        return ""
    return (
        "What the frozen encoder's features hold: a logistic-regression probe per categorical fact, fit on "
        "the training split's cached features and scored on these pairs (a location only where the finding "
        "has one), beside how often each captioner states the fact right (recall). A caption states a fact "
        "only as well as the features hold it. The probe reads them linearly, so it is a reference, not a "
        "bound: the projector and nearest-neighbour retrieval read them non-linearly and can read more.\n\n"
        + table(rows)
        + "\n"
    )


def _decoding(config: dict) -> str:
    """How the evaluated captions were generated, from the evaluation's recorded settings."""
    if config.get("top_p", 1.0) < 1:
        search = f"nucleus sampling (p={config['top_p']}, seeded)"
    elif config.get("num_beams", 1) > 1:
        search = f"beam search ({config['num_beams']} beams)"
    else:
        search = "greedy decoding"
    extras = [
        f"no repeated {config['no_repeat_ngram']}-grams" if config.get("no_repeat_ngram") else "",
        f"repetition penalty {config['repetition_penalty']}"
        if config.get("repetition_penalty", 1) != 1
        else "",
    ]
    return ", ".join([search, *filter(None, extras)])


def evaluation(res: dict, run: str) -> str:
    r, t = res.get(f"evaluation/{run}"), res.get(f"training/{run}-single")
    if not r:
        return missing("07_evaluation")

    m = r["metrics"]
    trained = ""
    if t:
        x = t["metrics"]
        trained = (
            f"The captioner: {x['steps']} steps at {x['step_s']:.2f} s each, {x['samples_per_s']:.1f} "
            f"samples/s, final loss {x['final_loss']:.3f}.\n\n" + source(t) + "\n"
        )
    return (
        trained
        + f"Test split, {m['pairs']} images, captioned by {_decoding(r['config'])}"
        + (
            f"; computing what follows (all but the probe) took {m['seconds']:.0f} s"
            if "seconds" in m
            else ""
        )
        + ". Scores as "
        "pycocoevalcap gives them (BLEU, METEOR, "
        "ROUGE-L 0-1; CIDEr-D 0-10) with 95% bootstrap intervals over the test images (CIDEr-D's document "
        f"frequencies from the whole test set). SPICE: {m['spice']}. Reference vs reference: "
        f"{m['reference_agreement'].get('note') or m['reference_agreement']}.\n\n"
        + table(scores_table(m))
        + "\n"
        + _facts(m)
        + table(diversity_table(m))
        + "\nBy modality (CIDEr-D's document frequencies within each modality):\n\n"
        + table(modality_table(m))
        + "\n"
        + table(throughput_table(m))
        + f"\nBatched decoding with the KV cache: {m['throughput']['speedup']:.1f}x one image at a time "
        "without it."
        + (
            " The captions are sampled, and each way draws other random numbers: the last column is no "
            "check of the cache here (greedy decoding gives the same captions all three ways)."
            if r["config"].get("top_p", 1.0) < 1
            else ""
        )
        + "\n\n"
        + source(r)
    )


def ablation(res: dict, run: str) -> str:
    r = res.get(f"ablation/{run}")
    if not r:
        return missing("08_ablation")
    m = r["metrics"]
    return (
        _same_encoder_as_07(res, run, m.get("weights"))
        + f"Each row changes one setting of the recipe, trains {m['steps']} steps (the training-length rows "
        f"scale that) and is scored on the {m['split']} split with 95% bootstrap intervals "
        f"({m['resamples']} resamples; METEOR left out). `sets` is the row's change in the profile's "
        "keys."
        + (f" The rows took {m['seconds'] / 60:.0f} min in all." if m.get("seconds") else "")
        + "\n\n"
        + table(ablation_views.table(m))
        + "\n![ablation](figures/08_ablation.png)\n\n"
        + source(r)
    )


def _same_encoder_as_07(res: dict, run: str, weights: dict | None) -> str:
    """A warning where the ablation's rows were trained on another encoder (or LM) than notebook 07's
    captioner, or where either file does not say which: its ranking is then for that other model."""
    ev = res.get(f"evaluation/{run}")
    if not ev:
        return ""
    if isinstance(weights, list):
        return "**Its rows were trained on more than one encoder or LM.**\n\n"
    if weights is None or "weights" not in ev["config"]:
        return "**Not known to be the encoder notebook 07 evaluates: a results file does not say.**\n\n"
    diff = [k for k in ("encoder", "lm") if weights.get(k) != ev["config"]["weights"][k]]
    return f"**Recorded with another {' and '.join(diff)} than notebook 07's captioner.**\n\n" if diff else ""


def _pretrained(ev: dict | None) -> str:
    """Which pre-training the study's own encoder (notebook 07's) had."""
    p = (ev or {}).get("config", {}).get("encoder_pretraining")
    if not p:
        return ""
    generated = p["generated_pairs"] or 0  # a record from before the corpus: none
    return (
        f" The study's encoder (notebook 07's) was pre-trained on {p['pairs']:,} pairs of the training split "
        f"plus {generated:,} generated ones, for {p['pretrain']['epochs']} epochs ({p['steps']} steps)."
    )


def encoder(res: dict, run: str) -> str:
    r = res.get(f"encoder/{run}")
    if not r:
        return (
            "_Not recorded: `python -m lib bench encoder` measures the embedded default's tiny encoder "
            "(its data records scene facts)._\n"
        )
    m, c = r["metrics"], r["config"]
    p = c["pretrain"]
    return (
        f"Each run pre-trains the tiny CLIP (batch {p['batch_size']}, peak learning rate {p['lr']}, seed "
        f"{p['seed']}) on the training split plus the generated pairs shown, for the passes shown; then a "
        "linear probe per fact is fit on the training split's frozen features and scored on the "
        f"{m['split']} split (accuracy [95% bootstrap interval], {c['resamples']} resamples; a location "
        f"only where the finding has one).{_pretrained(res.get(f'evaluation/{run}'))}\n\n"
        + table(encoder_bench.table(m))
        + "\n"
        + source(r)
    )


def tower(res: dict, run: str) -> str:
    r = res.get(f"tower/{run}")
    if not r:
        return "_Not recorded: `python -m lib bench tower` measures the embedded default's encoder tower._\n"
    m, c = r["metrics"], r["config"]
    return (
        f"Each run trains one tower from scratch (batch {c['batch_size']}, peak learning rate {c['lr']}, "
        f"one-cycle, seed {c['seed']}: the encoder pre-training's) with a linear head per fact, the scene "
        f"facts as labels, on the training split plus {c['generated']:,} generated pairs ({m['pairs']:,} "
        f"images), and scores it on the {m['split']} split (accuracy [95% bootstrap interval], "
        f"{c['resamples']} resamples; a location only where the finding has one, read wrong where the "
        f"tower answers none). vit: {c['towers']['vit']}; cnn: {c['towers']['cnn']}.\n\n"
        + table(tower_bench.table(m))
        + "\n"
        + source(r)
    )
