"""A researcher's JupyterLab session, for real: `jupyter lab` on a loopback port, Debian's Chromium
driven headless by Playwright, notebooks/01_eda.py opened as a notebook with the study's kernel,
every cell run on the default profile (its data and outputs in a scratch study root), then an edit
saved from JupyterLab, which must reach both files of the jupytext pair.

Needs /usr/bin/chromium (Playwright's own browser download is not possible offline): installed
here with apt when missing and root; PMCOA_SKIP_BROWSER=1 leaves this module out where neither works.
A screenshot goes to outputs/test-artifacts/.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT, as_root, cli

SKIP = os.environ.get("PMCOA_SKIP_BROWSER") == "1"
pytestmark = pytest.mark.skipif(SKIP, reason="PMCOA_SKIP_BROWSER=1: no notebook was run in a browser")
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "outputs" / "test-artifacts"
ADDED = "# added in JupyterLab"


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        root = as_root()
        if root is None or not shutil.which("apt-get"):
            pytest.fail(
                f"{CHROMIUM} is missing and cannot be installed here (needs root or passwordless sudo, "
                "and apt-get): `apt-get install chromium`, or PMCOA_SKIP_BROWSER=1 to run the suite "
                "without it"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [*root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run([*root, "apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(install, env=env, check=True, capture_output=True)
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A study root with notebook 01's pair and the default profile's data (small), served by a
    JupyterLab of this environment with the study's set-up (`python -m lib jupyter`) applied."""
    from lib.data.generate import generate

    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    for ext in (".py", ".ipynb"):
        shutil.copy(ROOT / "notebooks" / f"01_eda{ext}", root / "notebooks")
    generate(root / "data" / "default", n=60, seed=1, workers=1, progress=False)
    cli("jupyter")  # what `make setup` runs: the pmcoa kernel, .py files open as notebooks
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "PMCOA_ROOT": str(root),  # the notebook's relative paths land in the scratch root
        "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),  # nothing from ~/.jupyter
        "JUPYTERLAB_SETTINGS_DIR": str(root / ".jupyter" / "lab" / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / ".jupyter" / "lab" / "workspaces"),
        "JUPYTER_DATA_DIR": str(root / ".local"),
        "JUPYTER_RUNTIME_DIR": str(root / ".local" / "runtime"),
    }
    settings = root / ".jupyter" / "lab" / "user-settings" / "@jupyterlab"
    for plugin, value in (
        ("notebook-extension/tracker", {"windowingMode": "none"}),  # every cell in the page
        ("apputils-extension/notification", {"fetchNews": "false"}),
    ):  # no pop-up over the cells
        (settings / f"{plugin}.jupyterlab-settings").parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{plugin}.jupyterlab-settings").write_text(json.dumps(value))
    log = (root / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (root / "jupyterlab.log").read_text()
                time.sleep(0.5)
        else:
            raise AssertionError(
                f"JupyterLab did not answer in 60 s:\n{(root / 'jupyterlab.log').read_text()}"
            )
        yield root, url, token
    finally:
        server.terminate()  # the server this fixture started, by its pid; it stops its kernels
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_eda_notebook_runs_in_jupyterlab_and_saves_both_files(chromium, lab):
    from playwright.sync_api import sync_playwright

    root, url, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/notebooks/01_eda.py?token={token}")
            panel = page.locator(".jp-NotebookPanel")  # a notebook, not the text editor
            panel.wait_for(timeout=60_000)
            kernel = page.locator(".jp-NotebookPanel .jp-Toolbar-kernelName")
            kernel.filter(has_text="PMC-OA study").wait_for(timeout=60_000)
            idle = page.locator('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]')
            idle.wait_for(timeout=60_000)

            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            code = page.locator(".jp-NotebookPanel .jp-CodeCell")
            n = code.count()
            prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt")
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # every code cell numbered, none waiting or running
                texts = prompts.all_inner_texts()
                if len(texts) == n and all(
                    t.strip().startswith("[") and t.strip()[1:-2].isdigit() for t in texts
                ):
                    break
                time.sleep(1)
            else:
                raise AssertionError(f"cells did not finish: {prompts.all_inner_texts()}")
            idle.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-01_eda.png"), full_page=True)

            stderr = page.locator(
                '.jp-NotebookPanel .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
            )
            errors = [t for t in stderr.all_inner_texts() if "Traceback" in t or "Error" in t]
            assert not errors, errors[0][:2000]
            figures = page.locator(".jp-NotebookPanel .jp-OutputArea-output img")
            assert figures.count() >= 1 and figures.first.evaluate("img => img.naturalWidth") > 100

            # an edit made in JupyterLab, saved: a new last cell
            code.last.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Escape")  # command mode
            page.keyboard.press("b")  # insert a cell below
            page.keyboard.press("Enter")  # edit it
            page.keyboard.type(ADDED)
            page.keyboard.press("Escape")
            page.keyboard.press("Control+s")
            deadline = time.monotonic() + 30
            while ADDED not in (root / "notebooks" / "01_eda.py").read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            page.screenshot(path=str(ARTIFACTS / "jupyterlab-01_eda-end.png"), full_page=True)
            browser.close()

    py, ipynb = (root / "notebooks" / f"01_eda{ext}" for ext in (".py", ".ipynb"))
    assert py.read_text().rstrip().endswith(f"# %%\n{ADDED}"), py.read_text()[-500:]
    saved = nbformat.read(ipynb, as_version=4)
    assert saved.cells[-1].source == ADDED  # the pair stays in sync: a reviewer's .py diff shows the edit
    assert saved.metadata.kernelspec.name == "pmcoa"
    outputs = [o for c in saved.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figures, as run in the browser
    record = json.loads((root / "results" / "eda" / "default.json").read_text())
    assert record["metrics"]["pairs"] == 60 and (root / "figures").is_dir()
