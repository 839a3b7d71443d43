"""Shows the fine-tuning engine on a randomly initialised SD-v1.5-sized pipeline (UNet 860 M,
CLIP ViT-L/14-sized text encoder, KL-f8 VAE) for a couple of steps, with the paper profile's
mixed precision and gradient checkpointing, through the same ``finetune_folder`` the paper
profile calls on a real SD-v1.5 folder. On a CPU it uses bf16 autocast (fp16 autocast needs a
GPU) and 64 px images so that it fits in 24 GiB and a few minutes.

Usage: .venv/bin/python scripts/check_sd_sized.py [workdir] [fp16|bf16]
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from genlineage.data.imagefolder import write_imagefolder
from genlineage.models.pipeline_io import SDComponents, save_pipeline
from genlineage.models.tiny import noise_scheduler_config
from genlineage.models.tokenizer import build_clip_tokenizer
from genlineage.training.finetune import finetune_folder


def sd15_sized(captions: list[str], image_size: int) -> SDComponents:
    torch.manual_seed(0)
    tok = build_clip_tokenizer(captions, 77)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=image_size)
    unet = UNet2DConditionModel(sample_size=image_size // 8, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    return SDComponents(tok, te, vae, unet, noise_scheduler_config({}, "epsilon"))


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    precision = sys.argv[2] if len(sys.argv) > 2 else ("fp16" if torch.cuda.is_available() else "bf16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = 512 if device == "cuda" else 64
    captions = ["The woman has long bangs.", "a red star on a blue background"] * 2
    rng = np.random.default_rng(0)
    data = write_imagefolder(work / "data", [((rng.random((size, size, 3)) * 255).astype(np.uint8), c, {}) for c in captions])
    comp = sd15_sized(captions, size)
    params = {n: sum(p.numel() for p in m.parameters()) / 1e6 for n, m in
              (("unet", comp.unet), ("text_encoder", comp.text_encoder), ("vae", comp.vae))}
    print("parameters (M):", {k: round(v, 1) for k, v in params.items()})
    save_pipeline(comp, work / "sd15_sized")
    start = time.perf_counter()
    finetune_folder(work / "sd15_sized", data.root, work / "finetuned", {"steps": 2, "batch": 2, "lr": 2e-6,
                    "mixed_precision": precision, "gradient_checkpointing": True}, size, work / "ckpt",
                    device=device, progress=True)
    print(f"2 steps at batch 2, {precision}, gradient checkpointing, {size}px on {device}: "
          f"{time.perf_counter() - start:.1f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")


if __name__ == "__main__":
    main()
