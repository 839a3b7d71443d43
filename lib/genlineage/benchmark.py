"""Throughput of the tiny family's training and generation engines against bare loops.

Not a timed test: a measurement, run with ``python scripts/benchmark.py`` and reported in the
notes. The bare loops are what one writes from diffusers' examples without our engine:
training encodes every batch with the VAE and the text encoder at each step (as
``train_text_to_image.py`` does); generation calls ``StableDiffusionPipeline`` with one
generator per image.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .generation import GenerationConfig, generate
from .models.pipeline_io import SDComponents
from .training.encode import encode_dataset, images_to_tensor, tokenize
from .training.sd import TrainConfig, train_sd


@dataclass
class Measurement:
    what: str
    engine: str
    threads: int
    rate: float
    unit: str


def _timed(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bare_train_steps(components: SDComponents, images: np.ndarray, captions: list[str], steps: int, batch: int, lr: float) -> None:
    """The diffusers-example loop: VAE and text encoder run on every batch."""
    unet, vae, te = components.unet, components.vae, components.text_encoder
    unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr)
    sched = components.noise_scheduler()
    x_all, ids_all = images_to_tensor(images), tokenize(components, captions)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=gen)
        with torch.no_grad():
            latents = vae.encode(x_all[idx]).latent_dist.sample() * vae.config.scaling_factor
            states = te(ids_all[idx])[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,))
        target = sched.get_velocity(latents, noise, t) if sched.config.prediction_type == "v_prediction" else noise
        loss = F.mse_loss(unet(sched.add_noise(latents, noise, t), t, states).sample, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    unet.eval().requires_grad_(False)


def bare_generate(components: SDComponents, prompts: list[str], seeds: list[int], cfg: GenerationConfig) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
                                   unet=components.unet, scheduler=components.sampler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    for start in range(0, len(prompts), cfg.batch):
        gens = [torch.Generator().manual_seed(s) for s in seeds[start:start + cfg.batch]]
        pipe(prompts[start:start + cfg.batch], generator=gens, num_inference_steps=cfg.steps,
             guidance_scale=cfg.guidance_scale, output_type="np")


def measure(components: SDComponents, images: np.ndarray, captions: list[str], train: TrainConfig,
            gen: GenerationConfig, threads: int, steps: int = 40, n_images: int = 64, repeats: int = 2,
            work_dir=None) -> list[Measurement]:
    """Steps/s and images/s of our engines and of the bare loops, at ``threads`` torch threads."""
    import tempfile
    from pathlib import Path

    torch.set_num_threads(threads)
    prompts = [captions[i % len(captions)] for i in range(n_images)]
    seeds = list(range(n_images))
    work = Path(work_dir or tempfile.mkdtemp())
    cfg = TrainConfig(**{**train.__dict__, "steps": steps, "checkpoint_every": 0})
    counter = iter(range(10**6))

    def ours_train() -> None:
        data = encode_dataset(components, images, captions)  # the engine's per-run cost included
        train_sd(components, data, cfg, work / f"run{next(counter)}", progress=False)

    results = [
        Measurement("fine-tuning", "genlineage", threads, steps / _timed(ours_train, repeats), "steps/s"),
        Measurement("fine-tuning", "bare diffusers loop", threads,
                    steps / _timed(lambda: bare_train_steps(components, images, captions, steps, cfg.batch, cfg.lr), repeats), "steps/s"),
        Measurement("generation", "genlineage", threads,
                    n_images / _timed(lambda: generate(components, prompts, seeds, gen), repeats), "images/s"),
        Measurement("generation", "StableDiffusionPipeline", threads,
                    n_images / _timed(lambda: bare_generate(components, prompts, seeds, gen), repeats), "images/s"),
    ]
    return results
