"""JPEG decoding and resizing of a batch of figures on the GPU (``torchvision.io.decode_jpeg`` with
``device="cuda"``, nvJPEG, batched) against the same on the CPU (libjpeg-turbo, one image after
another), in images per second. Paths run in turn (CPU, device, CPU, device ...) and the gain is the
median of the per-repeat ratios with the study's interval (``lib.stats``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from lib.data.files import read_data_file
from lib.data.pmcoa import image_root
from lib.stats import KIND, paired


def jpegs(data_dir: str | Path, n: int) -> list[torch.Tensor]:
    """The first n JPEG files of a PMC-OA-format folder, as encoded bytes (uint8 tensors)."""
    root = image_root(data_dir)
    names = sorted(p.name for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
    if not names:
        raise FileNotFoundError(f"{root}: no JPEG files to decode")
    # through the checked reader: regular files inside the image folder, under the size limit
    return [torch.frombuffer(bytearray(read_data_file(root, name)), dtype=torch.uint8) for name in names]


def decode_resize(blobs: list[torch.Tensor], side: int, device: str) -> torch.Tensor:
    """Encoded JPEGs -> uint8 [N, 3, side, side], decoded and resized (antialiased bilinear) on ``device``."""
    images = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)
    out = [
        F.interpolate(im[None].float(), size=(side, side), mode="bilinear", antialias=True)[0]
        for im in images
    ]
    return torch.stack(out).round_().clamp_(0, 255).to(torch.uint8)


def _rate(blobs: list[torch.Tensor], side: int, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    decode_resize(blobs, side, device)
    sync()
    return len(blobs) / (time.perf_counter() - start)


def measure_decode(
    data_dir: str | Path, device: str, n: int = 256, side: int = 224, repeats: int = 5
) -> dict:
    blobs = jpegs(data_dir, n)
    decode_resize(blobs[:8], side, device)  # warm-up: nvJPEG handles, kernels
    cpu, dev = [], []
    for _ in range(repeats):
        cpu.append(_rate(blobs, side, "cpu"))
        dev.append(_rate(blobs, side, device))
    return {
        "images": len(blobs),
        "side": side,
        "cpu_images_per_s": cpu,
        "device_images_per_s": dev,
        "device": device,
        "gain_vs_cpu": paired(dev, cpu),
        "interval": KIND,
        "cpu_threads": torch.get_num_threads(),
    }
