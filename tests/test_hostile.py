"""Hostile inputs: files that hang, escape or exhaust; ids that collide; caches from other inputs;
checkpoints that try to run code. Nothing may hang, nothing outside the data root may be opened, no
code may run, every row is kept or listed with a reason, and every test pair is scored."""

import json
import os
import re
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from lib.data import files
from lib.data.files import BadFile, read_data_file
from lib.data.pmcoa import read_index
from lib.data.preprocess import preprocess
from lib.data.reasons import REASONS
from lib.data.validate import validate
from lib.evaluation.evaluate import score_split
from lib.models.build import build
from lib.models.feature_cache import encode
from lib.settings import ModelSpec, PrepConfig, TrainConfig
from lib.training import checkpoint
from lib.training.data import CaptionData
from lib.training.loop import train
from lib.training.safe_load import UnsafeCheckpoint

import badfiles
from conftest import ROOT

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and not isinstance(args[0], int):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # every open() and os.open() of this process, while recording


@contextmanager
def recording_opens(seconds: int = 60):
    """The paths this process opens meanwhile; fails instead of hanging past ``seconds``."""
    global _opened
    _opened = []

    def hung(*_):
        raise TimeoutError(f"still running after {seconds} s: something blocked")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield _opened
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        _opened = None


def _never_opened(opened: list[str], *paths) -> None:
    forbidden = {os.path.realpath(p) for p in paths}
    assert not forbidden & {os.path.realpath(p) for p in opened}, "a path outside the data root was opened"


def test_validate_and_preprocess_open_nothing_outside_the_data_root_and_never_hang(tmp_path):
    data = tmp_path / "data"
    badfiles.build(data)
    # an index crafted by hand (or from another machine): preprocess re-checks every path it names
    crafted = tmp_path / "crafted.jsonl"
    names = [
        "good.jpg",
        "/etc/passwd",
        "../outside.jpg",
        "link_out.jpg",
        "pipe.jpg",
        "huge.jpg",
        "loop_a.jpg",
        "folder.jpg",
    ]
    crafted.write_text(
        "".join(
            json.dumps(
                {
                    "split": "train",
                    "line": i,
                    "image": n,
                    "caption": f"c{i}",
                    "mode": "RGB",
                    "conversion": None,
                }
            )
            + "\n"
            for i, n in enumerate(names, 1)
        )
    )
    with recording_opens() as opened:
        report = validate(data, tmp_path / "report.json", tmp_path / "index.jsonl", progress=False)
        m = preprocess(data, tmp_path / "out", index=crafted, cfg=PrepConfig(size=32), progress=False)
    _never_opened(opened, data / "outside.jpg", "/etc/passwd")
    assert report["kept"] + report["skipped_count"] == sum(1 for _ in open(data / "train.jsonl", "rb")) + 1
    quarantine = {
        q["image"]: q["reason"] for q in json.loads((tmp_path / "out" / "quarantine.json").read_text())
    }
    assert quarantine == {
        "/etc/passwd": "unsafe_path",
        "../outside.jpg": "unsafe_path",
        "link_out.jpg": "unsafe_path",
        "pipe.jpg": "not_regular_file",
        "huge.jpg": "too_large",
        "loop_a.jpg": "symlink_loop",
        "folder.jpg": "not_regular_file",
    }
    assert (m["stored"], m["quarantined"]) == (1, len(names) - 1)  # every row kept or listed with a reason


def test_a_file_swapped_for_a_symlink_after_validation_is_refused_not_followed(tmp_path):
    data = tmp_path / "data"
    badfiles.build(data)
    validate(data, tmp_path / "report.json", tmp_path / "index.jsonl", progress=False)
    (data / "images" / "a.png").unlink()
    os.symlink(data / "outside.jpg", data / "images" / "a.png")
    with recording_opens() as opened:
        preprocess(
            data, tmp_path / "out", index=tmp_path / "index.jsonl", cfg=PrepConfig(size=32), progress=False
        )
    _never_opened(opened, data / "outside.jpg")
    quarantine = json.loads((tmp_path / "out" / "quarantine.json").read_text())
    assert [(q["image"], q["reason"]) for q in quarantine] == [("a.png", "unsafe_path")]


