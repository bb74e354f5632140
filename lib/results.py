"""Results files: the numbers of one run plus everything needed to trace them.

``results/<part>/<run>.json`` = {part, run, created, seed, config, metrics,
provenance: {git, hardware, libraries, python, platform}}. Every figure and
table of the study is drawn from these files alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose versions change the numbers; only installed ones are recorded.
TRACKED_LIBRARIES = (
    "numpy",
    "pillow",
    "opencv-python-headless",
    "matplotlib",
    "torch",
    "torchvision",
    "transformers",
    "peft",
    "open_clip_torch",
    "tokenizers",
    "bitsandbytes",
    "dask",
    "distributed",
    "xgboost",
    "xgboost-cpu",
    "dask-jobqueue",
    "scikit-learn",
    "joblib",
    "pycocoevalcap",
    "papermill",
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once, in the main thread (os.umask sets as it reads: threads writing at once must not race on it)
FILE_MODE = 0o666 & ~_umask()


def temp_file(folder: str | os.PathLike, prefix: str, suffix: str = "") -> tuple[int, str]:
    """``tempfile.mkstemp`` with the mode a plain ``open`` would give (the user's umask, not 0600), so the
    other members of a project group can read what a run wrote once it is renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.fchmod(fd, FILE_MODE)
    return fd, tmp


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a file so a reader never sees half of it (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: list[dict]) -> Path:
    return write_text_atomic(
        path, "".join(json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n" for r in rows)
    )


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def git_state(root: str | os.PathLike | None = None) -> dict:
    root = Path(root) if root else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None and os.environ.get("STUDY_GIT_COMMIT"):
        # a copy of the tree without .git (staged to a node's scratch disk): the submitter says which
        # commit it is, and nobody can say whether it was changed since
        return {"commit": os.environ["STUDY_GIT_COMMIT"], "dirty": None, "from": "STUDY_GIT_COMMIT"}
    # the study rewrites results/ and figures/ as it runs: only code and parameters make a run "dirty"
    status = git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results", ":(exclude)figures"
    )
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[dict]:
    """GPUs without importing torch when it is not already loaded (importing it costs seconds)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return [
            {
                "name": torch.cuda.get_device_name(i),
                "memory_bytes": torch.cuda.get_device_properties(i).total_memory,
            }
            for i in range(torch.cuda.device_count())
        ]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.stdout.strip().splitlines() if out.returncode == 0 else []:
        name, mem = (s.strip() for s in line.rsplit(",", 1))
        gpus.append({"name": name, "memory_bytes": int(float(mem)) * 2**20})
    return gpus


def hardware() -> dict:
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    gpus = _gpus()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tag = f"{len(gpus)}x {gpus[0]['name']}" if gpus else f"{cores}-core CPU ({_cpu_model()})"
    return {
        "tag": tag,  # the short label tables print beside each number
        "cpu_model": _cpu_model(),
        "cores": cores,
        "memory_bytes": mem,
        "gpus": gpus,
        "hostname": platform.node(),
    }


def library_versions() -> dict:
    versions = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"


def lock_state(lock: Path = LOCK) -> dict | None:
    """Which locked environment produced a result: the lock's digest, and whether every package it pins
    is installed at its pinned version (a local build tag such as torch's +cu130 aside)."""
    if not lock.exists():
        return None
    text = lock.read_text()
    differs = {}
    for name, pinned in re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.M):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if (installed or "").split("+")[0] != pinned:
            differs[name] = {"locked": pinned, "installed": installed}
    return {
        "file": lock.name,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "installed_as_locked": not differs,
        "differing": len(differs),
        "differs": dict(list(differs.items())[:20]),
    }


def provenance() -> dict:
    return {
        "git": git_state(),
        "lock": lock_state(),
        "hardware": hardware(),
        "libraries": library_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def results_path(results_dir: str | os.PathLike, part: str, run: str) -> Path:
    return Path(results_dir) / part / f"{run}.json"


def write_results(
    results_dir: str | os.PathLike, part: str, run: str, metrics: dict, config: dict, seed: int | None
) -> Path:
    """Record one run's numbers with their provenance at ``<results_dir>/<part>/<run>.json``."""
    record = {
        "part": part,
        "run": run,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "config": config,
        "metrics": metrics,
        "provenance": provenance(),
    }
    return write_json_atomic(results_path(results_dir, part, run), record)


def read_results(path: str | os.PathLike) -> dict:
    record = json.loads(Path(path).read_text())
    missing = {"part", "run", "seed", "config", "metrics", "provenance"} - record.keys()
    if missing:
        raise ValueError(f"{path}: not a results file (missing {', '.join(sorted(missing))})")
    return record
