"""``python -m lib ablate``: the captioning recipe found by ablation. Each row changes one setting of the
profile's recipe (visual tokens, training length, LoRA rank and targets, label smoothing, batching,
decoding), trains it with the same `train` job every part uses, and scores its captions on the
validation split (the recipe is chosen there; notebook 07 then scores the chosen one once on test).

A row's run is a real profile: the profile's folder copied with the row's settings written into its
``train.yaml``, trained by ``python -m lib train --params-dir`` in a child process. Rows that differ only
in decoding share one trained run. Each row's scores are kept beside its run, keyed by what made them,
so an interrupted ablation resumes at the first row it had not scored.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from lib.config import resolve, shown
from lib.data.pmcoa import recorded_facts
from lib.evaluation.ablation_views import figure
from lib.evaluation.captioning import caption
from lib.evaluation.evaluate import assess, references
from lib.jobs.artefacts import for_profile, settings
from lib.jobs.train import ensure_trained
from lib.models.build import build
from lib.results import write_json_atomic, write_results
from lib.settings import AblationConfig
from lib.training.checkpoint import load_weights
from lib.training.data import CaptionData

# The four search settings every row records (EvalConfig's defaults: greedy).
GREEDY = {"num_beams": 1, "no_repeat_ngram": 0, "repetition_penalty": 1.0, "top_p": 1.0}


@dataclass(frozen=True)
class Row:
    name: str
    group: str  # what the row varies
    model: dict = field(default_factory=dict)  # ModelSpec keys, as train.yaml's top level holds them
    train: dict = field(default_factory=dict)  # TrainConfig fields
    length: float = 1.0  # training steps as a multiple of the ablation's
    decoding: dict = field(default_factory=dict)  # over GREEDY


def tokens(n: int) -> dict:
    """The encoder's patch tokens, pooled to ``n`` over the patch grid."""
    return {"encoder_output": "tokens", "visual_tokens": n}


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ROWS = (
    Row("recipe", "recipe"),
    Row("pooled embedding", "visual tokens", model={"encoder_output": "pooled"}),
    *(
        Row(f"{n} patch tokens{' (all)' if n == 36 else ''}", "visual tokens", model=tokens(n))
        for n in (4, 16, 36)
    ),
    Row("1/4 of the steps", "training length", length=0.25),
    Row("1/2 of the steps", "training length", length=0.5),
    Row("2x the steps", "training length", length=2.0),
    Row("LoRA r=4", "LoRA", model={"lora": {"r": 4, "alpha": 8}}),
    Row("LoRA r=64", "LoRA", model={"lora": {"r": 64, "alpha": 128}}),
    # both target sets: the one the recipe has shares its run (same train.yaml), the other is trained
    Row("LoRA on q_proj, v_proj", "LoRA", model={"lora": {"targets": ["q_proj", "v_proj"]}}),
    Row("LoRA on every linear layer", "LoRA", model={"lora": {"targets": ALL_LINEAR}}),
    Row("label smoothing 0.1", "label smoothing", train={"label_smoothing": 0.1}),
    # both orders: the one the recipe has shares its run; grouping by length is a speed setting (less
    # padding computed), these rows say what it costs the captions
    Row("batches of similar lengths", "batching", train={"group_by_length": True}),
    Row("batches in random order", "batching", train={"group_by_length": False}),
    Row("beam 3, no repeated 3-grams", "decoding", decoding={"num_beams": 3, "no_repeat_ngram": 3}),
    *(Row(f"nucleus p={p}", "decoding", decoding={"top_p": p}) for p in (0.5, 0.7, 0.9)),
    Row("repetition penalty 1.2", "decoding", decoding={"repetition_penalty": 1.2}),
)


def select(names: list[str] | tuple[str, ...]) -> tuple[Row, ...]:
    """The rows named (all of them when none are), in ROWS' order; an unknown name is an error."""
    unknown = set(names) - {r.name for r in ROWS}
    if unknown:
        raise ValueError(f"no ablation row {sorted(unknown)} (rows: {', '.join(r.name for r in ROWS)})")
    return tuple(r for r in ROWS if not names or r.name in names)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


def _changes(have, value) -> bool:
    """Whether setting ``value`` (a dict: over ``have``'s keys) changes the setting ``have``."""
    return (_merge(have or {}, value) if isinstance(value, dict) else value) != have