def test_a_swap_between_the_check_and_the_open_is_caught(tmp_path, monkeypatch):
    """The race itself: the path is checked, then swapped before it is opened (the last component for a
    symlink, or a folder on the way for a symlink to a folder outside)."""
    images, outside = tmp_path / "images", tmp_path / "outside"
    (images / "sub").mkdir(parents=True)
    outside.mkdir()
    for folder in (images, images / "sub", outside):
        (folder / "x.jpg").write_bytes(b"figure")
    checked = files.checked_path

    def check_then_swap_file(root, name):
        path = checked(root, name)
        path.unlink()
        os.symlink(outside / "x.jpg", path)
        return path

    def check_then_swap_folder(root, name):
        path = checked(root, name)
        (images / "sub").rename(images / "was_sub")
        os.symlink(outside, images / "sub")
        return path

    for swap, name in ((check_then_swap_file, "x.jpg"), (check_then_swap_folder, "sub/x.jpg")):
        monkeypatch.setattr(files, "checked_path", swap)
        with pytest.raises(BadFile) as refused:
            read_data_file(images, name)
        assert refused.value.reason == "unsafe_path", refused.value
    monkeypatch.undo()
    assert read_data_file(images, "was_sub/x.jpg") == b"figure"


def test_preprocess_quarantines_a_file_that_changed_since_validation(tmp_path):
    data = tmp_path / "data"
    badfiles.build(data)
    validate(data, tmp_path / "report.json", tmp_path / "index.jsonl", progress=False)
    (data / "images" / "a.jpg").write_bytes((data / "images" / "good.jpg").read_bytes())
    preprocess(
        data, tmp_path / "out", index=tmp_path / "index.jsonl", cfg=PrepConfig(size=32), progress=False
    )
    quarantine = json.loads((tmp_path / "out" / "quarantine.json").read_text())
    assert [(q["image"], q["reason"]) for q in quarantine] == [("a.jpg", "changed_since_validation")]


def test_shards_and_features_made_from_another_index_of_the_same_length_are_rebuilt(world, tmp_path):
    data = tmp_path / "data"
    badfiles.build(data)
    validate(data, tmp_path / "report.json", tmp_path / "index.jsonl", progress=False)
    rows = list(read_index(tmp_path / "index.jsonl"))
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    second.write_text("".join(json.dumps(r) + "\n" for r in rows[6:12]))
    kw = {"cfg": PrepConfig(size=64), "chunk_size": 2, "progress": False}
    encoder = f"local-dir:{world / 'encoder'}"
    preprocess(data, tmp_path / "pre", index=first, **kw)
    encode(tmp_path / "pre", tmp_path / "features", encoder, progress=False)
    again = preprocess(data, tmp_path / "pre", index=second, **kw)
    assert again["resumed_chunks"] == 0  # same length, other rows: nothing of the first run is kept
    assert [r["id"] for r in read_index(tmp_path / "pre" / "index.jsonl")] == [r["id"] for r in rows[6:12]]
    assert encode(tmp_path / "pre", tmp_path / "features", encoder, progress=False)["resumed_shards"] == 0
    assert (
        preprocess(data, tmp_path / "pre", index=second, **kw)["resumed_chunks"] == 3
    )  # the same rows resume
    assert encode(tmp_path / "pre", tmp_path / "features", encoder, progress=False)["resumed_shards"] == 3


def _model(world, seed: int = 0):
    torch.manual_seed(seed)
    return build(
        ModelSpec(encoder=f"local-dir:{world / 'encoder'}", lm=str(world / "lm"), projector_hidden=32)
    )


def test_one_figure_twice_and_one_stem_twice_are_all_captioned_and_scored(world, tmp_path):
    """validate -> shards -> features -> captions -> scores with ids that the image name alone would merge."""
    data = tmp_path / "data"
    badfiles.build(data)
    test = [
        {"image": "good.jpg", "caption": "A radiograph of the chest."},
        {"image": "good.jpg", "caption": "The same figure, captioned twice."},
        {"image": "a.jpg", "caption": "A JPEG whose stem is a."},
        {"image": "a.png", "caption": "A PNG whose stem is a."},
    ]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    validate(data, tmp_path / "report.json", tmp_path / "index.jsonl", progress=False)
    preprocess(
        data, tmp_path / "pre", index=tmp_path / "index.jsonl", cfg=PrepConfig(size=64), progress=False
    )
    encode(tmp_path / "pre", tmp_path / "features", f"local-dir:{world / 'encoder'}", progress=False)
    vlm, tok = _model(world)
    train_split, test_split = (
        CaptionData(tmp_path / "features", "train", tok),
        CaptionData(tmp_path / "features", "test", tok),
    )
    assert [r["image"] for r in test_split.rows] == ["good.jpg", "good.jpg", "a.jpg", "a.png"]
    scored = score_split(vlm, train_split, test_split, resamples=10)
    assert scored["test_pairs"] == 4
    assert [c["id"] for c in scored["captions"]] == [r["id"] for r in test_split.rows]
    assert [c["reference"] for c in scored["captions"]] == [r["caption"] for r in test]


