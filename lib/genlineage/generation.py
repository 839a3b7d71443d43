"""One generation engine: batched, seeded DDIM sampling with classifier-free guidance, cached.

G(M, p, s) (docs/method.md#generation): the image model M draws for prompt p from seed s. Each image's starting
noise comes from its own generator seeded by s, and DDIM with eta = 0 makes the rest deterministic.
To the last bit, an image also depends on the shape of the batch it is drawn in and on the thread
count (the float kernels' summation order follows both), so every batch holds exactly
``GenerationConfig.batch`` images (a short one is padded with throw-away prompts) and runs with
``GenerationConfig.threads`` torch threads, whoever calls: an image is then the same whichever
other images it was drawn with, whether a stage job, a notebook or ``genlineage verify`` drew it.
Results are cached as PNG under a hash of (model content, prompt, seed, every generation setting):
a second query of the same image costs a file read, and an interrupted batch resumes where it
stopped. PNG encoding (about 50 ms a 512 px image) runs on a writer thread while the next batch
is drawn, so the accelerator does not wait for zlib.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .config import GenerationConfig
from .errors import NotFiniteError
from .io import atomic_path, stable_hash
from .jobs import torch_threads
from .models.pipeline_io import SDComponents
from .training.encode import tensor_to_images, tokenize


def _initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def _encode_prompts(components: SDComponents, prompts: Sequence[str]) -> torch.Tensor:
    ids = tokenize(components, list(prompts)).to(components.device)
    return components.text_encoder(ids)[0]


@torch.no_grad()
def generate(components: SDComponents, prompts: Sequence[str], seeds: Sequence[int], cfg: GenerationConfig,
             progress: bool = False) -> np.ndarray:
    """uint8 images [N,H,W,3] for each (prompt, seed) pair, without caching: batches of exactly
    ``cfg.batch`` (the last one padded) at ``cfg.threads`` threads."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: pass one seed per prompt.")
    if cfg.sampler != "ddim":
        raise ValueError(f"sampler {cfg.sampler!r} is not supported; use 'ddim'.")
    out: list[np.ndarray] = []
    with torch_threads(cfg.threads):
        uncond = _encode_prompts(components, [""])
        bar = tqdm(total=len(prompts), desc="generate", unit="image", disable=not progress, leave=False)
        for start in range(0, len(prompts), cfg.batch):
            chunk = list(prompts[start:start + cfg.batch])
            padded_prompts, padded_seeds = _padded(chunk, seeds[start:start + cfg.batch], cfg.batch)
            out.append(_draw_named(components, padded_prompts, padded_seeds, uncond, cfg)[:len(chunk)])
            bar.update(len(chunk))
        bar.close()
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.uint8)


def image_size(components: SDComponents, cfg: GenerationConfig) -> int:
    """The side in px of the images ``generate`` draws: the profile's ``generation.image_size``, or
    the model's own."""
    return components.image_size if cfg.image_size is None else int(cfg.image_size)


PADDING_PROMPT, PADDING_SEED = "", 0  # what fills a short batch; its images are thrown away


def _padded(prompts: Sequence[str], seeds: Sequence[int], batch: int) -> tuple[list[str], list[int]]:
    """A chunk filled up to ``batch`` entries, so that every batch has one shape."""
    missing = batch - len(prompts)
    return list(prompts) + [PADDING_PROMPT] * missing, [int(s) for s in seeds] + [PADDING_SEED] * missing


def _draw_named(components: SDComponents, prompts: list[str], seeds: list[int], uncond: torch.Tensor,
                cfg: GenerationConfig) -> np.ndarray:
    """:func:`_draw`, with a refusal of non-finite images naming the model that drew them."""
    try:
        return _draw(components, prompts, seeds, uncond, cfg)
    except NotFiniteError as err:
        raise NotFiniteError(f"{components.name} drew images that are not finite: {err}. It is refused, never judged; "
                             "use an intact copy of the model.") from None


