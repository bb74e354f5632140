"""The one-device throughput bench: the full-size architecture is BioMistral-7B's (counted on the meta
device, nothing allocated), and the tiny size runs end to end through the training loop on CPU."""

import json

import numpy as np
import pytest
import torch
from transformers import MistralConfig

from lib.bench.lm import BIOMISTRAL_7B, RandomCaptions
from lib.data.caption_tokens import split_caption_tokens
from lib.models.language import random_lm
from lib.settings import LoraSpec

from conftest import cli


def test_full_size_architecture_has_mistral_7b_parameter_counts():
    lm = random_lm(MistralConfig(**BIOMISTRAL_7B), LoraSpec(), torch.bfloat16, "meta")
    base = sum(p.numel() for n, p in lm.named_parameters() if "lora_" not in n)
    lora = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    assert base == 7_241_732_096  # Mistral-7B / BioMistral-7B
    assert lora == 32 * (16 * (4096 + 4096) + 16 * (4096 + 1024))  # r=16 on q (4096->4096) and v (4096->1024)


def test_tiny_bench_runs_through_the_loop_and_projects_the_seed_run(tmp_path):
    cli(
        "bench",
        "lm",
        "--size",
        "tiny",
        "--device",
        "cpu",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--amp",
        "off",
        "--results",
        str(tmp_path),
    )
    rec = json.loads((tmp_path / "lm_throughput" / "tiny-cpu.json").read_text())
    m = rec["metrics"]
    assert m["tokens_per_s"] == pytest.approx(64 * m["samples_per_s"])  # every caption padded to 64 tokens
    assert m["mfu"] is None  # no agreed CPU peak to divide by
    assert m["seed_run_projected_hours"] == pytest.approx(47_500 * 3 / m["samples_per_s"] / 3600)
    assert m["trained_parameters"] < m["parameters"] and rec["provenance"]["hardware"]


def test_random_captions_pad_only_past_each_captions_length():
    lengths = np.array([5, 9, 3, 7])
    fixed = RandomCaptions(lengths, 8, 100, 1, 2, width=12).batch([0, 1, 2, 3])
    dynamic = RandomCaptions(lengths, 8, 100, 1, 2).batch([0, 2])
    assert fixed["input_ids"].shape == (4, 12) and dynamic["input_ids"].shape == (
        2,
        5,
    )  # 5 = longest of rows 0, 2
    assert fixed["attention_mask"].sum(1).tolist() == [5, 9, 3, 7]
    ids, mask = fixed["input_ids"], fixed["attention_mask"].bool()
    assert (ids[:, 0] == 1).all() and ids[torch.arange(4), torch.tensor(lengths) - 1].eq(2).all()
    assert (ids[~mask] == 0).all() and (ids[mask] > 0).all()


def test_padding_bench_counts_real_tokens_and_records_each_modes_gain(small_data, tmp_path):
    """Lengths from generated captions in Mistral's tokens; padding to the limit computes the most pad
    positions, length-grouped batches the fewest; every repeat and the paired ratios are recorded."""
    cli(
        "bench", "padding", "--size", "tiny", "--device", "cpu", "--steps", "4", "--batch-size", "8",
        "--amp", "off", "--lengths", str(small_data), "--repeats", "3", "--results", str(tmp_path),
    )  # fmt: skip
    rec = json.loads((tmp_path / "padding" / "tiny-cpu.json").read_text())
    m = rec["metrics"]
    counts, _ = split_caption_tokens(small_data)
    assert m["caption_lengths"]["mean"] == pytest.approx(counts.mean())
    share = {mode: m["modes"][mode]["real_token_share"] for mode in ("max", "batch", "grouped")}
    assert share["max"] < share["batch"] < share["grouped"] <= 1
    assert share["max"] == pytest.approx(min(counts.mean(), 64) / 64, rel=0.25)  # a sample of the lengths
    for mode in ("batch", "grouped"):
        gain = m["gain_vs_max"][mode]
        assert gain["n"] == 3 and gain["low"] <= gain["median"] <= gain["high"]
        tps, ref = m["modes"][mode]["tokens_per_s"], m["modes"]["max"]["tokens_per_s"]
        assert gain["values"] == pytest.approx([a / b for a, b in zip(tps, ref, strict=True)])
    assert rec["config"]["modes"] == ["max", "batch", "grouped"] and rec["provenance"]["hardware"]


def test_mfu_counts_the_visual_tokens_the_lm_processes():
    from lib.training.metrics import StepMeter

    meter = StepMeter(1e9, torch.device("cpu"), replicas=2, visual_tokens=4)
    meter.peak = 1.0  # TFLOP/s: a CPU has no agreed peak, so none is set by default
    rates = meter._rates(samples=3, tokens=30, seconds=2.0)
    assert rates["tokens_per_s"] == 2 * 30 / 2.0  # caption tokens only
    assert rates["mfu"] == pytest.approx(2 * (30 + 3 * 4) / 2.0 * 1e9 / 1e12)
