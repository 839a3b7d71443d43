"""The tiny Stable-Diffusion family, built from profile configs (as diffusers' pipeline tests do).

Each part is the real diffusers/transformers class of SD (``AutoencoderKL``,
``UNet2DConditionModel``, ``CLIPTextModel``, a ``CLIPTokenizer``), only small. The two bases
mirror how SD-v2.1 differs from SD-v1.5: one shared VAE design, a different text encoder, a
different UNet attention layout, and (optionally) v-prediction.
"""
from __future__ import annotations

from typing import Iterable

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..config import BaseSettings, NoiseSchedulerSettings, TextEncoderSettings, UNetSettings, VAESettings
from ..errors import InputError
from .pipeline_io import SDComponents
from .tokenizer import build_clip_tokenizer


def build_vae(cfg: VAESettings, image_size: int, seed: int) -> AutoencoderKL:
    torch.manual_seed(seed)
    blocks = list(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=tuple(blocks),
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=image_size,
    )


def build_text_encoder(cfg: TextEncoderSettings, tokenizer, seed: int) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        max_position_embeddings=int(tokenizer.model_max_length),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act=cfg.hidden_act,
    )
    return CLIPTextModel(config)


def build_unet(cfg: UNetSettings, latent_size: int, latent_channels: int, cross_attention_dim: int,
               seed: int) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    blocks = tuple(cfg.block_out_channels)
    n = len(blocks)
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=blocks,
        layers_per_block=cfg.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )


def noise_scheduler_config(cfg: NoiseSchedulerSettings, prediction_type: str) -> dict:
    """SD's DDPM training schedule (scaled-linear betas), with the base's prediction type."""
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_schedule": cfg.beta_schedule,
        "beta_start": cfg.beta_start,
        "beta_end": cfg.beta_end,
        "prediction_type": prediction_type,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }


def build_base(base_cfg: BaseSettings, vae: AutoencoderKL, captions: Iterable[str], image_size: int,
               scheduler_cfg: NoiseSchedulerSettings) -> SDComponents:
    """A randomly initialised tiny SD pipeline around a (pre-trained) shared VAE."""
    if base_cfg.text_encoder is None or base_cfg.unet is None:
        raise InputError("a tiny base needs models.bases.<name>.text_encoder and .unet (or a path to a local pipeline).")
    seed = base_cfg.seed
    tokenizer = build_clip_tokenizer(captions, base_cfg.tokenizer.max_length)
    text_encoder = build_text_encoder(base_cfg.text_encoder, tokenizer, seed)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_unet(base_cfg.unet, image_size // scale, int(vae.config.latent_channels),
                      base_cfg.text_encoder.hidden_size, seed + 1)
    return SDComponents(tokenizer, text_encoder, vae, unet, noise_scheduler_config(scheduler_cfg, base_cfg.prediction_type))
