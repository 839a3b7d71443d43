"""The tiny Stable-Diffusion family, built from profile configs (as diffusers' pipeline tests do).

Each part is the real diffusers/transformers class of SD (``AutoencoderKL``,
``UNet2DConditionModel``, ``CLIPTextModel``, a ``CLIPTokenizer``), only small. The two bases
mirror how SD-v2.1 differs from SD-v1.5: one shared VAE design, a different text encoder, a
different UNet attention layout, and (optionally) v-prediction.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .pipeline_io import SDComponents
from .tokenizer import build_clip_tokenizer


def build_vae(cfg: Mapping, image_size: int, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    blocks = list(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=tuple(blocks),
        layers_per_block=int(cfg.get("layers_per_block", 1)),
        latent_channels=int(cfg.get("latent_channels", 4)),
        norm_num_groups=int(cfg.get("norm_num_groups", 32)),
        sample_size=image_size,
    )


def build_text_encoder(cfg: Mapping, tokenizer, seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=int(cfg["num_attention_heads"]),
        max_position_embeddings=int(tokenizer.model_max_length),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act=str(cfg.get("hidden_act", "quick_gelu")),
    )
    return CLIPTextModel(config)


def build_unet(cfg: Mapping, latent_size: int, latent_channels: int, cross_attention_dim: int, seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    blocks = tuple(cfg["block_out_channels"])
    n = len(blocks)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=blocks,
        layers_per_block=int(cfg.get("layers_per_block", 1)),
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.get("attention_head_dim", 8),
        norm_num_groups=int(cfg.get("norm_num_groups", 32)),
    )


def noise_scheduler_config(training_cfg: Mapping, prediction_type: str) -> dict:
    """SD's DDPM training schedule (scaled-linear betas), with the base's prediction type."""
    cfg = dict(training_cfg)
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": int(cfg.get("num_train_timesteps", 1000)),
        "beta_schedule": cfg.get("beta_schedule", "scaled_linear"),
        "beta_start": float(cfg.get("beta_start", 0.00085)),
        "beta_end": float(cfg.get("beta_end", 0.012)),
        "prediction_type": prediction_type,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def build_base(base_cfg: Mapping, vae: AutoencoderKL, captions: Iterable[str], image_size: int,
               scheduler_cfg: Mapping) -> SDComponents:
    """A randomly initialised tiny SD pipeline around a (pre-trained) shared VAE."""
    seed = int(base_cfg["seed"])
    tokenizer = build_clip_tokenizer(captions, int(base_cfg["tokenizer"]["max_length"]))
    text_encoder = build_text_encoder(base_cfg["text_encoder"], tokenizer, seed)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_unet(base_cfg["unet"], image_size // scale, int(vae.config.latent_channels),
                      int(base_cfg["text_encoder"]["hidden_size"]), seed + 1)
    return SDComponents(tokenizer, text_encoder, vae, unet,
                        noise_scheduler_config(scheduler_cfg, base_cfg.get("prediction_type", "epsilon")))
