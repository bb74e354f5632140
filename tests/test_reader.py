import json
import tracemalloc

import pytest

from lib.data.pmcoa import BadRecord, iter_lines, parse_record, split_files
from lib.data.subset import allocate, subset

from conftest import cli


def test_reader_streams_without_holding_the_file(tmp_path):
    path = tmp_path / "train.jsonl"
    row = json.dumps({"image": "PMC1_Fig1_1.jpg", "caption": "Chest radiograph showing a nodule. " * 4})
    with open(path, "w") as f:
        for _ in range(100_000):  # ~16 MB
            f.write(row + "\n")
    tracemalloc.start()
    n = sum(1 for _ in iter_lines(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 100_000
    assert peak < 1_000_000, f"reading held {peak} bytes"


def test_parse_record_fields_and_errors():
    rec = parse_record("train", 3, b'{"image": "a.jpg", "caption": "CT of the head.", "modality": "ct"}')
    assert (rec.split, rec.line, rec.image, rec.caption, rec.modality) == (
        "train",
        3,
        "a.jpg",
        "CT of the head.",
        "ct",
    )
    assert parse_record("test", 1, b'{"image": "a.jpg", "caption": "x"}').modality is None
    for raw, reason in [
        (b"[1, 2]", "malformed_json"),
        (b"{", "malformed_json"),
        (b'{"image": 3, "caption": "x"}', "missing_field"),
        (b'{"image": "a", "caption": "\\ud800"}', "non_utf8"),
        (b'{"image": "a", "caption": "\xff"}', "non_utf8"),
        (b'{"image": "a", "caption": ""}', "empty_caption"),
    ]:
        with pytest.raises(BadRecord) as e:
            parse_record("train", 1, raw)
        assert e.value.reason == reason


def test_split_files_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no PMC-OA split files"):
        split_files(tmp_path)


def test_allocate_is_proportional_and_exact():
    assert allocate({"train": 800, "valid": 100, "test": 100}, 100) == {"train": 80, "valid": 10, "test": 10}
    alloc = allocate({"train": 7, "valid": 2, "test": 2}, 5)
    assert sum(alloc.values()) == 5 and alloc["train"] >= alloc["valid"]
    assert allocate({"train": 3}, 10) == {"train": 3}


def test_subset_is_deterministic_nested_and_keeps_order(small_data, tmp_path):
    a = subset(small_data, 40, tmp_path / "a", seed=11, progress=False)
    subset(small_data, 40, tmp_path / "a2", seed=11, progress=False)
    big = subset(small_data, 90, tmp_path / "big", seed=11, progress=False)
    other = subset(small_data, 40, tmp_path / "other", seed=12, progress=False)
    assert sum(a["splits"].values()) == 40 and sum(big["splits"].values()) == 90
    assert a["images_linked"] == 40
    for split in split_files(small_data):
        lines_a = (tmp_path / "a" / f"{split}.jsonl").read_bytes()
        assert lines_a == (tmp_path / "a2" / f"{split}.jsonl").read_bytes()
        src = (small_data / f"{split}.jsonl").read_text().splitlines()
        chosen = lines_a.decode().splitlines()
        assert set(chosen) <= set((tmp_path / "big" / f"{split}.jsonl").read_text().splitlines())
        assert chosen == [s for s in src if s in set(chosen)]  # original order
        for row in map(json.loads, chosen):
            assert (tmp_path / "a" / "images" / row["image"]).read_bytes() == (
                small_data / "images" / row["image"]
            ).read_bytes()
    assert other["splits"] == a["splits"]
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (tmp_path / "a" / "train.jsonl").read_bytes()


def test_cli_subset(small_data, tmp_path):
    proc = cli("subset", "--data", str(small_data), "--n", "10", "--out", str(tmp_path / "s"), "--seed", "0")
    assert sum(json.loads(proc.stdout)["splits"].values()) == 10
    bad = cli(
        "subset", "--data", str(tmp_path / "nowhere"), "--n", "10", "--out", str(tmp_path / "t"), check=False
    )
    assert bad.returncode == 2 and "no PMC-OA split files" in bad.stderr
