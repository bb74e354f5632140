"""The one-device throughput bench: the full-size architecture is BioMistral-7B's (counted on the meta
device, nothing allocated), and the tiny size runs end to end through the training loop on CPU."""

import json

import pytest
import torch
from transformers import MistralConfig

from lib.bench.lm import BIOMISTRAL_7B
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
