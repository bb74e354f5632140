import hashlib
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from lib.data.generate import MANIFEST, describe, figure, generate
from lib.data.pmcoa import SPLITS, iter_lines, parse_record
from lib.data.scenes import PATIENT_SIDE, REGIONS

from conftest import cli


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(tmp_path):
    a = generate(tmp_path / "a", n=80, seed=3, workers=1, progress=False)
    b = generate(tmp_path / "b", n=80, seed=3, workers=2, progress=False)
    assert a == b
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    c = generate(tmp_path / "c", n=80, seed=4, workers=1, progress=False)
    assert tree_digest(tmp_path / "c") != tree_digest(tmp_path / "a")
    assert c["n"] == 80


def test_smaller_dataset_is_a_prefix_of_a_larger_one(tmp_path):
    generate(tmp_path / "small", n=20, seed=1, workers=1, progress=False)
    generate(tmp_path / "large", n=60, seed=1, workers=1, progress=False)
    small, large = tree_digest(tmp_path / "small"), tree_digest(tmp_path / "large")
    images = {k: v for k, v in small.items() if k.startswith("images/")}
    assert images and all(large[k] == v for k, v in images.items())
    for split in SPLITS:
        s = (tmp_path / "small" / f"{split}.jsonl").read_text()
        assert (tmp_path / "large" / f"{split}.jsonl").read_text().startswith(s)


def test_pmcoa_format_sizes_and_colour_modes(small_data):
    rows = []
    for split in SPLITS:
        for line, raw in iter_lines(small_data / f"{split}.jsonl"):
            obj = json.loads(raw)
            assert set(obj) == {"image", "caption", "modality", "facts"}  # the scene's, for fact scores
            assert obj["facts"]["modality"] == obj["modality"]
            rows.append(parse_record(split, line, raw))
    assert len(rows) == 150
    assert {r.modality for r in rows} == set(REGIONS)
    modes, formats, sizes = set(), set(), []
    for r in rows:
        with Image.open(small_data / "images" / r.image) as im:
            modes.add(im.mode)
            formats.add(im.format)
            sizes.append(im.size)
    assert {"RGB", "L"} <= modes and formats == {"JPEG", "PNG"}
    w, h = np.mean(sizes, axis=0)
    assert 230 < w < 310 and 200 < h < 280  # PMC-OA's mean is about 271 x 238


def test_captions_state_what_is_drawn():
    for i in range(60):
        s = describe(5, i)
        _, _, text, _, scene = figure(5, i)
        assert s["region"] in text or s["region"].capitalize() in text
        if s["finding"] in ("normal",):
            assert "no focal abnormality" in text or "normal tissue" in text
        if s["zone"] and s["modality"] in ("xray", "ct", "mri", "ultrasound"):
            side = PATIENT_SIDE[s["zone"]]
            assert ("centrally" in text) if side == "central" else (side in text)
        if s["finding"] in ("mass", "nodule", "cyst", "tumour", "cluster"):
            unit = "mm" if s["modality"] in ("xray", "ct", "mri", "ultrasound") else "µm"
            assert re.search(rf"\b{scene.size} {unit}", text)
        assert ("(arrow)" in text) == s["arrow"]
        assert ("Scale bar" in text) == s["scale_bar"]
        assert text.startswith(f"({s['panel']}) ") == bool(s["panel"])


def test_complete_dataset_is_not_regenerated_and_an_interrupted_one_is(tmp_path):
    out = tmp_path / "d"
    generate(out, n=10, seed=0, workers=1, progress=False)
    before = (out / "train.jsonl").stat().st_mtime_ns
    generate(out, n=10, seed=0, workers=1, progress=False)
    assert (out / "train.jsonl").stat().st_mtime_ns == before
    (out / MANIFEST).unlink()  # as if killed before the manifest was written
    (out / "images" / "stray.jpg").write_bytes(b"half")
    generate(out, n=10, seed=0, workers=1, progress=False)
    assert (out / MANIFEST).exists() and not (out / "images" / "stray.jpg").exists()


def test_cli_generate(tmp_path):
    proc = cli("generate", "--out", str(tmp_path / "g"), "--n", "12", "--seed", "2", "--workers", "1")
    manifest = json.loads(proc.stdout.strip().splitlines()[-1])
    assert manifest["n"] == 12 and sum(manifest["splits"].values()) == 12
    assert len(list((tmp_path / "g" / "images").iterdir())) == 12
