import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _tiny_lm():
    from lib.settings import TinyLM

    return TinyLM(
        vocab_size=400,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )


TINY_LM = _tiny_lm()  # the test-size Mistral every model test uses


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small embedded dataset shared by the read-only tests."""
    from lib.data.generate import generate

    out = tmp_path_factory.mktemp("data") / "default"
    generate(out, n=150, seed=7, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def world(small_data, tmp_path_factory):
    """Everything training needs, at test size: shards, a briefly pre-trained tiny CLIP and LM, features."""
    from lib.data.preprocess import preprocess
    from lib.data.validate import validate
    from lib.models import encoder as enc
    from lib.models import language
    from lib.models.feature_cache import encode
    from lib.settings import EncoderPretrain, LMPretrain, PrepConfig

    root = tmp_path_factory.mktemp("world")
    validate(small_data, root / "report.json", root / "index.jsonl", progress=False)
    preprocess(
        small_data,
        root / "pre",
        chunk_size=64,
        cfg=PrepConfig(size=64),
        index=root / "index.jsonl",
        progress=False,
    )
    enc.pretrain(root / "pre", root / "encoder", EncoderPretrain(epochs=1, batch_size=32), progress=False)
    language.pretrain(
        root / "pre" / "index.jsonl", root / "lm", LMPretrain(epochs=1, model=TINY_LM), progress=False
    )
    encode(root / "pre", root / "features", f"local-dir:{root / 'encoder'}", progress=False)
    return root


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m lib ...`` as users and SLURM scripts do."""
    proc = subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m lib {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def tiny_profile(tmp_path: Path, n: int) -> Path:
    """A copy of the default profile pointing every path into tmp_path."""
    params = tmp_path / "params"
    shutil.copytree(ROOT / "papermill_params" / "default", params / "default")
    spec = yaml.safe_load((params / "default" / "profile.yaml").read_text())
    spec["generate"] = {"out": str(tmp_path / "data"), "n": n, "seed": 1}
    spec["params"].update(
        data_dir=str(tmp_path / "data"),
        work_dir=str(tmp_path / "work"),
        results_dir=str(tmp_path / "results"),
        figures_dir=str(tmp_path / "figures"),
        run_name="test",
        workers=1,
    )
    assert spec["params"]["encoder"] == spec["params"]["lm"] == "tiny"  # pre-trained into work_dir
    for key in ("data_dir", "work_dir", "results_dir", "figures_dir"):  # never the repo's
        assert str(tmp_path) in spec["params"][key], key
    (params / "default" / "profile.yaml").write_text(yaml.safe_dump(spec))
    return params


def as_root() -> list[str] | None:
    """The prefix that runs a command as root here: none when we are root, passwordless sudo when
    it is there (CI machines), else None (the caller says what cannot be tested and how to opt out)."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n", "-E"]
    return None


def tiny_training(params: Path, train: dict | None = None) -> Path:
    """Make a tiny profile's captioner test-sized: one-epoch pre-training of the tiny CLIP and LM,
    4 visual tokens, and ``train`` as its training settings."""
    import dataclasses

    path = params / "default" / "train.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["pretrain"] = {
        "encoder": {"epochs": 1, "batch_size": 16},
        "lm": {"epochs": 1, "batch_size": 16, "model": dataclasses.asdict(TINY_LM)},
    }
    spec.update(visual_tokens=4, projector_hidden=32, **({"train": train} if train else {}))
    path.write_text(yaml.safe_dump(spec))
    return params
