"""Which notebooks need running again: content hashes of what each one depends on, recorded beside
its executed copy after a successful run (as DVC or ploomber decide what is stale).

A notebook depends on
- its source (``notebooks/NN_name.py``),
- its parameters: the values papermill gives it, plus the profile's shared files (``profile.yaml``,
  ``train.yaml``, ...; not the other notebooks' own files),
- its inputs: the dataset's index files (the images are named there),
- the ``lib`` modules it imports, followed through their own ``lib`` imports (also those inside
  functions, where this code base keeps its heavy imports).
Artefacts between notebooks (shards, features, checkpoints) are content-keyed caches that whichever
notebook needs them rebuilds when missing, so they need no stamp of their own.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

from lib.results import write_json_atomic

NOTEBOOK_FILE = re.compile(r"^\d\d_.+\.yaml$")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lib_imports(source: str) -> set[str]:
    """``lib.x.y`` modules a piece of Python names (``from lib.x import y`` may name a module y), and
    the command line when it starts ``python -m lib ...`` (torchrun jobs, training subprocesses)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.List, ast.Tuple)):
            words = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            if any(a == "-m" and b == "lib" for a, b in zip(words, words[1:], strict=False)):
                names.add("lib.cli")
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.split(".")[0] == "lib"
        ):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _module_file(name: str, root: Path) -> Path | None:
    """``lib.a.b`` -> root/lib/a/b.py or root/lib/a/b/__init__.py (None: not a module, e.g. a function)."""
    base = root.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def lib_files(source: str, root: Path) -> list[Path]:
    """Every ``lib`` file the source depends on, transitively, with the packages on the way."""
    seen: set[Path] = set()
    todo = list(lib_imports(source))
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # importing lib.a.b runs lib/__init__ and lib/a/__init__ too
            f = _module_file(".".join(parts[:k]), root)
            if f is not None and f not in seen:
                seen.add(f)
                todo += lib_imports(f.read_text(encoding="utf-8"))
    return sorted(seen)


def _inputs(data_dir: str | None) -> dict[str, str]:
    """Content hashes of the dataset's index files (train/valid/test.jsonl, dataset.json)."""
    if not data_dir or not Path(data_dir).is_dir():
        return {}
    return {f.name: _digest(f.read_bytes()) for f in sorted(Path(data_dir).glob("*.json*")) if f.is_file()}


def fingerprint(
    notebook: Path, params: dict, profile_dir: Path, root: Path, data_dir: str | None = None
) -> dict:
    """What a notebook's last successful run depended on, as hashes by part."""
    source = notebook.read_text(encoding="utf-8")
    shared = {
        f.name: _digest(f.read_bytes())
        for f in sorted(profile_dir.glob("*.yaml"))
        if not NOTEBOOK_FILE.match(f.name)
    }
    return {
        "source": _digest(source.encode()),
        "params": _digest(json.dumps(params, sort_keys=True, default=str).encode()),
        "profile": shared,
        "inputs": _inputs(data_dir),
        "lib": {str(f.relative_to(root)): _digest(f.read_bytes()) for f in lib_files(source, root)},
    }


def stamp_path(executed: Path) -> Path:
    return executed.with_name(f".{executed.stem}.stamp.json")


def changed(executed: Path, current: dict) -> list[str]:
    """What changed since the last successful run (["never run"] when there was none); [] when up to date."""
    stamp = stamp_path(executed)
    if not executed.exists() or not stamp.exists():
        return ["never run"]
    old = json.loads(stamp.read_text())
    out = []
    for part, value in current.items():
        if isinstance(value, dict):
            before = old.get(part, {})
            out += [f"{part}: {k}" for k in sorted(set(value) | set(before)) if value.get(k) != before.get(k)]
        elif value != old.get(part):
            out.append(part)
    return out


def record(executed: Path, current: dict) -> None:
    write_json_atomic(stamp_path(executed), current)
