"""The findings on what the frozen encoder's features hold: the captions' per-fact recall against the
fact probes (``lib.evaluation.probe``), and what more pre-training bought them (``bench encoder``)."""

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


def encoder_runs(res: dict, run: str) -> str | None:
    """What longer pre-training or more pairs bought the tiny encoder's features (``bench encoder``): each
    run's finding and location probes against the first run's, by their intervals."""
    r = res.get(f"encoder/{run}")
    runs = r["metrics"]["runs"] if r else []
    if len(runs) < 2 or not all(x["probe"] for x in runs):
        return None

    def read(x: dict, fact: str, first: dict | None = None) -> str:
        p = x["probe"][fact]
        text = f"{p['accuracy']:.0%} [{p['ci95'][0]:.0%}, {p['ci95'][1]:.0%}]"
        if first:
            lo, hi = first["probe"][fact]["ci95"]
            text += (
                " (higher)" if p["ci95"][0] > hi else " (lower)" if p["ci95"][1] < lo else " (no difference)"
            )
        return text

    first = runs[0]
    said = [
        f"{x['steps']} steps on {x['pairs']:,} pairs, {read(x, 'finding', first)} and "
        f"{read(x, 'zone', first)}"
        for x in runs[1:]
    ]
    return (
        f"A linear probe on the tiny encoder's frozen features reads the finding and the location in "
        f"{read(first, 'finding')} and {read(first, 'zone')} of {r['metrics']['split']} pairs after "
        f"{first['steps']} pre-training steps on {first['pairs']:,} pairs; after {'; after '.join(said)} "
        "(each against the first, by their intervals)."
    )
