import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from lib.models import ModelUnavailable, language
from lib.models import encoder as enc
from lib.models.build import build
from lib.models.feature_cache import encode, open_features
from lib.models.vlm import is_trained
from lib.settings import LoraSpec, ModelSpec, TrainConfig
from lib.training import checkpoint
from lib.training.data import CaptionData, Order
from lib.training.loop import train
from lib.training.safe_load import UnsafeCheckpoint
from lib.training.stop import StopFlag

from conftest import ROOT, TINY_LM, cli, tiny_profile


def _vlm(world, seed=0, pixels=False):
    torch.manual_seed(seed)
    spec = ModelSpec(encoder=f"local-dir:{world / 'encoder'}", lm=str(world / "lm"), projector_hidden=32)
    return build(spec, with_encoder=pixels)


def test_shapes_and_dtypes_through_the_pipeline(world):
    images = torch.from_numpy(np.load(world / "pre" / "shards" / "shard-00000.npy")[:3])
    assert enc.load_encoder(f"local-dir:{world / 'encoder'}")(images).shape == (3, 1, 128)
    assert enc.load_encoder(str(world / "encoder"), "tokens")(images).shape == (
        3,
        36,
        192,
    )  # 96 px / 16 px patches
    feats = open_features(world / "features", "shard-00000.npy")
    assert feats.dtype == np.float16 and feats.shape == (64, 1, 128)
    vlm, tok = _vlm(world)
    data = CaptionData(world / "features", "train", tok)
    batch = data.batch([0, 1, 2])
    assert batch["input_ids"][:, 0].eq(tok.bos_token_id).all() and batch["features"].dtype == torch.float16
    assert vlm.prefix(batch["features"]).shape == (3, 4, TINY_LM.hidden_size)
    loss = vlm(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    out = vlm.generate(batch, max_new_tokens=5)
    assert len(out) == 3 and all(isinstance(t, int) for row in out for t in row) and max(map(len, out)) <= 5


def test_only_lora_and_projector_train_and_lora_is_r16_on_q_and_v(world):
    vlm, _ = _vlm(world)
    trained = {n: p.numel() for n, p in vlm.named_parameters() if p.requires_grad}
    assert all(n.startswith("projector.") or "lora_" in n for n in trained)
    lora = {n: v for n, v in trained.items() if "lora_" in n}
    assert {n.split(".")[-4] for n in lora} == {"q_proj", "v_proj"}
    h, kv = (
        TINY_LM.hidden_size,
        TINY_LM.num_key_value_heads * (TINY_LM.hidden_size // TINY_LM.num_attention_heads),
    )
    # r x (in + out) per adapted matrix, per layer: q is h -> h, v is h -> kv width
    assert sum(lora.values()) == TINY_LM.num_hidden_layers * 16 * ((h + h) + (h + kv))
    lm_total = sum(p.numel() for p in vlm.lm.parameters())
    assert 0 < sum(lora.values()) / lm_total < 0.2


def test_frozen_encoder_gets_no_gradients_and_stays_in_eval(world):
    vlm, tok = _vlm(world, pixels=True)
    before = {n: p.clone() for n, p in vlm.encoder.named_parameters()}
    vlm.train()
    assert not vlm.encoder.training
    data = CaptionData(world / "pre", "train", tok, source="pixels")
    vlm(data.batch([0, 1])).backward()
    assert all(p.grad is None and not p.requires_grad for p in vlm.encoder.parameters())
    assert all(torch.equal(p, before[n]) for n, p in vlm.encoder.named_parameters())
    assert vlm.projector.fc1.weight.grad is not None


def test_cached_features_equal_encoding_on_the_fly(world):
    vlm, tok = _vlm(world, pixels=True)
    cached = CaptionData(world / "features", "train", tok).batch(range(8))
    fresh = CaptionData(world / "pre", "train", tok, source="pixels").batch(range(8))
    live = vlm.encoder(fresh["pixels"])
    torch.testing.assert_close(cached["features"].float(), live, rtol=2e-3, atol=2e-3)  # fp16 storage
    vlm.eval()
    torch.testing.assert_close(vlm(cached), vlm(fresh), rtol=1e-3, atol=1e-3)


def test_pipeline_stages_chained_give_the_whole_models_loss_and_keep_parameter_names(world):
    """Cut in two and run stage after stage in one process (what two pipeline ranks do, without the
    sends): the same loss as the whole captioner, padded to one width; every trained parameter lands
    in exactly one stage under its own name."""
    import copy

    from lib.models.vlm import caption_labels, caption_loss
    from lib.parallel.pipeline import prune_to_stage, stage_layers

    assert [list(stage_layers(5, 2, s)) for s in (0, 1)] == [[0, 1, 2], [3, 4]]
    with pytest.raises(ValueError, match="cannot cut"):
        stage_layers(2, 3, 0)
    vlm, tok = _vlm(world)
    vlm.eval()
    data = CaptionData(world / "features", "train", tok)
    batch = data.batch(range(6), width=data.max_tokens)
    whole = vlm(batch)  # padding-masked attention, the LM's own loss
    names = {n for n, _ in vlm.named_parameters() if is_trained(n)}
    first, last = (prune_to_stage(copy.deepcopy(vlm), s, 2) for s in (0, 1))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = caption_labels(ids, mask, 4)
    with torch.no_grad():
        loss = caption_loss(last(first(batch["features"], ids)), labels)
    torch.testing.assert_close(loss, whole, rtol=1e-5, atol=1e-5)
    parts = [{n for n, _ in s.named_parameters() if is_trained(n)} for s in (first, last)]
    assert parts[0] | parts[1] == names and not parts[0] & parts[1]
    assert any(n.startswith("projector.") for n in parts[0]) and "layers.1." in " ".join(parts[1])


def test_the_captioners_loss_is_the_lms_own_and_label_smoothing_is_the_recipes(world):
    import torch.nn.functional as F

    from lib.models.vlm import caption_labels

    vlm, tok = _vlm(world)
    vlm.eval()
    batch = CaptionData(world / "features", "train", tok).batch(range(6))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        vis = vlm.prefix(batch["features"])
        embeds = torch.cat([vis, vlm.lm.get_input_embeddings()(ids)], dim=1)
        full = torch.cat([mask.new_ones(vis.shape[:2]), mask], dim=1)
        labels = caption_labels(ids, mask, vis.shape[1])
        out = vlm.lm(inputs_embeds=embeds, attention_mask=full, labels=labels)
        torch.testing.assert_close(vlm(batch), out.loss)  # transformers' shifted cross-entropy
        vlm.label_smoothing = 0.1
        smoothed = F.cross_entropy(
            out.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, label_smoothing=0.1
        )
        torch.testing.assert_close(vlm(batch), smoothed)
        assert smoothed > out.loss


def test_layer_split_puts_runs_of_blocks_on_each_device_and_changes_no_number(world):
    from lib.parallel.apply import apply_layer_split, layer_split_map

    vlm, tok = _vlm(world)
    dmap = layer_split_map(vlm, ["cuda:0", "cuda:1"])
    lm = "lm.base_model.model"
    assert dmap["projector"] == dmap[f"{lm}.model.embed_tokens"] == dmap[f"{lm}.model.layers.0"] == "cuda:0"
    assert dmap[f"{lm}.model.layers.1"] == dmap[f"{lm}.lm_head"] == dmap[f"{lm}.model.norm"] == "cuda:1"
    batch = CaptionData(world / "features", "train", tok).batch(range(6))
    vlm.eval()
    whole = vlm(batch)
    whole.backward()
    grads = {n: p.grad.clone() for n, p in vlm.named_parameters() if p.grad is not None}
    vlm.zero_grad()
    split = apply_layer_split(vlm, ["cpu", "cpu"])
    assert hasattr(split.lm.base_model.model.model.layers[1], "_hf_hook")  # accelerate moves activations here
    loss = split(batch)
    loss.backward()
    assert loss.item() == whole.item()
    assert all(torch.equal(p.grad, grads[n]) for n, p in split.named_parameters() if p.grad is not None)


def test_order_is_a_pure_function_of_the_step_and_splits_one_global_batch():
    a, b = Order(100, 8, seed=3), Order(100, 8, seed=3)
    assert [a.indices(m) for m in (0, 13, 2)] == [b.indices(m) for m in (0, 13, 2)]
    assert a.indices(0) != a.indices(12)  # epoch 1 is a new permutation (12 full batches per epoch)
    seen = [i for k in range(12) for i in a.indices(k)]
    assert len(set(seen)) == 96  # an epoch visits 96 distinct rows; the ragged 4 are dropped
    ranks, accum = Order(100, 8, 3, world=2), Order(100, 8, 3, accum=2)
    for k in (0, 5, 13):
        split = [ranks.indices(k, rank=r) for r in (0, 1)]
        assert split == [accum.indices(k, micro=m) for m in (0, 1)]  # same rows, same groups
        assert sorted(split[0] + split[1]) == sorted(a.indices(k))
    with pytest.raises(ValueError, match="divide evenly"):
        Order(100, 6, 3, world=2, accum=2)


def test_length_grouped_order_keeps_the_epoch_and_the_dealing_and_pads_less():
    """train --group-by-length: the same rows each epoch, batches of similar lengths, and the global batch
    split over ranks or micro-batches as without grouping."""
    lengths = np.random.default_rng(0).integers(10, 60, 400)
    plain, grouped = Order(400, 16, 3), Order(400, 16, 3, lengths=lengths, group=5)
    epoch = lambda o: sorted(i for k in range(25) for i in o.indices(k))  # noqa: E731
    assert epoch(grouped) == epoch(plain)  # the same 400 rows (25 full batches), only regrouped
    assert [grouped.indices(k) for k in (0, 7, 30)] == [
        Order(400, 16, 3, lengths=lengths, group=5).indices(k) for k in (0, 7, 30)
    ]  # a pure function of the step: a resumed run sees the same batches
    padded = lambda o: sum(16 * lengths[o.indices(k)].max() for k in range(25))  # noqa: E731
    assert padded(grouped) < 0.8 * padded(plain)  # far fewer pad positions computed
    ranks = Order(400, 16, 3, world=2, lengths=lengths, group=5)
    accum = Order(400, 16, 3, accum=2, lengths=lengths, group=5)
    for k in (0, 9, 26):
        split = [ranks.indices(k, rank=r) for r in (0, 1)]
        assert split == [accum.indices(k, micro=m) for m in (0, 1)]
        assert sorted(split[0] + split[1]) == sorted(grouped.indices(k))
    with pytest.raises(ValueError, match="lengths"):
        Order(400, 16, 3, lengths=lengths[:10])


# preempted in stage 2, or in stage 1, when LoRA has no optimizer state yet (it is not stepped there)
@pytest.mark.parametrize("signal_at", [3, 1])
def test_sigterm_checkpoints_and_resume_is_bitwise_identical(world, tmp_path, signal_at):
    cfg = TrainConfig(steps=6, align_steps=2, batch_size=8, lr=1e-2, warmup=2, ckpt_every=100, seed=1)

    def run(out, on_step=None, resume=None):
        vlm, tok = _vlm(world, seed=5)
        return vlm, train(
            vlm,
            CaptionData(world / "features", "train", tok),
            cfg,
            out,
            resume=resume,
            progress=False,
            on_step=on_step,
        )

    whole, summary = run(tmp_path / "whole")
    assert summary["status"] == "finished" and summary["steps"] == 6

    def preempt(record):
        if record["step"] == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends before the time limit

    _, stopped = run(tmp_path / "cut", on_step=preempt)
    # the flag is read once per step, before the ranks agree on it: a signal arriving after step 3's
    # check stops the run after step 4
    cut = signal_at + 1
    assert (
        stopped["status"] == "preempted (SIGTERM)"
        and checkpoint.latest(tmp_path / "cut").name == f"step-{cut:06d}"
    )
    resumed, rest = run(tmp_path / "cut", resume=tmp_path / "cut")
    assert rest["start_step"] == cut and rest["steps"] == 6
    a, b = checkpoint.trainable_state(whole), checkpoint.trainable_state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert summary["losses"][cut:] == rest["losses"]
    # stage 1 left LoRA at its initial value (B = 0); stage 2 moved it
    assert any("lora_B" in k and a[k].abs().sum() > 0 for k in a)


def test_a_signal_during_setup_stops_the_run_after_its_first_step(world, tmp_path):
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)  # SLURM's warning, before the model is even built
        vlm, tok = _vlm(world)
        summary = train(
            vlm,
            CaptionData(world / "features", "train", tok),
            TrainConfig(steps=50, batch_size=4),
            tmp_path,
            progress=False,
            stop=stop,
        )
    assert (summary["status"], summary["steps"]) == ("preempted (SIGUSR1)", 1)
    assert checkpoint.latest(tmp_path).name == "step-000001"


def test_checkpoints_load_without_unpickling(world, tmp_path):
    vlm, tok = _vlm(world)
    train(
        vlm,
        CaptionData(world / "features", "train", tok),
        TrainConfig(steps=1, batch_size=4, warmup=1),
        tmp_path,
        progress=False,
    )
    ckpt = checkpoint.latest(tmp_path)
    assert sorted(p.name for p in ckpt.iterdir()) == ["dcp", "rng-0.pt", "state.pt", "trainable.safetensors"]
    torch.load(ckpt / "state.pt", weights_only=True)  # raises if anything needs unpickling
    # DCP's pickled index is read with an allow-list: a crafted one cannot run code
    (ckpt / "dcp" / ".metadata").write_bytes(pickle.dumps(os.getcwd))
    with pytest.raises(UnsafeCheckpoint, match=r"asks for posix\.getcwd"):
        checkpoint.resume(vlm, torch.optim.AdamW(vlm.projector.parameters()), None, ckpt)


class Int8Like(torch.nn.Linear):
    """A frozen layer whose state_dict() holds a key that is no attribute, as bitsandbytes' 8-bit
    Linear8bitLt adds its weight's quantisation statistics (SCB)."""

    def _save_to_state_dict(self, dest, prefix, keep_vars):
        super()._save_to_state_dict(dest, prefix, keep_vars)
        dest[prefix + "SCB"] = torch.ones(self.out_features)


def test_checkpoints_round_trip_past_quantisation_statistics(tmp_path):
    def model(seed):
        torch.manual_seed(seed)
        m = torch.nn.Module()
        m.base, m.projector = Int8Like(4, 4).requires_grad_(False), torch.nn.Linear(4, 4)
        opt = torch.optim.AdamW(m.projector.parameters())
        m.projector(m.base(torch.randn(2, 4))).sum().backward()
        opt.step()
        return m, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    saved, opt, sched = model(0)
    ckpt = checkpoint.save(tmp_path, saved, opt, sched, step=3)
    fresh, opt2, sched2 = model(1)
    assert checkpoint.resume(fresh, opt2, sched2, ckpt) == 3
    assert torch.equal(fresh.projector.weight, saved.projector.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert "base.SCB" in fresh.state_dict()  # the layer's own state_dict() is left as it was


def test_generation_is_deterministic_for_greedy_and_beam(world):
    vlm, tok = _vlm(world)
    vlm.eval()
    batch = CaptionData(world / "features", "test", tok).batch(range(4))
    for beams in (1, 3):
        assert vlm.generate(batch, 12, beams) == vlm.generate(batch, 12, beams)


def test_offline_hub_loads_fail_fast_and_name_the_local_option():
    code = (
        "import time, sys\n"
        "from lib.models import ModelUnavailable, encoder, language\n"
        "for load in (lambda: language.load_lm('BioMistral/BioMistral-7B', lora=None),\n"
        "             lambda: encoder.create(encoder.BIOMEDCLIP)):\n"
        "    t = time.time()\n"
        "    try:\n"
        "        load()\n"
        "    except ModelUnavailable as e:\n"
        "        print(round(time.time() - t, 1), 'local' in str(e), flush=True)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    lines = proc.stdout.split("\n")[:2]
    assert [line.split()[1] for line in lines] == ["True", "True"], proc.stderr[-2000:]
    assert all(float(line.split()[0]) < 10 for line in lines) and time.time() - start < 60


def test_unknown_local_encoder_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        enc.create(f"local-dir:{tmp_path / 'missing'}")
    assert ModelUnavailable  # the type the CLI turns into a one-line error


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_lora_trains_on_quantised_base_weights(world, quant):
    """QLoRA-style: bitsandbytes int8 / NF4 base (runs on CPU with bitsandbytes >= 0.50), LoRA in full
    precision."""
    torch.manual_seed(0)
    lm = language.load_lm(str(world / "lm"), LoraSpec(), quant=quant)
    base = lm.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert type(base).__name__ == {"8bit": "Linear8bitLt", "4bit": "Linear4bit"}[quant]
    ids = torch.randint(3, TINY_LM.vocab_size, (2, 12))
    loss = lm(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for n, p in lm.named_parameters() if "lora_B" in n]
    assert torch.isfinite(loss) and grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_train_command_end_to_end_then_resume(tmp_path):
    """`python -m lib train` builds every artefact for a profile, trains, captions the test split and
    records the run; `--resume` continues from the latest checkpoint to a later step."""
    params = tiny_profile(tmp_path, n=40)
    (params / "default" / "train.yaml").write_text(
        yaml.safe_dump(
            {
                "pretrain": {
                    "encoder": {"epochs": 1, "batch_size": 16},
                    "lm": {"epochs": 1, "batch_size": 16, "model": dataclasses.asdict(TINY_LM)},
                },
                "visual_tokens": 4,
                "projector_hidden": 32,
                "train": {"steps": 3, "align_steps": 1, "batch_size": 4, "warmup": 1, "ckpt_every": 2},
            }
        )
    )
    out = tmp_path / "run"
    common = ("--profile", "default", "--params-dir", str(params), "--out", str(out), "--name", "t")
    proc = cli("train", *common)
    assert "finished at step 3" in proc.stdout and "test BLEU-4" in proc.stdout
    record = json.loads((tmp_path / "results" / "training" / "t.json").read_text())
    ev = record["metrics"]["eval"]
    assert record["metrics"]["steps"] == 3 and record["config"]["train"]["steps"] == 3
    assert {"bleu4", "cider", "meteor", "rouge_l", "identical_share", "top_share"} <= set(ev["model"])
    assert ev["test_pairs"] > 0 and set(ev["model"]["ci95"]) == {"bleu4", "cider", "rouge_l", "meteor"}
    captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(captions) == ev["test_pairs"] and all(
        {"id", "reference", "generated"} <= set(c) for c in captions
    )
    assert (tmp_path / "work" / "features" / "pooled").is_dir()  # the profile's encoder output was cached

    proc = cli("train", *common, "--resume", str(out), "--max-steps", "5", "--no-eval")
    resumed = json.loads((out / "train.json").read_text())
    assert resumed["start_step"] == 3 and resumed["steps"] == 5 and "eval" not in resumed


def test_feature_cache_is_rebuilt_when_the_encoder_weights_change(world, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    enc_dir = tmp_path / "encoder"
    shutil.copytree(world / "encoder", enc_dir)
    spec = f"local-dir:{enc_dir}"
    first = encode(world / "pre", tmp_path / "features", spec, progress=False)
    assert (
        encode(world / "pre", tmp_path / "features", spec, progress=False)["resumed_shards"]
        == first["shards"]
    )
    weights = load_file(enc_dir / "open_clip_model.safetensors")
    save_file(
        {k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()},
        enc_dir / "open_clip_model.safetensors",
    )
    again = encode(world / "pre", tmp_path / "features", spec, progress=False)
    assert again["resumed_shards"] == 0 and again["weights"] != first["weights"]


def test_patch_tokens_are_pooled_over_the_grid_so_each_visual_token_keeps_a_region():
    from lib.models.vlm import pool_tokens

    grid = torch.arange(36.0).view(1, 36, 1)  # a 6x6 patch grid, row by row
    assert pool_tokens(grid, 9).flatten().tolist() == [3.5, 5.5, 7.5, 15.5, 17.5, 19.5, 27.5, 29.5, 31.5]
    assert pool_tokens(grid, 4).flatten().tolist() == [7.0, 10.0, 25.0, 28.0]  # the four quadrants
    assert torch.equal(pool_tokens(grid, 36), grid)
    assert pool_tokens(grid, 6).shape == (1, 6, 1)  # not a square: pooled along the sequence


def test_pretraining_trains_both_towers_of_the_tiny_clip(world):
    """The image tower learns too (an earlier version froze it through the encoder wrapper that only
    lent its pixel transform: the text tower learned to match a random image tower)."""
    import open_clip
    from safetensors.torch import load_file

    from lib.models.encoder import TINY_CLIP
    from lib.settings import EncoderPretrain

    trained = load_file(world / "encoder" / "open_clip_model.safetensors")
    torch.manual_seed(EncoderPretrain().seed)  # the initialisation pre-training started from
    init = open_clip.CLIP(**TINY_CLIP, output_dict=True).state_dict()
    for tower in ("visual.", "transformer."):
        names = [n for n in trained if n.startswith(tower) and trained[n].is_floating_point()]
        changed = [n for n in names if not torch.equal(trained[n], init[n])]
        assert len(changed) > 0.9 * len(names), f"{tower}: {len(changed)} of {len(names)} tensors trained"
