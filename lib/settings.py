"""Every setting of the study, once: one dataclass per stage, each field with its default and its help.

The command line derives its options from these fields (``lib.options``), profiles fill them from
``papermill_params/<profile>/`` (a key that is not a field is an error naming its file), and results
files record them with ``asdict``. Adding a setting is one line here. Nothing here imports more than
the standard library, so ``python -m lib --help`` stays instant.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from lib.options import option

STRATEGIES = ("single", "ddp", "fsdp", "pipeline", "layers")
SCHEDULES = ("gpipe", "1f1b")
BACKENDS = ("sequential", "dask-processes", "dask-threads", "dask-slurm")
IMAGES = ("real", "zeros", "shuffled")  # what a captioner sees: its images, or none (a blind reference point)
# bench comm: the collectives timed, and message sizes 4 KB .. 256 MB a factor of 4 apart (the bytes the
# caller hands over: all_reduce's tensor, all_gather's gathered output, reduce_scatter's input, a message)
COLLECTIVES = ("all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor", "send_recv")
COMM_SIZES = tuple(4096 * 4**k for k in range(9))
MAX_PIXELS = 40_000_000  # PMC-OA figures are ~271x238 px: a declared size beyond this is a bomb, not a figure
MAX_FILE_BYTES = 256 * 2**20  # PMC-OA figures average ~20 KB and real scans rarely reach 50 MB
TINY = "tiny"  # a profile's encoder or lm: pre-train the default's tiny one on the data's training split
DATA_HELP = (
    "a PMC-OA-format folder (train/valid/test.jsonl + images/) in place of the profile's data (also "
    "$PMCOA_DATA); its run writes under outputs/<run>/, never the committed study"
)


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class Limits:
    """What `validate` (and `preprocess`, for file sizes) refuses."""

    max_pixels: int = field(
        default=MAX_PIXELS, metadata=option("larger declared images are decompression bombs")
    )
    max_caption_chars: int = field(default=10_000, metadata=option("longer captions are skipped"))
    max_file_bytes: int = field(
        default=MAX_FILE_BYTES, metadata=option("larger image files are refused unread")
    )


@dataclass(frozen=True)
class PrepConfig:
    """What a shard's pixels depend on; each field is also a `preprocess` option."""

    size: int = field(default=224, metadata=option("side of the square shard images, px"))
    fit: str = field(
        default="pad",
        metadata=option(
            "pad: keep the whole figure (captions name locations); crop: CLIP-style centre crop",
            choices=("pad", "crop"),
        ),
    )
    clahe: bool = field(default=False, metadata=option("CLAHE on the L channel of LAB (glaucoma study)"))
    gamma: float = field(default=1.0, metadata=option("gamma correction; 1.0 = off"))
    denoise: int = field(default=0, metadata=option("median filter aperture (odd); 0 = off"))
    reduced_decode: bool = field(
        default=True,
        metadata=option(
            "decode a JPEG at least twice --size at 1/2, 1/4 or 1/8 of its size (libjpeg-turbo DCT scaling)"
        ),
    )

    def key(self) -> str:
        """Changes whenever the pixels a chunk holds would change."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------ models
@dataclass
class EncoderPretrain:
    """The default's tiny CLIP, pre-trained contrastively on the training split (BiomedCLIP's recipe)."""

    epochs: int = field(default=12, metadata=option("passes over the training split"))
    batch_size: int = field(default=128, metadata=option("image-caption pairs per contrastive batch"))
    lr: float = field(default=1e-3, metadata=option("peak learning rate (one-cycle)"))
    weight_decay: float = 0.1
    seed: int = field(default=0, metadata=option("seed of the weights and the order"))
    generated: int = field(
        default=0,
        metadata=option(
            "generated pairs added to the training split, from a stream of their own (the default's "
            "counterpart of BiomedCLIP's pre-training corpus); never added to other data"
        ),
    )


@dataclass
class TinyLM:
    """The default's tiny Mistral (a MistralConfig)."""

    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2  # grouped-query attention, as in Mistral-7B (32 heads, 8 KV heads)
    max_position_embeddings: int = 256


@dataclass
class LMPretrain:
    """The default's tokenizer and tiny LM, pre-trained on pairs of training captions."""

    epochs: int = field(default=6, metadata=option("passes over the training captions"))
    batch_size: int = field(default=32, metadata=option("caption pairs per batch"))
    lr: float = field(default=2e-3, metadata=option("peak learning rate (one-cycle)"))
    seed: int = field(default=0, metadata=option("seed of the weights and the order"))
    model: TinyLM = field(default_factory=TinyLM)


