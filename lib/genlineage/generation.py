"""One generation engine: batched, seeded DDIM sampling with classifier-free guidance, cached.

G(M, p, s) of METHOD.md: the image model M draws for prompt p from seed s. Each image's starting
noise comes from its own generator seeded by s, so an image does not depend on which batch it was
drawn in, and DDIM with eta = 0 makes the rest deterministic. Results are cached as PNG under a
hash of (model content, prompt, seed, sampler settings): a second query of the same image costs
a file read, and an interrupted batch resumes where it stopped. The thread count is not part of
the key because it does not change a bit of any generation (1 and 2 threads give identical
images: ``tests/test_generation.py`` checks it), so stage 04's one-thread jobs and
``genlineage verify`` at torch's default count share one cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .io import atomic_path, stable_hash
from .models.pipeline_io import SDComponents, fingerprint
from .training.encode import tensor_to_images, tokenize


@dataclass(frozen=True)
class GenerationConfig:
    sampler: str = "ddim"
    steps: int = 20
    guidance_scale: float = 3.0
    eta: float = 0.0
    batch: int = 64

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> "GenerationConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(cfg).items() if k in names})

    def key(self) -> dict:
        """Settings that change the image (the batch size does not)."""
        d = asdict(self)
        d.pop("batch")
        return d


def _initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def _encode_prompts(components: SDComponents, prompts: Sequence[str]) -> torch.Tensor:
    ids = tokenize(components, list(prompts)).to(components.device)
    return components.text_encoder(ids)[0]


@torch.no_grad()
def generate(components: SDComponents, prompts: Sequence[str], seeds: Sequence[int], cfg: GenerationConfig,
             progress: bool = False) -> np.ndarray:
    """uint8 images [N,H,W,3] for each (prompt, seed) pair, without caching."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: pass one seed per prompt.")
    if cfg.sampler != "ddim":
        raise ValueError(f"sampler {cfg.sampler!r} is not supported; use 'ddim'.")
    unet, vae = components.unet, components.vae
    device, dtype = components.device, unet.dtype
    latent_shape = (int(unet.config.in_channels), int(unet.config.sample_size), int(unet.config.sample_size))
    uncond = _encode_prompts(components, [""])
    out: list[np.ndarray] = []
    starts = range(0, len(prompts), cfg.batch)
    for start in tqdm(starts, desc="generate", disable=not progress, leave=False):
        chunk_prompts = list(prompts[start:start + cfg.batch])
        chunk_seeds = list(seeds[start:start + cfg.batch])
        n = len(chunk_prompts)
        cond = _encode_prompts(components, chunk_prompts)
        states = torch.cat([uncond.expand(n, -1, -1), cond]).to(dtype)
        sampler = components.sampler()
        sampler.set_timesteps(cfg.steps, device=device)
        latents = torch.stack([_initial_noise(s, latent_shape) for s in chunk_seeds]).to(device, dtype)
        latents = latents * sampler.init_noise_sigma
        for t in sampler.timesteps:
            model_in = sampler.scale_model_input(torch.cat([latents, latents]), t)
            pred_uncond, pred_cond = unet(model_in, t, states).sample.chunk(2)
            pred = pred_uncond + cfg.guidance_scale * (pred_cond - pred_uncond)
            latents = sampler.step(pred, t, latents, eta=cfg.eta).prev_sample
        images = vae.decode(latents / vae.config.scaling_factor).sample
        out.append(tensor_to_images(images))
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.uint8)


class GenerationCache:
    """PNG files under ``root/<model fingerprint>/<key[:2]>/<key>.png``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, model_key: str, prompt: str, seed: int, cfg: GenerationConfig) -> Path:
        key = stable_hash({"prompt": prompt, "seed": int(seed), "settings": cfg.key()}, length=24)
        return self.root / model_key / key[:2] / f"{key}.png"


def generate_cached(components: SDComponents, prompts: Sequence[str], seeds: Sequence[int], cfg: GenerationConfig,
                    cache: GenerationCache | None, progress: bool = False) -> np.ndarray:
    """Like :func:`generate`, reading and writing the cache; only missing images are drawn."""
    if cache is None:
        return generate(components, prompts, seeds, cfg, progress)
    if components.path is None:
        raise ValueError("caching needs a model loaded from a folder (its content is the cache key)")
    model_key = fingerprint(components.path)
    paths = [cache.path(model_key, p, s, cfg) for p, s in zip(prompts, seeds)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    for start in tqdm(range(0, len(missing), cfg.batch), desc="generate", disable=not progress or not missing, leave=False):
        todo = missing[start:start + cfg.batch]
        images = generate(components, [prompts[i] for i in todo], [seeds[i] for i in todo], cfg)
        for i, image in zip(todo, images):
            with atomic_path(paths[i]) as tmp:
                Image.fromarray(image).save(tmp, format="PNG")
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
