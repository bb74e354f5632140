"""A captioner run is never taken for another: a run made from another encoder is trained again (not
reused), a checkpoint is not resumed into a run on other features, and a captioner is not evaluated on
an encoder it was not trained on (lib/jobs/made_from.py)."""

import json

import pytest
import yaml

from lib.jobs.artefacts import for_profile
from lib.jobs.made_from import differences, mismatch, same_model
from lib.jobs.train import ensure_trained

from conftest import cli, tiny_profile, tiny_training


def test_differences_name_the_settings_that_changed():
    old = {"train": {"steps": 4, "lr": 0.1}, "encoder": "a", "lm": "x"}
    assert differences(old, {"train": {"steps": 6, "lr": 0.1}, "encoder": "b", "lm": "x"}) == [
        "train.steps",
        "encoder",
    ]
    assert differences(old, old) == [] and mismatch(old, old) is None
    assert mismatch(old, {**old, "lm": "y"}) == "it was trained from another lm"
    assert mismatch(None, old) == "it has no record of what it was made from (made_from.json)"


def test_a_run_made_from_another_encoder_is_trained_again_never_resumed_or_evaluated(tmp_path, capfd):
    params = tiny_training(
        tiny_profile(tmp_path, n=40),
        {"steps": 4, "align_steps": 1, "batch_size": 8, "warmup": 1, "ckpt_every": 2},
    )
    run = tmp_path / "run"
    ensure_trained(str(run), "default", params_dir=str(params))
    first = json.loads((run / "train.json").read_text())
    assert first["status"] == "finished"
    stamp = (run / "train.json").stat().st_mtime_ns
    ensure_trained(str(run), "default", params_dir=str(params))  # the same run: left as it is
    assert (run / "train.json").stat().st_mtime_ns == stamp
    art = for_profile("default", str(params), progress=False)
    same_model(run, art)  # the profile it was trained with: evaluated

    # the encoder pre-trained again (another seed): new weights, new features, same folders
    path = params / "default" / "train.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["pretrain"]["encoder"]["seed"] = 1
    path.write_text(yaml.safe_dump(spec))
    art = for_profile("default", str(params), progress=False)
    with pytest.raises(ValueError, match=r"cannot evaluate .*: it was trained from another encoder than"):
        same_model(run / "ckpt" / "latest", art)
    proc = cli("train", "--params-dir", str(params), "--out", str(tmp_path / "run2"), "--resume", str(run),
               check=False)  # fmt: skip
    assert proc.returncode != 0 and "cannot resume" in proc.stderr and "another encoder" in proc.stderr
    capfd.readouterr()
    ensure_trained(str(run), "default", params_dir=str(params))
    assert "run: it was trained from another encoder; training it again" in capfd.readouterr().err
    second = json.loads((run / "train.json").read_text())
    assert second["status"] == "finished"
    assert second["made_from"]["encoder"] != first["made_from"]["encoder"]
    assert second["made_from"]["train"] == first["made_from"]["train"]
    same_model(run, art)