@dataclass
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class ModelSpec:
    """The captioner: a profile's train.yaml (and profile.yaml) fill it."""

    encoder: str  # "hf-hub:...", "local-dir:/path", or "tiny" (pre-trained on the data, in the work folder)
    lm: str  # hub id or local folder, or "tiny"
    encoder_output: str = "pooled"  # pooled | tokens
    visual_tokens: int = 4
    projector_hidden: int = 512
    quant: str | None = None  # None | 8bit | 4bit
    lora: LoraSpec = field(default_factory=LoraSpec)


# ------------------------------------------------------------------ training
@dataclass
class TrainConfig:
    """The training recipe: ``train:`` in a profile's train.yaml, each field also a `train` option."""

    steps: int = field(default=300, metadata=option("optimizer steps in all", flags=("--max-steps",)))
    align_steps: int = field(default=60, metadata=option("stage-1 steps (projector only); 0 skips stage 1"))
    batch_size: int = field(default=32, metadata=option("global batch per optimizer step"))
    grad_accum: int = field(default=1, metadata=option("micro-batches accumulated per step"))
    lr: float = field(default=2e-3, metadata=option("peak learning rate (AdamW)"))
    warmup: int = field(default=20, metadata=option("linear warm-up steps before the cosine decay"))
    weight_decay: float = field(default=0.0, metadata=option("AdamW weight decay"))
    clip: float = field(default=1.0, metadata=option("gradient clipping by global norm"))
    label_smoothing: float = field(default=0.0, metadata=option("cross-entropy label smoothing"))
    image: str = field(
        default="real",
        metadata=option(
            "real; zeros or shuffled (each pair shown another's image) train a blind captioner, the "
            "reference point that shows what the image adds",
            choices=IMAGES,
        ),
    )
    amp: str = field(
        default="auto",
        metadata=option(
            "autocast (auto: bf16 on a GPU, off on CPU)", choices=("auto", "off", "bf16", "fp16")
        ),
    )
    grad_ckpt: bool = field(default=False, metadata=option("activation (gradient) checkpointing in the LM"))
    group_by_length: bool = field(
        default=False, metadata=option("batches of similar caption lengths: less padding computed")
    )
    fused_adam: bool = field(
        default=False, metadata=option("AdamW's fused kernel (one launch for all parameters)")
    )
    compile: bool = field(default=False, metadata=option("torch.compile each LM block (as torchtitan does)"))
    seed: int = field(default=0, metadata=option("seed of the initial weights and the data order"))
    ckpt_every: int = field(default=100, metadata=option("steps between checkpoints"))
    keep_ckpts: int = field(default=3, metadata=option("newest checkpoints kept on disk"))
    profile_comm: int = field(
        default=0,
        metadata=option(
            "steps (after the first) timed by the profiler for communication; left out of throughput",
            metavar="STEPS",
        ),
    )
    log_every: int = field(default=10, metadata=option("steps between lines of metrics.jsonl"))


RECIPE = "the recipe (default: the profile's train.yaml)"  # the `train` options of TrainConfig


@dataclass
class TrainJob:
    """How one `train` run is set up; the recipe is ``TrainConfig`` (profile + ``overrides``)."""

    out: str = field(metadata=option("run folder: checkpoints, metrics.jsonl, train.json, captions.jsonl"))
    profile: str = field(default="default", metadata=option("papermill_params/<profile>/"))
    params_dir: str | None = field(
        default=None, metadata=option("folder of profiles (default: papermill_params/)")
    )
    data: str | None = field(default=None, metadata=option(DATA_HELP))
    strategy: str = field(
        default="single",
        metadata=option(
            "ddp / fsdp / pipeline under torchrun (torchrun --nproc_per_node=N -m lib train --strategy "
            "ddp ...); layers: one process, LM blocks split over --devices",
            choices=STRATEGIES,
        ),
    )
    schedule: str = field(
        default="1f1b", metadata=option("pipeline: the micro-batch schedule", choices=SCHEDULES)
    )
    microbatches: int = field(
        default=4, metadata=option("pipeline: micro-batches per step (they are its gradient accumulation)")
    )
    devices: str | None = field(
        default=None,
        metadata=option("layers: e.g. cuda:0,cuda:1 (default: every visible GPU; cpu,cpu without one)"),
    )
    cpu_offload: bool = field(
        default=False, metadata=option("fsdp: keep parameters and optimizer state on CPU")
    )
    resume: str | None = field(
        default=None, metadata=option("a run folder (its latest checkpoint) or a checkpoint")
    )
    source: str = field(
        default="features",
        metadata=option(
            "cached features, or pixels through the frozen encoder every step", choices=("features", "pixels")
        ),
    )
    device: str = field(
        default="auto", metadata=option("auto (cuda:LOCAL_RANK when there is a GPU, else cpu), cpu, cuda")
    )
    threads: int | None = field(
        default=None, metadata=option("torch threads per process (torchrun sets 1 per rank)")
    )
    no_eval: bool = field(default=False, metadata=option("skip captioning the test split"))
    name: str | None = field(
        default=None, metadata=option("results file name (default: <profile>-<strategy>[-<ranks>])")
    )
    results_dir: str | None = field(
        default=None, metadata=option("where results/training/<name>.json goes (default: the profile's)")
    )
    overrides: dict = field(default_factory=dict)  # TrainConfig fields given on the command line


