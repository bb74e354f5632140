"""Run the study's numbered notebooks with papermill, parameters taken from a profile.

The jupytext ``notebooks/NN_name.py`` files are the source of truth: each is
read as a notebook, given ``papermill_params/<profile>/`` parameters and
executed into ``outputs/<profile>/NN_name.ipynb`` (ignored by git).
"""

from __future__ import annotations

import ast
import os
from contextlib import contextmanager
from pathlib import Path

import jupytext
import papermill as pm
from papermill.exceptions import PapermillExecutionError
from tqdm import tqdm

from lib import stale
from lib.config import load_profile, repo_root, resolve
from lib.data.generate import generate


class NotebookFailed(RuntimeError):
    pass


def discover(notebooks_dir: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.py"))


def select(names: list[str] | None, available: list[Path]) -> list[Path]:
    """Notebooks by full stem (``01_eda``) or number (``01``); all of them when none are named."""
    if not names:
        return available
    chosen = []
    for name in names:
        stem = Path(name).stem
        hits = [p for p in available if p.stem == stem or p.stem.split("_", 1)[0] == stem]
        if not hits:
            raise NotebookFailed(f"no notebook {name!r} (have: {', '.join(p.stem for p in available)})")
        chosen += [p for p in hits if p not in chosen]
    return chosen


def parameter_names(nb) -> set[str]:
    """Names assigned in the cell tagged ``parameters`` (what papermill may set)."""
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {
                t.id
                for node in tree.body
                if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name)
            }
    return set()


def run_notebooks(
    notebooks: list[str] | None = None,
    profile: str = "default",
    overrides: dict | None = None,
    params_dir: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
) -> list[Path]:
    """Execute the chosen notebooks in order, skipping those whose source, parameters, inputs and
    ``lib`` code are unchanged since their last successful run (``force``: run them all); return the
    executed copies' paths."""
    # notebooks, and the jobs they launch, read the same profiles; set for this call only
    with _environ(PMCOA_PARAMS_DIR=str(Path(params_dir).resolve()) if params_dir else None):
        return _run(notebooks, profile, overrides, params_dir, notebooks_dir, output_dir, progress, force)


@contextmanager
def _environ(**values: str | None):
    """Environment variables set (where not None) for the duration of a block, then as they were."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if v is not None})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(notebooks, profile, overrides, params_dir, notebooks_dir, output_dir, progress, force) -> list[Path]:
    prof = load_profile(profile, params_dir)
    prof.apply_env()
    if prof.generate:
        spec = prof.generate
        generate(resolve(spec["out"]), n=int(spec["n"]), seed=int(spec["seed"]), progress=progress)
    root = repo_root()
    chosen = select(notebooks, discover(notebooks_dir or root / "notebooks"))
    out_dir = Path(output_dir or root / "outputs") / prof.run_name
    executed = []
    for path in tqdm(chosen, desc="notebooks", unit="nb", disable=not progress or len(chosen) < 2):
        nb = jupytext.read(path)
        declared = parameter_names(nb)
        params = {k: v for k, v in prof.notebook_params(path.stem).items() if k in declared}
        unknown = set(overrides or {}) - declared
        if unknown:
            raise NotebookFailed(
                f"{path.stem} has no parameter {', '.join(sorted(unknown))} "
                f"(it takes: {', '.join(sorted(declared))})"
            )
        params.update(overrides or {})
        if "profile" in declared:
            params.setdefault("profile", profile)
        target = out_dir / f"{path.stem}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        data_dir = params.get("data_dir") or prof.notebook_params(path.stem).get("data_dir")
        current = stale.fingerprint(path, params, prof.folder, root, data_dir and str(resolve(data_dir)))
        why = ["--force"] if force else stale.changed(target, current)
        if not why:
            tqdm.write(f"up to date: {path.stem} (nothing it depends on changed since {target})")
            continue
        tqdm.write(f"running {path.stem}: {', '.join(why[:4])}{' ...' if len(why) > 4 else ''}")
        try:
            pm.execute_notebook(
                nb,
                str(target),
                parameters=params,
                kernel_name="python3",
                language="python",
                cwd=str(root),
                progress_bar=progress,
            )
        except PapermillExecutionError as e:
            # Count cells as the author sees them in the .py (papermill's index includes injected ones).
            number = next((i for i, c in enumerate(nb.cells, 1) if c.source == e.source), None)
            first = next((line for line in e.source.splitlines() if line.strip()), "")
            raise NotebookFailed(
                f"notebook {path.stem} failed in cell {number} of {len(nb.cells)} ({path}), which starts "
                f"{first!r}: {e.ename}: {e.evalue}\n  executed copy with the traceback: {target}"
            ) from None
        stale.record(target, current)
        executed.append(target)
    return executed
