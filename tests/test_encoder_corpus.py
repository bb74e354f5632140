"""The tiny encoder's generated pre-training corpus (the default's counterpart of BiomedCLIP's PMC-15M)
and `bench encoder`, which measures what pre-training buys the frozen features."""

import json
import shutil

import numpy as np
import pytest
import yaml

from lib.config import run_name_for
from lib.data.generate import figure, generate, scene_facts
from lib.data.scenes import facts
from lib.jobs.artefacts import for_profile
from lib.models import encoder as enc
from lib.settings import EncoderPretrain

from conftest import ROOT, cli, tiny_profile, tiny_training


def test_the_corpus_is_a_stream_of_its_own_at_the_towers_side_and_the_same_every_time():
    images, captions = enc.generated_corpus(4, 96, workers=1, progress=False)
    assert images.shape == (4, 96, 96, 3) and images.dtype == np.uint8 and images.std() > 10
    assert captions == [figure(enc.CORPUS_SEED, i)[2] for i in range(4)]
    assert captions != [figure(0, i)[2] for i in range(4)]  # not the embedded dataset's figures
    # drawn in worker processes (64 pairs or more), the pairs are the same
    assert np.array_equal(enc.generated_corpus(64, 96, workers=2, progress=False)[0][:4], images)


def test_pretraining_on_generated_pairs_records_them_and_a_folder_without_them_stays_valid(world, tmp_path):
    cfg = EncoderPretrain(epochs=1, batch_size=32, generated=40)
    rec = enc.pretrain(world / "pre", tmp_path / "encoder", cfg, progress=False)
    assert rec["generated_pairs"] == 40 and rec["pretrain"]["generated"] == 40
    assert rec["steps"] == (rec["pairs"] + 40) // 32 and np.isfinite(rec["final_loss"])
    # no corpus: the settings are recorded as before the corpus existed, and the folder is reused as is
    before = json.loads((world / "encoder" / "pretrain.json").read_text())
    assert "generated" not in before["pretrain"] and before["generated_pairs"] == 0
    again = enc.pretrain(
        world / "pre", world / "encoder", EncoderPretrain(epochs=1, batch_size=32), progress=False
    )
    assert again == before


def test_a_users_folder_is_never_mixed_with_generated_pairs(tmp_path, monkeypatch, capfd):
    params = tiny_training(tiny_profile(tmp_path, n=40))
    train_yaml = params / "default" / "train.yaml"
    spec = yaml.safe_load(train_yaml.read_text())
    spec["pretrain"]["encoder"]["generated"] = 16
    train_yaml.write_text(yaml.safe_dump(spec))
    own = tmp_path / "users" / "figures"
    generate(own, n=40, seed=5, workers=1, progress=False)
    (own / "dataset.json").unlink()  # a user's folder has no generator manifest
    outputs = ROOT / "outputs" / run_name_for(own.resolve())
    monkeypatch.setenv("PMCOA_DATA", str(own))
    try:
        art = for_profile("default", str(params), progress=False)
        pre = json.loads((art.preprocessed.parent / "encoder" / "pretrain.json").read_text())
        assert pre["generated_pairs"] == 0 and "generated" not in pre["pretrain"]
        assert "training split alone" in capfd.readouterr().err  # said, not silent
    finally:
        shutil.rmtree(outputs, ignore_errors=True)


def test_bench_encoder_probes_the_features_of_each_pretraining_run(tmp_path):
    params = tiny_training(tiny_profile(tmp_path, n=80))
    out = cli(
        "bench",
        "encoder",
        "--profile",
        "default",
        "--params-dir",
        str(params),
        "--runs",
        "0:1,24:2",
        "--split",
        "valid",
        "--resamples",
        "10",
        "--results",
        str(tmp_path / "results"),
    )
    assert "wrote" in out.stdout
    rec = json.loads((tmp_path / "results" / "encoder" / "default.json").read_text())
    first, second = rec["metrics"]["runs"]
    assert (first["generated"], first["epochs"], second["generated"], second["epochs"]) == (0, 1, 24, 2)
    assert second["pairs"] == first["pairs"] + 24 and second["steps"] == 2 * (second["pairs"] // 16)
    for run in (first, second):
        assert 0 <= run["probe"]["modality"]["accuracy"] <= 1 and len(run["probe"]["modality"]["ci95"]) == 2
        assert run["pretrain_s"] > 0
    assert rec["config"]["runs"] == [[0, 1], [24, 2]] and rec["config"]["split"] == "valid"


def test_a_pretraining_of_exactly_ten_steps_runs(world, tmp_path):
    """OneCycleLR divides by its warm-up's length minus one: 10% of 10 steps would divide by zero."""
    pairs = json.loads((world / "encoder" / "pretrain.json").read_text())["pairs"]
    assert 100 <= pairs < 200  # so that batches of pairs // 10 make exactly 10 steps
    cfg = EncoderPretrain(epochs=1, batch_size=pairs // 10)
    assert enc.pretrain(world / "pre", tmp_path / "ten", cfg, progress=False)["steps"] == 10


def test_scene_facts_are_the_rendered_figures_without_rendering_them():
    for seed, index in ((enc.CORPUS_SEED, 0), (enc.CORPUS_SEED, 5), (0, 3)):
        assert scene_facts(seed, index) == facts(figure(seed, index)[4])


def test_bench_tower_trains_each_tower_on_the_facts_scores_it_and_resumes(tmp_path):
    params = tiny_training(tiny_profile(tmp_path, n=80))
    args = ["bench", "tower", "--profile", "default", "--params-dir", str(params), "--runs", "vit:10,cnn:10"]
    args += ["--generated", "24", "--split", "valid", "--resamples", "10", "--results", str(tmp_path / "r")]
    args += ["--scratch", str(tmp_path / "scratch")]
    assert "wrote" in cli(*args).stdout
    rec = json.loads((tmp_path / "r" / "tower" / "default.json").read_text())
    vit, cnn = rec["metrics"]["runs"]
    assert (vit["tower"], vit["steps"], cnn["tower"], cnn["steps"]) == ("vit", 10, "cnn", 10)
    assert vit["parameters"] == sum(
        p.numel() for p in enc.open_clip.CLIP(**enc.TINY_CLIP).visual.parameters()
    )
    for run in (vit, cnn):
        assert set(run["scores"]) == {"modality", "region", "finding", "zone"} and run["seconds"] > 0
        for s in run["scores"].values():
            assert 0 <= s["ci95"][0] <= s["accuracy"] <= s["ci95"][1] <= 1 and s["pairs"] > 0
    assert rec["metrics"]["pairs"] > 24  # the training split and the generated pairs
    # a second run with the same images and settings reuses each run's kept result; other settings train
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "scratch").glob("*.json")}
    assert sorted(kept) == ["cnn-steps10.json", "vit-steps10.json"]
    cli(*args)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "scratch").glob("*.json")} == kept
    again = json.loads((tmp_path / "r" / "tower" / "default.json").read_text())["metrics"]["runs"]
    assert again == [vit, cnn]
    cli(*[{"24": "16", "vit:10,cnn:10": "vit:10"}.get(a, a) for a in args])
    assert (tmp_path / "scratch" / "vit-steps10.json").stat().st_mtime_ns != kept["vit-steps10.json"]


def test_bench_tower_refuses_runs_it_cannot_do():
    from lib.bench.tower import parse_runs

    assert parse_runs("vit:324, cnn:12") == [("vit", 324), ("cnn", 12)]
    for bad in ("", "vit", "mlp:20", "vit:5", "vit:x"):
        with pytest.raises(ValueError, match="--runs"):
            parse_runs(bad)
