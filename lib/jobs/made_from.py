"""What a captioner run is made from: its recipe, the model it starts from (the spec, the frozen
encoder's weights, the LM's weights) and the pairs it is trained on.

A run folder records it in ``made_from.json`` before its first step, and its ``train.json`` carries it.
A run made from anything else is never taken for this one: a finished run is trained again, not reused;
a checkpoint is not resumed into a run on other features; a captioner is not evaluated on features of
an encoder it was not trained on (the projector's weights mean nothing there).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from lib.data.preprocess import split_digest
from lib.models import files_digest
from lib.models.build import local_spec

RECORD = "made_from.json"
# settings that change how a run is kept or watched, not what it learns
BOOKKEEPING = ("ckpt_every", "keep_ckpts", "profile_comm", "log_every")
# what a checkpoint's weights mean something with: the same spec, encoder and LM
MODEL = ("model", "encoder", "lm")


def model_of(art) -> dict:
    """The model a captioner of ``art`` (``lib.jobs.artefacts.Artefacts``) is trained and evaluated with:
    its spec, the encoder's weights (as the feature cache keys them) and the LM's. A hub id stands for
    itself (pinned by name); a local folder by a digest of its files, so a model rebuilt in the same
    folder is another model."""
    encoded = json.loads((art.features / "encode.json").read_text())
    lm = local_spec(art.spec.lm)
    return {
        "model": _as_recorded(asdict(art.spec)),
        "encoder": encoded["weights"] or encoded["encoder"],
        "lm": files_digest(lm) if Path(lm).is_dir() else lm,
    }


def encoder_pretraining(art) -> dict | None:
    """How the default's tiny encoder was pre-trained (its ``pretrain.json``: settings, pairs, generated
    pairs, steps); None for a hub or local encoder."""
    if "encoder" not in art.settings.tiny:
        return None
    folder = Path(local_spec(art.spec.encoder).removeprefix("local-dir:"))
    rec = json.loads((folder / "pretrain.json").read_text())
    return {k: rec.get(k) for k in ("pretrain", "pairs", "generated_pairs", "steps")}


def made_from(art, cfg, source: str) -> dict:
    """What a run of the recipe ``cfg`` (``TrainConfig``) on ``art``, reading ``source``, is made from."""
    return {
        "train": _as_recorded({k: v for k, v in asdict(cfg).items() if k not in BOOKKEEPING}),
        "source": source,
        **model_of(art),
        "trained_on": split_digest(art.preprocessed, "train"),
    }


def _as_recorded(settings: dict) -> dict:
    """As the record reads back (tuples become lists), so a setting compares equal to its record."""
    return json.loads(json.dumps(settings))


def recorded(run: str | Path) -> dict | None:
    """What the run folder ``run`` was made from, or None where it has no record."""
    f = Path(run) / RECORD
    return json.loads(f.read_text()) if f.is_file() else None


def run_of(path: str | Path) -> Path | None:
    """The run folder a checkpoint path is in (a run folder, its ckpt/ or a step-N folder), or None."""
    path = Path(path)
    return next((p for p in (path, *list(path.parents)[:2]) if (p / RECORD).is_file()), None)


def differences(old: dict, new: dict, keys: tuple[str, ...] | None = None) -> list[str]:
    """What ``old`` and ``new`` differ in ("train.steps", "encoder"), over ``keys`` (default: all)."""
    out = []
    for k in keys or tuple(new):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{f}" for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        elif a != b:
            out.append(k)
    return out


def mismatch(old: dict | None, new: dict, keys: tuple[str, ...] | None = None) -> str | None:
    """Why a run recorded as ``old`` is not one made from ``new`` (over ``keys``), or None when it is."""
    if old is None:
        return f"it has no record of what it was made from ({RECORD})"
    diff = differences(old, new, keys)
    return f"it was trained from another {', '.join(diff)}" if diff else None


def same_model(checkpoint: str | Path, art) -> None:
    """Raise ValueError when the run ``checkpoint`` is in was trained with another model than ``art``'s:
    its weights would be loaded onto features they were never trained on. A checkpoint without a run
    record (shared on its own) is loaded as the profile's model, and the shapes are checked then."""
    run = run_of(checkpoint)
    if run is None:
        return
    why = mismatch(recorded(run), model_of(art), MODEL)
    if why:
        raise ValueError(
            f"cannot evaluate {checkpoint}: {why} than this profile has ({run / RECORD}), so its captions "
            "here would be made from features it never saw. Train a captioner on this profile, or "
            "evaluate with the profile it was trained with"
        )