# ------------------------------------------------------------------ evaluation and benchmarks
@dataclass
class EvalConfig:
    """How `evaluate` captions and scores a split; each field with help is also an `evaluate` option."""

    split: str = field(default="test", metadata=option("the split to caption and score"))
    num_beams: int = field(default=1, metadata=option("1: greedy; more: beam search", flags=("--beams",)))
    no_repeat_ngram: int = field(default=0, metadata=option("n-grams of this size never repeat; 0 = off"))
    repetition_penalty: float = field(
        default=1.0, metadata=option("CTRL's penalty on tokens already generated; 1.0 = off")
    )
    top_p: float = field(default=1.0, metadata=option("below 1: nucleus sampling (seeded) instead of search"))
    resamples: int = field(default=200, metadata=option("bootstrap resamples of the 95%% intervals"))
    seed: int = field(default=0, metadata=option("seed of the bootstrap"))
    throughput_images: int = field(
        default=32,
        metadata=option(
            "images captioned one at a time without cache (the slow reference of generation throughput)"
        ),
    )
    gallery: int = 6  # images in the gallery figure, one per modality first

    def decoding(self) -> dict:
        """``CaptionVLM.generate``'s search settings."""
        keys = ("num_beams", "no_repeat_ngram", "repetition_penalty", "top_p")
        return {k: getattr(self, k) for k in keys}


@dataclass
class AblationConfig:
    """How `ablate` trains and scores its rows; each field is also an `ablate` option."""

    steps: int = field(default=300, metadata=option("training steps of a row (rows vary it by a factor)"))
    split: str = field(
        default="valid", metadata=option("the split rows are scored on (the recipe is chosen there)")
    )
    resamples: int = field(default=200, metadata=option("bootstrap resamples of the 95%% intervals"))
    seed: int = field(default=0, metadata=option("seed of the bootstrap and of sampling"))
    scratch: str | None = field(
        default=None, metadata=option("folder of the rows' profiles and runs (default: <work_dir>/ablation)")
    )


@dataclass
class BaselineConfig:
    """How `baseline` classifies; each field with help is also a `baseline` option."""

    n_jobs: tuple[int, ...] = (1, 2)  # joblib workers and XGBoost threads to time; 1 must be among them
    rounds: int = field(default=200, metadata=option("XGBoost boosting rounds"))
    chunk: int = 64  # images per joblib task
    test_split: str = field(
        default="test", metadata=option("the split to score on (train on train)", flags=("--split",))
    )
    seed: int = field(default=0, metadata=option("seed of XGBoost and the probe"))


PADDINGS = ("max", "batch", "grouped")


@dataclass
class LMBench:
    """One full-size throughput measurement; each field with help is also a `bench lm` option."""

    size: str = field(
        default="biomistral-7b", metadata=option("architecture", choices=("biomistral-7b", "default", "tiny"))
    )
    batch: int = field(default=16, metadata=option("samples per step", flags=("--batch-size",)))
    caption_tokens: int = field(
        default=64,
        metadata=option("the length limit: longer captions are cut to it, --padding max pads to it"),
    )
    lengths: str = field(
        default="",
        metadata=option(
            "a PMC-OA-format folder whose training captions, in Mistral's tokens, give the captions' "
            "lengths (default: every caption caption_tokens long, the worst case)"
        ),
    )
    padding: str = field(
        default="max",
        metadata=option(
            "max: every caption padded to caption_tokens; batch: to the batch's longest (as train does); "
            "grouped: batches of similar lengths (train --group-by-length), then to the batch's longest",
            choices=PADDINGS,
        ),
    )
    visual_tokens: int = field(default=4, metadata=option("visual tokens from the projector"))
    feature_dim: int = 512  # BiomedCLIP's pooled image embedding
    steps: int = field(default=20, metadata=option("training steps (the first is not timed)"))
    amp: str = field(default="bf16", metadata=option("autocast precision", choices=("off", "bf16", "fp16")))
    grad_ckpt: bool = field(default=False, metadata=option("activation checkpointing in the LM"))
    fused_adam: bool = field(default=False, metadata=option("AdamW's fused kernel"))
    compile: bool = field(default=False, metadata=option("torch.compile each LM block"))
    quant: str | None = field(
        default=None,
        metadata=option("bitsandbytes base weights under LoRA (CUDA only)", choices=("8bit", "4bit")),
    )
    lr: float = 2e-4
    seed: int = 0
