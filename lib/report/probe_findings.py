"""The findings on what the frozen encoder's features hold: the captions' per-fact recall against the
fact probes (``lib.evaluation.probe``), what more pre-training bought them (``bench encoder``), and what
the tower learns trained on the facts themselves (``bench tower``)."""

from __future__ import annotations


def against_probe(facts: dict, probe: dict | None) -> str:
    """The captions' finding and location recall against what a linear probe reads from the features."""
    read, said = [], []
    for fact, name in (("finding", "finding"), ("zone", "location")):
        if not probe or fact not in probe:
            continue
        p, recall = probe[fact], facts["per_fact"][fact]["recall"]
        ci = p.get("ci95")
        read.append(f"the {name} in {p['accuracy']:.0%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else ""))
        side = "" if not ci else "below" if recall < ci[0] else "above" if recall > ci[1] else "within"
        where = f" ({side} the probe's interval)" if side else ""
        said.append(f"{recall:.0%}{where}")
    if not read:
        return ""
    return (
        f"A linear probe on the frozen features reads {' and '.join(read)} of pairs; the captions state "
        f"{'them' if len(said) > 1 else 'it'} right in {' and '.join(said)}. "
    )


def _read(p: dict, against: dict | None = None) -> str:
    """An accuracy [95% interval], and where ``against`` is given, how it compares with that one's
    interval: higher, lower or no difference."""
    text = f"{p['accuracy']:.0%} [{p['ci95'][0]:.0%}, {p['ci95'][1]:.0%}]"
    if against:
        lo, hi = against["ci95"]
        text += " (higher)" if p["ci95"][0] > hi else " (lower)" if p["ci95"][1] < lo else " (no difference)"
    return text


def encoder_runs(res: dict, run: str) -> str | None:
    """What longer pre-training or more pairs bought the tiny encoder's features (``bench encoder``): each
    run's finding and location probes against the first run's, by their intervals."""
    r = res.get(f"encoder/{run}")
    runs = r["metrics"]["runs"] if r else []
    if len(runs) < 2 or not all(x["probe"] for x in runs):
        return None
    first = runs[0]
    f, z = first["probe"]["finding"], first["probe"]["zone"]
    said = [
        f"{x['steps']} steps on {x['pairs']:,} pairs, {_read(x['probe']['finding'], f)} and "
        f"{_read(x['probe']['zone'], z)}"
        for x in runs[1:]
    ]
    return (
        f"A linear probe on the tiny encoder's frozen features reads the finding and the location in "
        f"{_read(f)} and {_read(z)} of {r['metrics']['split']} "
        f"pairs after {first['steps']} pre-training steps on {first['pairs']:,} pairs; after "
        f"{'; after '.join(said)} (each against the first, by their intervals)."
    )


TOWER_NAMES = {"vit": "the same tower", "cnn": "a small ResNet (timm resnet10t)"}


def tower_runs(res: dict, run: str) -> str | None:
    """What the encoder's ViT tower learns of the finding and the location when trained on the facts
    themselves (``bench tower``), against the other runs, each by its intervals against the ViT's
    longest run."""
    r = res.get(f"tower/{run}")
    runs = r["metrics"]["runs"] if r else []
    vits = [x for x in runs if x["tower"] == "vit"]
    if not vits or len(runs) < 2 or not all({"finding", "zone"} <= set(x["scores"]) for x in runs):
        return None
    ref = max(vits, key=lambda x: x["steps"])
    f, z = ref["scores"]["finding"], ref["scores"]["zone"]
    said = [
        f"{TOWER_NAMES[x['tower']]} after {x['steps']} steps, {_read(x['scores']['finding'], f)} and "
        f"{_read(x['scores']['zone'], z)}"
        for x in runs
        if x is not ref
    ]
    return (
        "Trained from scratch on the scene facts themselves (not CLIP's recipe), the tiny CLIP's ViT image "
        f"tower reads the finding and the location in {_read(f)} and {_read(z)} of "
        f"{r['metrics']['split']} pairs after {ref['steps']} steps; {'; '.join(said)} (each against the "
        f"ViT's {ref['steps']} steps, by their intervals)."
    )
