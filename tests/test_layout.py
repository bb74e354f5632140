"""The shape of the code: one way through it, layers that only import downwards, small modules, imports
where a reader sees them, and every setting written once."""

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from lib.cli import parser
from lib.jobs.artefacts import settings
from lib.settings import TrainConfig, TrainJob

from conftest import ROOT, tiny_profile

LIB = ROOT / "lib"
# data -> models -> training -> parallel -> evaluation -> jobs -> cli; the base (0) is used by all
LAYERS = {
    "config": 0,
    "results": 0,
    "plots": 0,
    "options": 0,
    "settings": 0,
    "stats": 0,
    "data": 1,
    "models": 2,
    "training": 3,
    "parallel": 4,
    "evaluation": 5,
    "baseline": 5,
    "jobs": 6,
    "bench": 6,
    "report": 6,
    "study": 6,
    "stale": 6,
    "lab": 6,
    "bench.cli": 7,
    "cli": 7,
    "__main__": 7,
}


def _module(path: Path) -> str:
    parts = path.relative_to(LIB).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _layer(module: str) -> int:
    """The layer of ``lib.x.y`` (or of ``x.y`` relative to lib): the longest prefix named in LAYERS."""
    parts = module.removeprefix("lib").strip(".").split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in LAYERS:
            return LAYERS[".".join(parts[:k])]
    return 0  # lib itself


def _imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(lib module imported, line, inside a function) for every import of a lib module."""
    local = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [(n, node.lineno, id(node) in local) for n in names if n == "lib" or n.startswith("lib.")]
    return found


SOURCES = {p: ast.parse(p.read_text()) for p in sorted(LIB.rglob("*.py"))}


def test_the_captioner_hub_is_gone():
    assert not (LIB / "captioner.py").exists()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(LIB)))
def test_no_module_imports_one_above_it(path):
    own = _layer(_module(path))
    up = [f"line {line}: {name}" for name, line, _ in _imports(SOURCES[path]) if _layer(name) > own]
    assert not up, f"{path.relative_to(ROOT)} (layer {own}) imports upwards: {up}"


def test_modules_are_small():
    big = {str(p.relative_to(ROOT)): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 350}
    assert not big


def test_imports_sit_at_the_top_outside_the_command_line():
    """Only the command line imports inside functions (``--help`` stays instant); elsewhere a reader
    sees a module's dependencies at its top."""
    local = 0
    for path, tree in SOURCES.items():
        if path.name == "cli.py":
            continue
        local += sum(
            isinstance(n, (ast.Import, ast.ImportFrom))
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in f.body
        )
    assert local < 30


def _options(command: str) -> dict[str, str]:
    sub = next(a for a in parser()._actions if a.dest == "command").choices[command]
    return {a.dest: a.help for a in sub._actions if a.dest != "help"}


def test_every_training_setting_is_a_train_option_with_its_help():
    """A setting is written once: TrainConfig and TrainJob fields are the `train` options, help included."""
    options = _options("train")
    for f in dataclasses.fields(TrainConfig) + dataclasses.fields(TrainJob):
        if f.metadata.get("help"):
            assert options.pop(f.name) == f.metadata["help"], f.name
    assert not options, f"options that are no setting: {options}"


def test_a_setting_a_profile_does_not_know_is_an_error_naming_it_and_its_file(tmp_path):
    params = tiny_profile(tmp_path, n=20)
    path = params / "default" / "train.yaml"
    spec = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**spec, "visual_token": 9}))
    with pytest.raises(ValueError, match=rf"{path}: unknown setting 'visual_token'"):
        settings("default", str(params))
    path.write_text(yaml.safe_dump({**spec, "train": {**spec["train"], "step": 10}}))
    with pytest.raises(ValueError, match=rf"{path}: train: unknown setting 'step'"):
        settings("default", str(params))