def _draw(components: SDComponents, prompts: list[str], seeds: list[int], uncond: torch.Tensor,
          cfg: GenerationConfig) -> np.ndarray:
    """One batch through the DDIM loop with classifier-free guidance, decoded to uint8."""
    unet, vae = components.unet, components.vae
    device, dtype = components.device, unet.dtype
    side = int(unet.config.sample_size) if cfg.image_size is None else int(cfg.image_size) // components.vae_scale_factor
    latent_shape = (int(unet.config.in_channels), side, side)
    cond = _encode_prompts(components, prompts)
    states = torch.cat([uncond.expand(len(prompts), -1, -1), cond]).to(dtype)
    sampler = components.sampler()
    sampler.set_timesteps(cfg.steps, device=device)
    latents = torch.stack([_initial_noise(s, latent_shape) for s in seeds]).to(device, dtype)
    latents = latents * sampler.init_noise_sigma
    for t in sampler.timesteps:
        model_in = sampler.scale_model_input(torch.cat([latents, latents]), t)
        pred_uncond, pred_cond = unet(model_in, t, states).sample.chunk(2)
        pred = pred_uncond + cfg.guidance_scale * (pred_cond - pred_uncond)
        latents = sampler.step(pred, t, latents, eta=cfg.eta).prev_sample
    return tensor_to_images(vae.decode(latents / vae.config.scaling_factor).sample)


class GenerationCache:
    """PNG files under ``root/<model fingerprint>/<key[:2]>/<key>.png``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, model_key: str, prompt: str, seed: int, cfg: GenerationConfig) -> Path:
        key = stable_hash({"prompt": prompt, "seed": int(seed), "settings": cfg.key()}, length=24)
        return self.root / model_key / key[:2] / f"{key}.png"

    def paths(self, model_key: str, prompts: Sequence[str], seeds: Sequence[int], cfg: GenerationConfig) -> list[Path]:
        return [self.path(model_key, p, s, cfg) for p, s in zip(prompts, seeds)]


def release_cached(cache: GenerationCache, model_key: str, prompts: Sequence[str], seeds: Sequence[int],
                   cfg: GenerationConfig) -> int:
    """Remove these images from the cache; how many were there. For images that only one table
    reads, once it is written, of a model that is kept (so any of them can be drawn again, to the
    bit: the batch shape and threads are fixed)."""
    removed = 0
    for path in dict.fromkeys(cache.paths(model_key, prompts, seeds, cfg)):
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def cached_images(cache: GenerationCache, model_key: str, prompts: Sequence[str], seeds: Sequence[int],
                  cfg: GenerationConfig) -> np.ndarray | None:
    """Every image asked for, read from the cache, or None when any is missing: what lets a caller
    that has not loaded the model yet (it keys on the files' content) skip loading it."""
    paths = cache.paths(model_key, prompts, seeds, cfg)
    if not paths or not all(p.is_file() for p in paths):
        return None
    return np.stack([read_png(p) for p in paths])


def generate_cached(components: SDComponents, prompts: Sequence[str], seeds: Sequence[int], cfg: GenerationConfig,
                    cache: GenerationCache | None, progress: bool = False) -> np.ndarray:
    """Like :func:`generate`, reading and writing the cache; only missing images are drawn."""
    if cache is None:
        return generate(components, prompts, seeds, cfg, progress)
    model_key = components.content_id
    if model_key is None:
        raise ValueError("caching needs a model loaded from a folder or a LoRA file (its content is the cache key)")
    paths = cache.paths(model_key, prompts, seeds, cfg)
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    drawn: dict[int, np.ndarray] = {}
    writes: list[Future] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="png-writer") as writer:
        bar = tqdm(total=len(missing), desc="generate", unit="image", disable=not progress or not missing, leave=False)
        for start in range(0, len(missing), cfg.batch):
            todo = missing[start:start + cfg.batch]
            images = generate(components, [prompts[i] for i in todo], [seeds[i] for i in todo], cfg)
            for i, image in zip(todo, images):
                drawn[i] = image
                writes.append(writer.submit(write_png, paths[i], image))
            bar.update(len(todo))
        bar.close()
    for done in writes:
        done.result()  # a failed write (a full disk) stops the caller here, naming the error
    return np.stack([drawn[i] if i in drawn else read_png(p) for i, p in enumerate(paths)])


def write_png(path: Path, image: np.ndarray) -> None:
    """One cached image, written atomically (lossless: reading it back gives ``image`` exactly)."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))
