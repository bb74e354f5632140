import os
import subprocess
import sys

from lib.config import load_profile

from conftest import ROOT


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))


def test_model_stack_imports_with_the_pinned_torch():
    # torch 2.13 + PyPI torchvision broke these imports ("operator torchvision::nms does not exist").
    code = (
        "import torch, torchvision, transformers, peft, open_clip; "
        "print(torch.__version__, torchvision.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    torch_v, vision_v = out.stdout.split()
    assert torch_v.split("+")[0] == pins()["torch"] and vision_v.split("+")[0] == pins()["torchvision"]


def test_default_profile_is_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    load_profile("default").apply_env()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a user's own setting wins
    load_profile("default").apply_env()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
