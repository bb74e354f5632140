import json

import numpy as np
from PIL import Image

from lib.data.pmcoa import read_index
from lib.data.validate import validate

import badfiles
from conftest import cli


def test_every_bad_input_kind_is_reported_with_its_reason(tmp_path):
    expected = badfiles.build(tmp_path / "data")
    proc = cli("validate", "--data", str(tmp_path / "data"), "--report", str(tmp_path / "report.json"),
               "--index", str(tmp_path / "index.jsonl"))
    assert proc.returncode == 0  # finished, whatever it skipped
    report = json.loads((tmp_path / "report.json").read_text())
    skipped = {(s["split"], s["line"]): s["reason"] for s in report["skipped"]}
    converted = {(c["split"], c["line"]): c["conversion"] for c in report["converted"]}
    for where, (outcome, why) in expected.items():
        if outcome == "skip":
            assert skipped.get(where) == why, f"{where}: expected skip {why}, got {skipped.get(where)}"
        else:
            assert where not in skipped, f"{where} skipped: {skipped[where]}"
            assert converted.get(where) == why
    assert report["kept"] == sum(1 for o, _ in expected.values() if o != "skip")
    assert report["kept"] + len(report["skipped"]) == len(expected)  # nothing dropped without a row
    assert all(s["detail"] is not None for s in report["skipped"])


def test_clean_index_holds_kept_pairs_whose_images_decode_to_8bit(tmp_path):
    badfiles.build(tmp_path / "data")
    report = validate(tmp_path / "data", tmp_path / "r.json", tmp_path / "i.jsonl", progress=False)
    rows = list(read_index(tmp_path / "i.jsonl"))
    assert len(rows) == report["kept"]
    from lib.data.images import decode

    for row in rows:
        im, mode, _ = decode((tmp_path / "data" / "images" / row["image"]).read_bytes())
        assert im.mode in ("RGB", "L") and mode == row["mode"] and im.size == (row["width"], row["height"])
    rgba = next(r for r in rows if r["image"] == "rgba.png")
    assert rgba["conversion"] == "alpha_flattened"
    sixteen = decode((tmp_path / "data" / "images" / "sixteen.png").read_bytes())[0]
    src = np.asarray(Image.open(tmp_path / "data" / "images" / "sixteen.png"), dtype=np.uint16)
    assert np.array_equal(np.asarray(sixteen), (src >> 8).astype(np.uint8))


def test_parallel_validation_gives_the_same_report(small_data, tmp_path):
    one = validate(small_data, tmp_path / "1.json", tmp_path / "1.jsonl", workers=1, progress=False)
    two = validate(small_data, tmp_path / "2.json", tmp_path / "2.jsonl", workers=2, progress=False)
    assert one == two and one["kept"] == 150
    assert (tmp_path / "1.jsonl").read_bytes() == (tmp_path / "2.jsonl").read_bytes()
