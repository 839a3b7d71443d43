"""Pre-training of the tiny family's shared KL autoencoder.

SD-v1.5 and SD-v2.1 share one VAE design (KL-f8); the tiny bases share one tiny VAE trained here
on the pre-training corpus: pixel MSE plus a small KL term, then the latent scaling factor is
set so latents have unit variance, as SD's 0.18215 was chosen.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from ..config import VAETrainConfig
from .encode import images_to_tensor


def train_vae(vae: AutoencoderKL, images: np.ndarray, cfg: VAETrainConfig, progress: bool = True) -> dict:
    """Train ``vae`` in place on [N,H,W,3] images in [0,1]; return reconstruction figures."""
    started = time.perf_counter()
    data = images_to_tensor(images)
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    vae.train().requires_grad_(True)
    bar = tqdm(range(cfg.steps), desc="vae", unit="step", disable=not progress, leave=False)
    for _ in bar:
        x = data[torch.randint(0, len(data), (cfg.batch,), generator=gen)]
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, x) + cfg.kl_weight * dist.kl().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        sample = data[: min(len(data), 256)]
        dist = vae.encode(sample).latent_dist
        recon = vae.decode(dist.mean).sample
        std = float(dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / max(std, 1e-6))
    rmse = float(((recon - sample) / 2).pow(2).mean(dim=(1, 2, 3)).sqrt().mean())
    return {"recon_rmse": rmse, "latent_std": std, "scaling_factor": 1.0 / max(std, 1e-6),
            "train_seconds": round(time.perf_counter() - started, 1), "n_train": len(images)}
