"""Profiles (``default``: embedded data on a laptop; ``cluster``: PMC-OA and hub models), and a user's
own data in place of a profile's.

A profile is a folder ``papermill_params/<profile>/`` holding ``profile.yaml``
(environment, the dataset to generate if any, parameters every notebook gets)
and one ``<notebook>.yaml`` per notebook with that notebook's own parameters.

``--data DIR`` (or ``$PMCOA_DATA``) runs a profile on another PMC-OA-format folder: nothing is
generated, and the run gets a name of its own derived from the folder (``<name>-<6 hex>``), with its
work, results, figures and executed notebooks under ``outputs/<run>/``, so a run of other data never
writes the committed study's files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROFILES = ("default", "cluster")
JOBS = "train"  # <profile>/train.yaml: the model and training settings every job reads
NOTEBOOK_RUNS = {"train_run": "train", "blind_run": "train-blind"}  # notebook 07's run folders, by parameter
DATA_ENV = "PMCOA_DATA"  # another dataset for any profile; --data sets it for the command and its children


def repo_root() -> Path:
    """The study's checkout: $PMCOA_ROOT, else the nearest folder above the cwd
    holding papermill_params/ (a notebook opened in notebooks/ still finds it),
    else the folder above this package."""
    if os.environ.get("PMCOA_ROOT"):
        return Path(os.environ["PMCOA_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "papermill_params").is_dir() and (d / "lib").is_dir():
            return d
    return Path(__file__).resolve().parent.parent


def resolve(path: str | os.PathLike) -> Path:
    """A path from a parameter file: absolute as given, relative to the repo root otherwise."""
    p = Path(os.path.expandvars(str(path))).expanduser()
    if "$" in str(p):
        raise ValueError(f"path {path!r} names an environment variable that is not set")
    return p if p.is_absolute() else repo_root() / p


def shown(path: str | os.PathLike) -> str:
    """A path as results files record it: relative to the repository when inside it, else as it is (never
    the absolute path of the checkout that ran it)."""
    p, root = Path(path).resolve(), repo_root()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(path)


def run_name_for(data: Path) -> str:
    """A run's name from its data folder: the folder's name and a digest of its full path (two folders
    called ``data`` are two runs)."""
    slug = re.sub(r"[^a-z0-9]+", "-", data.name.lower()).strip("-") or "data"
    return f"{slug}-{hashlib.sha256(str(data).encode()).hexdigest()[:6]}"


@dataclass
class Profile:
    name: str
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    generate: dict | None = None  # {out, n, seed}: the embedded dataset to create when missing
    params: dict = field(default_factory=dict)  # given to every notebook that declares them
    data: dict = field(default_factory=dict)  # another dataset's run layout, over everything else

    def notebook_params(self, notebook: str) -> dict:
        """Common parameters overlaid with ``<notebook>.yaml`` (the latter wins), then the run layout
        of other data, if any."""
        return {**self.params, **self._own(notebook), **self.data}

    @property
    def run_name(self) -> str:
        return self.notebook_params(JOBS).get("run_name") or self.name

    def with_data(self, data: str | os.PathLike) -> Profile:
        """This profile on the PMC-OA-format folder ``data``. Its own data gives the profile unchanged;
        other data drops ``generate`` and moves everything the run writes to ``outputs/<run>/``."""
        given = resolve(data).resolve()
        try:
            own = resolve(self.params["data_dir"]).resolve() if self.params.get("data_dir") else None
        except ValueError:  # its data_dir names a variable that is not set
            own = None
        if given == own:
            return self
        run = run_name_for(given)
        layout = {
            "data_dir": str(given),
            "run_name": run,
            "work_dir": f"outputs/{run}/work",
            "results_dir": f"outputs/{run}/results",
            "figures_dir": f"outputs/{run}/figures",
            # notebook 07's captioners: trained on this data, never the profile's own runs
            **{k: f"outputs/{run}/{folder}" for k, folder in NOTEBOOK_RUNS.items()},
        }
        return dataclasses.replace(self, generate=None, data=layout)

    def job_params(self) -> dict:
        """What every job reads (train, evaluate, baseline, the benchmarks): the common parameters
        overlaid with ``train.yaml`` (the model, the training recipe, pre-training of the default's
        models); not the run folders another dataset's layout gives notebook 07."""
        return {k: v for k, v in self.notebook_params(JOBS).items() if k not in NOTEBOOK_RUNS}

    def source_of(self, key: str) -> Path:
        """The file a job parameter comes from, for error messages."""
        return self.folder / (f"{JOBS}.yaml" if key in self._own(JOBS) else "profile.yaml")

    def _own(self, name: str) -> dict:
        own = self.folder / f"{name}.yaml"
        return _read_yaml(own) if own.exists() else {}

    def apply_env(self) -> None:
        """Export the profile's environment (e.g. HF_HUB_OFFLINE=1) unless the user set it."""
        for key, value in self.env.items():
            os.environ.setdefault(key, str(value))


def _read_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def load_profile(name: str, params_dir: str | os.PathLike | None = None) -> Profile:
    """papermill_params/<name>/, or <params_dir>/<name>/, on $PMCOA_DATA when it is set. $PMCOA_PARAMS_DIR
    and $PMCOA_DATA carry a params_dir and a dataset into the notebooks and torchrun jobs a run starts."""
    params_dir = params_dir or os.environ.get("PMCOA_PARAMS_DIR")
    folder = Path(params_dir) if params_dir else repo_root() / "papermill_params"
    folder = folder / name
    spec = folder / "profile.yaml"
    if not spec.exists():
        known = sorted(p.parent.name for p in folder.parent.glob("*/profile.yaml"))
        raise FileNotFoundError(
            f"no profile {name!r}: {spec} is missing (known: {', '.join(known) or 'none'})"
        )
    raw = _read_yaml(spec)
    profile = Profile(
        name=name,
        folder=folder,
        env={k: str(v) for k, v in (raw.get("env") or {}).items()},
        generate=raw.get("generate"),
        params=raw.get("params") or {},
    )
    return profile.with_data(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else profile
