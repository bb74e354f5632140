import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small embedded dataset shared by the read-only tests."""
    from lib.data.generate import generate

    out = tmp_path_factory.mktemp("data") / "default"
    generate(out, n=150, seed=7, workers=1, progress=False)
    return out


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m lib ...`` as users and SLURM scripts do."""
    proc = subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m lib {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc
