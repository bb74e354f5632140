"""The incremental study: a notebook runs again when its source, parameters, inputs or the lib code it
reaches change, and not otherwise."""

import json

import yaml

from lib import stale
from lib.study import run_notebooks

from conftest import tiny_profile


def _package(root):
    (root / "lib" / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from lib.sub import b\n    return b\n",
        "sub/__init__.py": "",
        "sub/b.py": "X = 1\n",
        "c.py": "import lib.a\n",
        "cli.py": "import lib.c\n",
        "unused.py": "",
    }
    for name, text in files.items():
        (root / "lib" / name).write_text(text)


def test_lib_dependencies_are_followed_through_imports_inside_functions_and_command_lines(tmp_path):
    _package(tmp_path)
    rel = lambda src: sorted(str(f.relative_to(tmp_path / "lib")) for f in stale.lib_files(src, tmp_path))  # noqa: E731
    assert rel("from lib import a\n") == ["__init__.py", "a.py", "sub/__init__.py", "sub/b.py"]
    assert rel("import subprocess\nsubprocess.run(['python', '-m', 'lib', 'train'])\n") == [
        "__init__.py",
        "a.py",
        "c.py",
        "cli.py",
        "sub/__init__.py",
        "sub/b.py",
    ]
    assert rel("import numpy\n") == []


def test_a_changed_lib_module_is_named(tmp_path):
    _package(tmp_path)
    nb = tmp_path / "01_x.py"
    nb.write_text("from lib import a\n")
    (tmp_path / "profile").mkdir()
    executed = tmp_path / "out" / "01_x.ipynb"
    executed.parent.mkdir()
    executed.write_text("{}")
    first = stale.fingerprint(nb, {"n": 1}, tmp_path / "profile", tmp_path)
    stale.record(executed, first)
    assert stale.changed(executed, first) == []
    (tmp_path / "lib" / "unused.py").write_text("Y = 2\n")  # not reached: still up to date
    assert stale.changed(executed, stale.fingerprint(nb, {"n": 1}, tmp_path / "profile", tmp_path)) == []
    (tmp_path / "lib" / "sub" / "b.py").write_text("X = 2\n")
    now = stale.fingerprint(nb, {"n": 2}, tmp_path / "profile", tmp_path)
    assert stale.changed(executed, now) == ["params", "lib: lib/sub/b.py"]


def test_only_stale_notebooks_run_again(tmp_path):
    params = tiny_profile(tmp_path, n=5)
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name in ("01_first", "02_second"):
        (nbs / f"{name}.py").write_text(
            f'# %% tags=["parameters"]\nx = 0\ndata_dir = ""\n\n# %%\nprint("{name}", x)\n'
        )
    (params / "default" / "02_second.yaml").write_text(yaml.safe_dump({"x": 1}))

    def go(**kw):
        return [
            p.stem
            for p in run_notebooks(
                params_dir=params, notebooks_dir=nbs, output_dir=tmp_path / "out", progress=False, **kw
            )
        ]

    assert go() == ["01_first", "02_second"]
    assert go() == []  # nothing changed
    (params / "default" / "02_second.yaml").write_text(yaml.safe_dump({"x": 2}))
    assert go() == ["02_second"]  # its own parameters
    shared = params / "default" / "train.yaml"
    shared.write_text(shared.read_text() + "\n# edited\n")
    assert go() == ["01_first", "02_second"]  # a file every notebook may read
    with open(tmp_path / "data" / "test.jsonl", "a") as f:
        f.write(json.dumps({"image": "new.jpg", "caption": "a new pair"}) + "\n")
    assert go() == ["01_first", "02_second"]  # the dataset (both take data_dir)
    assert go() == [] and go(force=True) == ["01_first", "02_second"]
