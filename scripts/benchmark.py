"""Benchmark of the tiny family's engines (fine-tuning steps/s, generated images/s) against the
bare loops one writes from diffusers' examples, on the same model, at 1 and 2 threads, plus two
single-thread processes side by side.

Usage: .venv/bin/python scripts/benchmark.py [profile] [base]
Needs the profile's base model (run notebook 02 or run_all.sh first). Writes
data/<profile>/results/benchmark/benchmark.json and prints a table.

Not a timed test: a measurement, reported in the notes. The bare loops are what one writes from
diffusers' examples without our engine: training encodes every batch with the VAE and the text
encoder at each step (as ``train_text_to_image.py`` does); generation calls
``StableDiffusionPipeline`` with one generator per image. One self-contained script: nothing in
the package depends on it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from genlineage import layout
from genlineage.config import load_profile
from genlineage.data.imagefolder import read_imagefolder
from genlineage.generation import GenerationConfig, generate
from genlineage.io import write_json
from genlineage.models.pipeline_io import SDComponents, load_pipeline
from genlineage.training.encode import encode_dataset, images_to_tensor, tokenize
from genlineage.training.sd import TrainConfig, train_sd


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


def bare_train_steps(components: SDComponents, images: np.ndarray, captions: list[str], steps: int, batch: int,
                     lr: float) -> None:
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
                    steps / _timed(lambda: bare_train_steps(components, images, captions, steps, cfg.batch, cfg.lr), repeats),
                    "steps/s"),
        Measurement("generation", "genlineage", threads,
                    n_images / _timed(lambda: generate(components, prompts, seeds, gen), repeats), "images/s"),
        Measurement("generation", "StableDiffusionPipeline", threads,
                    n_images / _timed(lambda: bare_generate(components, prompts, seeds, gen), repeats), "images/s"),
    ]
    return results


def one(profile_name: str, base: str, threads: int) -> list[dict]:
    p = load_profile(profile_name)
    folder = read_imagefolder(layout.datasets_dir(p) / "celeba_source", size=p.data.image_size)
    comp = load_pipeline(layout.base_dir(p, base))
    res = measure(comp, folder.load_images(), folder.captions, TrainConfig.from_mapping(p.training.finetune),
                  p.generation, threads)
    return [r.__dict__ for r in res]


def main() -> None:
    profile_name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    base = sys.argv[2] if len(sys.argv) > 2 else "v1"
    if len(sys.argv) > 3 and sys.argv[3] == "--worker":
        print(json.dumps(one(profile_name, base, int(sys.argv[4]))))
        return
    rows = one(profile_name, base, 1) + one(profile_name, base, 2)
    # two single-thread jobs side by side: total throughput of the pair
    cmd = [sys.executable, __file__, profile_name, base, "--worker", "1"]
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    pair = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    for i, r in enumerate(pair[0]):
        rows.append({**r, "engine": r["engine"] + ", 2 procs x 1 thread", "threads": 2,
                     "rate": r["rate"] + pair[1][i]["rate"]})
    table = pd.DataFrame(rows)
    p = load_profile(profile_name)
    write_json(layout.results_dir(p, "benchmark") / "benchmark.json",
               {"rows": rows, "wall_seconds": time.perf_counter() - start})
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
