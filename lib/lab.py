"""``python -m lib jupyter``: make this environment usable from JupyterLab.

Two settings: a named kernel for the environment (the notebooks ask for it by name), and JupyterLab
opening ``.py`` files as notebooks on double-click (jupytext's "Jupytext Notebook" viewer; the
jupytext server extension, installed with jupytext, already reads and writes them as notebooks and
keeps each ``.py``/``.ipynb`` pair in sync on save).

By default both go into this environment (``sys.prefix``): a JupyterLab started from it finds them.
``user=True`` writes them to the user's Jupyter folders instead, for a JupyterLab that runs from
another environment (Open OnDemand's), which then needs jupytext installed itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_config_dir
from jupytext_config.labconfig import LabConfig

KERNEL = "pmcoa"  # the kernelspec name the notebooks' metadata names
DISPLAY_NAME = "PMC-OA study"
# JupyterLab reads default setting overrides from <jupyter config dir>/labconfig/ (sys.prefix/etc/jupyter
# for an environment's own, ~/.jupyter for the user's)
OVERRIDES = Path("labconfig") / "default_setting_overrides.json"


def install(user: bool = False) -> dict[str, str]:
    """Register the kernel and the .py default viewer; returns where each went."""
    where = ["--user"] if user else ["--sys-prefix"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ipykernel",
            "install",
            *where,
            "--name",
            KERNEL,
            "--display-name",
            DISPLAY_NAME,
        ],
        check=True,
        capture_output=True,
        text=True,
    )

    kernel = KernelSpecManager().get_kernel_spec(KERNEL).resource_dir
    settings = (Path(jupyter_config_dir()) if user else Path(sys.prefix) / "etc" / "jupyter") / OVERRIDES
    LabConfig(settings_file=settings).read().set_default_viewers(["python"]).write()
    return {"kernel": kernel, "settings": str(settings)}
