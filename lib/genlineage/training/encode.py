"""Encoding a dataset once: VAE latent distributions and tokenised captions.

The VAE (and usually the text encoder) is frozen during SD fine-tuning, so encoding every image
once and sampling from its stored latent distribution at each step gives the same objective as
diffusers' train_text_to_image.py at a fraction of the cost.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import NotFiniteError
from ..models.pipeline_io import SDComponents


@dataclass
class EncodedDataset:
    """Latent mean/std per image and token ids per caption, on the training device."""

    mean: torch.Tensor      # [N, C, h, w]
    std: torch.Tensor       # [N, C, h, w]
    input_ids: torch.Tensor  # [N, L]

    def __len__(self) -> int:
        return int(self.mean.shape[0])


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """[N,H,W,3] floats in [0,1] -> [N,3,H,W] in [-1,1], as SD's VAE expects."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() * 2.0 - 1.0


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] in [-1,1] -> uint8 [N,H,W,3]; refused when any value is not finite, since clamping
    and rounding would turn NaN into black pixels that look like an image."""
    if not torch.isfinite(x).all():
        raise NotFiniteError(f"{int((~torch.isfinite(x)).sum())} of the {x.numel()} values of the decoded images are "
                             "not finite numbers (NaN or infinity); the model's weights or configs are broken")
    x = (x.float() / 2 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


def tokenize(components: SDComponents, captions: list[str]) -> torch.Tensor:
    tok = components.tokenizer
    return tok(list(captions), padding="max_length", max_length=tok.model_max_length,
               truncation=True, return_tensors="pt").input_ids


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def frozen_at(module: torch.nn.Module, dtype: str | torch.dtype) -> torch.nn.Module:
    """``module`` itself when it already has ``dtype``, else a copy in ``dtype``: a frozen part runs
    in half precision without rounding the fp32 weights the pipeline keeps (and saves)."""
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if next(module.parameters()).dtype == dtype:
        return module
    return copy.deepcopy(module).to(dtype=dtype)


@torch.no_grad()
def encode_dataset(components: SDComponents, images: np.ndarray, captions: list[str], batch: int = 64,
                   dtype: str | torch.dtype = "float32") -> EncodedDataset:
    """Every image's latent distribution through the frozen VAE (run in ``dtype``, ``batch`` images
    at a time; the stored moments are fp32) and every caption's token ids."""
    vae, device = frozen_at(components.vae, dtype), components.device
    means, stds = [], []
    for start in range(0, len(images), batch):
        x = images_to_tensor(images[start:start + batch]).to(device, vae.dtype)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return EncodedDataset(torch.cat(means), torch.cat(stds), tokenize(components, captions).to(device))
