"""Markdown for the report's generated blocks: a table from rows, a number as printed, and the source line
that ends every table (its results files, hardware, workload and commit)."""

from __future__ import annotations


def cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v).replace("|", "\\|")


def table(rows: list[dict]) -> str:
    if not rows:
        return "_(no rows)_\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def source(*recs: dict) -> str:
    """Where the numbers above come from: file, hardware, workload, commit."""
    lines: dict[str, list[str]] = {}  # files that share everything else go on one line
    for r in recs:
        git = r["provenance"]["git"]
        commit = (git.get("commit") or "unknown")[:7] + (" (uncommitted changes)" if git.get("dirty") else "")
        workload = r["config"].get("workload") or WORKLOADS.get(r["part"], r["part"])
        # benches have no profile
        profile = f"{r['config']['profile']} profile · " if r["config"].get("profile") else ""
        hardware = r["provenance"]["hardware"]["tag"]
        tail = f"{hardware} · {workload} · {profile}commit {commit} · {r['created'][:10]}"
        lines.setdefault(tail, []).append(f"`{r['_path']}`")
    return (
        "\n".join(f"<sub>Source: {', '.join(paths)} · {tail}</sub>  " for tail, paths in lines.items()) + "\n"
    )


WORKLOADS = {
    "preprocess": "decode + resize to 224 px + write uint8 shards",
    "baseline": "modality classification, train split -> test split",
    "evaluation": "captions of the test split, pycocoevalcap, scene facts, CLIPScore",
    "ablation": "one setting changed per row: train, caption the validation split, score",
    "eda": "validation + summary of every pair",
    "encoder": "tiny CLIP pre-trained per run, linear probes per scene fact on its frozen features",
    "tower": "each tower trained from scratch on the scene facts per run, scored per fact",
}


def missing(notebook: str) -> str:
    return f"_Not recorded yet: run notebook `{notebook}` (`python -m lib run {notebook[:2]}`)._\n"