def row_params(
    profile: str, params_dir: str | None, row: Row, steps: int, scratch: Path
) -> tuple[Path, dict]:
    """The profile's folder with the row's model and recipe written into its train.yaml, under
    ``scratch/params/<digest>``; and the train.yaml it wrote."""
    s = settings(profile, params_dir)
    folder = s.profile.folder
    own = yaml.safe_load((folder / "train.yaml").read_text()) or {}
    # a change the profile already has (set in profile.yaml, say) is no change: the row shares the
    # recipe's run instead of training a copy of it
    trained = _merge(own, {k: v for k, v in row.model.items() if _changes(s.params.get(k), v)})
    recipe, n = own.get("train") or {}, max(1, round(steps * row.length))
    changed = {k: v for k, v in row.train.items() if _changes(getattr(s.train, k), v)}  # as resolved
    # the projector-only stage keeps its share of the run
    align = (
        {"align_steps": round(recipe["align_steps"] * n / recipe["steps"])} if "align_steps" in recipe else {}
    )
    trained["train"] = {**recipe, **changed, "steps": n, **align}
    key = hashlib.sha256(json.dumps(trained, sort_keys=True).encode()).hexdigest()[:10]
    root = scratch / "params" / key
    target = root / folder.name
    if not (target / "train.yaml").exists():
        tmp = root / f".{folder.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        (tmp / "train.yaml").write_text(yaml.safe_dump(trained, sort_keys=False))
        tmp.rename(target)
    return root, trained


def score_row(
    profile: str, params: Path, run: Path, split: str, decoding: dict, resamples: int, seed: int
) -> dict:
    """A trained row's captions of ``split``: CIDEr-D and the other caption scores, collapse and
    factual correctness, each with seeded 95% intervals (METEOR is left out: the ablation's table and
    figure do not show it)."""
    art = for_profile(profile, str(params), progress=False)
    torch.manual_seed(seed)
    vlm, tok = build(art.spec)
    load_weights(vlm, run)
    test = CaptionData(art.features, split, tok)
    torch.manual_seed(seed)
    hyps, per_s = caption(vlm, test, **decoding)
    truth = recorded_facts(art.data, split) or None
    return {**assess(references(test), hyps, truth, resamples, seed, meteor=False), "captions_per_s": per_s}


def ablate(
    profile: str = "default",
    params_dir: str | None = None,
    cfg: AblationConfig | None = None,
    rows: tuple[Row, ...] = ROWS,
    progress: bool = True,
) -> dict:
    """Train and score every row (resuming); returns the record the results file holds."""
    cfg = cfg or AblationConfig()
    t0 = time.perf_counter()
    scratch = resolve(cfg.scratch or Path(settings(profile, params_dir).params["work_dir"]) / "ablation")
    out, made = [], []
    for row in tqdm(rows, desc="ablation", unit="row", disable=not progress):
        params, trained = row_params(profile, params_dir, row, cfg.steps, scratch)
        run = scratch / "runs" / params.name
        decoding = {**GREEDY, **row.decoding}
        # the row's training record stays beside its run, never in the study's results/training/; a run
        # made from another encoder, LM or data is trained again, and its scores with it
        ensure_trained(str(run), profile, options=("--results-dir", str(run)), params_dir=str(params))
        record = json.loads((run / "train.json").read_text())
        made.append(record["made_from"])
        key = {
            "train.yaml": trained,
            "decoding": decoding,
            **asdict(cfg),
            "scratch": None,
            "made_from": record["made_from"],
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        done = run / f"score-{digest}.json"
        if done.exists() and json.loads(done.read_text()).get("key") == key:
            scores = json.loads(done.read_text())["scores"]
        else:
            scores = score_row(profile, params, run, cfg.split, decoding, cfg.resamples, cfg.seed)
            write_json_atomic(done, {"key": key, "scores": scores})
        out.append(
            {
                **asdict(row),
                "steps": trained["train"]["steps"],
                "train.yaml": trained,
                "decoding": {**row.decoding},
                "search": decoding,
                "model_spec": asdict(settings(profile, str(params)).spec),  # what it trained, resolved
                "run": shown(run),
                "step_s": record["step_s"],  # mean seconds per training step
                "final_loss": record["final_loss"],
                "scores": scores,
            }
        )
    # every row's encoder and LM (one pair: the rows change the recipe, never the models' weights)
    weights = [{k: m[k] for k in ("encoder", "lm")} for m in made]
    return {
        "split": cfg.split,
        "steps": cfg.steps,
        "resamples": cfg.resamples,
        "weights": weights[0] if weights and all(w == weights[0] for w in weights) else weights,
        "rows": out,
        "seconds": time.perf_counter() - t0,  # this call's wall time (a resumed row: its loading)
    }


def ablation_job(
    profile: str = "default",
    params_dir: str | None = None,
    cfg: AblationConfig | None = None,
    run_name: str | None = None,
    figures_dir: str | None = None,
    results_dir: str | None = None,
    rows: tuple[Row, ...] = ROWS,
    progress: bool = True,
) -> tuple[dict, Path]:
    """``ablate``, recorded in ``results/ablation/<run>.json`` (and ``08_ablation.png``)."""
    cfg = cfg or AblationConfig()
    s = settings(profile, params_dir)
    record = ablate(profile, params_dir, cfg, rows, progress)
    if figures_dir:
        figure(record, resolve(figures_dir) / "08_ablation.png")
    path = write_results(
        resolve(results_dir) if results_dir else s.results_dir,
        "ablation",
        run_name or s.profile.run_name,
        record,
        {"profile": profile, **asdict(cfg), "rows": [asdict(r) for r in rows]},
        cfg.seed,
    )
    return record, path