def test_repeated_pair_ids_are_refused_before_anything_is_scored(world, tmp_path):
    (tmp_path / "features").symlink_to(world / "features" / "features")
    rows = list(read_index(world / "features" / "index.jsonl"))
    test = [r for r in rows if r["split"] == "test"][:3]
    test[2] = {**test[2], "id": test[0]["id"]}
    (tmp_path / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    _, tok = _model(world)
    with pytest.raises(ValueError, match=f"pair ids repeat \\({test[0]['id']}\\)"):
        CaptionData(tmp_path, "test", tok)


def _crafted_index(command: str) -> bytes:
    """A protocol-4 pickle whose STACK_GLOBAL names ``os.system`` through the module DCP's index lives in
    (``torch.distributed.checkpoint.metadata`` imports os), then calls it: what a module-wide allow-list let
    through."""

    def text(s: str) -> bytes:
        b = s.encode()
        return b"\x8c" + bytes([len(b)]) + b

    return (
        b"\x80\x04"
        + text("torch.distributed.checkpoint.metadata")
        + text("os.system")
        + b"\x93"
        + text(command)
        + b"\x85R."
    )


class RunsCode:
    """A value whose unpickling runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _tiny_run(tmp_path: Path, lr=1e-3):
    """A model, optimizer and scheduler, one step in: checkpoint code does not care how big the model is."""
    torch.manual_seed(0)
    m = torch.nn.Module()
    m.base, m.projector = torch.nn.Linear(4, 4).requires_grad_(False), torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(m.projector.parameters(), lr=1e-3)
    m.projector(m.base(torch.randn(2, 4))).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    opt.param_groups[0]["lr"] = lr
    return m, opt, sched


def test_crafted_checkpoints_are_refused_and_run_no_code(world, tmp_path):
    marker = tmp_path / "code-ran"
    command = f"touch {marker}"
    # 1. the DCP index, through what `train --resume` runs (the training loop) and what `evaluate` runs
    vlm, tok = _model(world)
    data = CaptionData(world / "features", "train", tok)
    train(vlm, data, TrainConfig(steps=1, batch_size=4, warmup=1), tmp_path / "run", progress=False)
    ckpt = checkpoint.latest(tmp_path / "run")
    (ckpt / "dcp" / ".metadata").write_bytes(_crafted_index(command))
    (ckpt / "trainable.safetensors").unlink()  # as an FSDP run's checkpoint: evaluation reads the DCP shards
    with pytest.raises(
        UnsafeCheckpoint, match=r"asks for torch\.distributed\.checkpoint\.metadata\.os\.system"
    ):
        train(
            vlm,
            data,
            TrainConfig(steps=2, batch_size=4, warmup=1),
            tmp_path / "run",
            resume=ckpt,
            progress=False,
        )
    with pytest.raises(UnsafeCheckpoint, match="os.system"):
        checkpoint.load_weights(_model(world)[0], ckpt)
    # 2. a non-tensor value inside the DCP data (DCP's own planner unpickles those without limits)
    saved = checkpoint.save(tmp_path / "bytes", *_tiny_run(tmp_path, lr=RunsCode(command)), step=1)
    with pytest.raises(UnsafeCheckpoint, match=r"optim\.param_groups\.0\.lr needs code .*posix\.system"):
        checkpoint.resume(*_tiny_run(tmp_path), saved)
    # 3. state.pt
    saved = checkpoint.save(tmp_path / "state", *_tiny_run(tmp_path), step=1)
    torch.save({"step": RunsCode(command)}, saved / "state.pt")
    with pytest.raises(UnsafeCheckpoint, match=r"state\.pt needs code"):
        checkpoint.resume(*_tiny_run(tmp_path), saved)
    # 4. a `latest` pointer that leads out of the checkpoint folder
    (tmp_path / "state" / "latest").write_text("../../elsewhere")
    with pytest.raises(UnsafeCheckpoint, match="not a step-N folder"):
        checkpoint.latest(tmp_path / "state")
    assert not marker.exists(), "a checkpoint ran code"


def test_resuming_from_an_older_checkpoint_logs_each_step_once(world, tmp_path):
    vlm, tok = _model(world, seed=1)
    data = CaptionData(world / "features", "train", tok)
    cfg = TrainConfig(steps=6, batch_size=4, warmup=1, ckpt_every=2, log_every=1)
    train(vlm, data, cfg, tmp_path, progress=False)
    train(vlm, data, cfg, tmp_path, resume=tmp_path / "ckpt" / "step-000002", progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_readme_lists_exactly_the_reasons_the_code_can_give():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| reason | what it means |") :].split("\n\n")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", table, re.M))
    assert rows == REASONS
    with pytest.raises(KeyError):  # a reason nobody documented cannot be given
        files.BadFile("something_new")
