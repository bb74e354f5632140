import json
from pathlib import Path

import numpy as np
from PIL import Image

from lib.data.pmcoa import read_index
from lib.data.validate import validate

import badfiles
from conftest import cli


def test_every_bad_input_kind_is_reported_with_its_reason(tmp_path):
    expected = badfiles.build(tmp_path / "data")
    proc = cli(
        "validate",
        "--data",
        str(tmp_path / "data"),
        "--report",
        str(tmp_path / "report.json"),
        "--index",
        str(tmp_path / "index.jsonl"),
    )
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
        im, mode, fmt, _, _ = decode((tmp_path / "data" / "images" / row["image"]).read_bytes())
        assert im.mode in ("RGB", "L") and mode == row["mode"] and im.size == (row["width"], row["height"])
        assert (
            fmt
            == row["format"]
            == {".jpg": "JPEG", ".png": "PNG", ".gif": "GIF", ".tif": "TIFF"}[Path(row["image"]).suffix]
        )
    rgba = next(r for r in rows if r["image"] == "rgba.png")
    assert rgba["conversion"] == "alpha_flattened"
    sixteen = decode((tmp_path / "data" / "images" / "sixteen.png").read_bytes()).image
    src = np.asarray(Image.open(tmp_path / "data" / "images" / "sixteen.png"), dtype=np.uint16)
    assert np.array_equal(np.asarray(sixteen), (src >> 8).astype(np.uint8))


def test_every_kept_pair_has_its_own_id_and_every_split_is_accounted_for(tmp_path):
    badfiles.build(tmp_path / "data")
    (tmp_path / "data" / "test.jsonl").write_bytes(b"")  # present but empty
    report = validate(tmp_path / "data", tmp_path / "r.json", tmp_path / "i.jsonl", progress=False)
    rows = list(read_index(tmp_path / "i.jsonl"))
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids) == report["kept"]
    # one figure with two captions, and a.jpg beside a.png: four pairs, four ids
    assert sum(r["image"] == "good.jpg" for r in rows) == 2 and {"a.jpg", "a.png"} <= {
        r["image"] for r in rows
    }
    assert report["splits"]["test"] == {"file": "empty", "lines": 0, "kept": 0}
    assert report["splits"]["valid"] == {"file": "present", "lines": 1, "kept": 0}  # only the duplicate
    assert report["warnings"] == [
        "valid.jsonl: none of its 1 pairs was kept",
        "test.jsonl is empty (no pair in it)",
    ]
    (tmp_path / "data" / "test.jsonl").unlink()
    assert (
        validate(tmp_path / "data", tmp_path / "r.json", progress=False)["splits"]["test"]["file"]
        == "missing"
    )


def test_parallel_validation_gives_the_same_report(small_data, tmp_path):
    one = validate(small_data, tmp_path / "1.json", tmp_path / "1.jsonl", workers=1, progress=False)
    two = validate(small_data, tmp_path / "2.json", tmp_path / "2.jsonl", workers=2, progress=False)
    assert one == two and one["kept"] == 150
    assert (tmp_path / "1.jsonl").read_bytes() == (tmp_path / "2.jsonl").read_bytes()
