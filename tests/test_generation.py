"""The generation engine: deterministic, batch-independent, cached, and equal to diffusers'."""
from __future__ import annotations

import numpy as np
import torch

from genlineage.generation import GenerationCache, GenerationConfig, generate, generate_cached
from genlineage.models.pipeline_io import load_pipeline

from conftest import CAPTIONS

CFG = GenerationConfig(steps=4, guidance_scale=3.0, batch=3)


def test_generation_is_deterministic_and_seeded(saved_pipeline):
    comp = load_pipeline(saved_pipeline)
    a = generate(comp, CAPTIONS[:4], [0, 1, 2, 3], CFG)
    b = generate(comp, CAPTIONS[:4], [0, 1, 2, 3], CFG)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    c = generate(comp, CAPTIONS[:4], [9, 1, 2, 3], CFG)
    assert not np.array_equal(a[0], c[0])


def test_an_image_does_not_depend_on_its_batch(saved_pipeline):
    """Every batch has one shape (short ones are padded), so an image is the same to the last bit
    whichever other images it is drawn with and in which order."""
    comp = load_pipeline(saved_pipeline)
    cfg = GenerationConfig(steps=4, batch=4)
    together = generate(comp, CAPTIONS[:4], [0, 1, 2, 3], cfg)
    assert np.array_equal(generate(comp, CAPTIONS[2:3], [2], cfg)[0], together[2])
    assert np.array_equal(generate(comp, CAPTIONS[:4][::-1], [3, 2, 1, 0], cfg)[::-1], together)


def test_cache_returns_the_same_images_and_skips_work(saved_pipeline, tmp_path, monkeypatch):
    comp = load_pipeline(saved_pipeline)
    cache = GenerationCache(tmp_path)
    first = generate_cached(comp, CAPTIONS[:3], [0, 1, 2], CFG, cache)
    assert len(list(tmp_path.rglob("*.png"))) == 3
    import genlineage.generation as gen

    monkeypatch.setattr(gen, "generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("regenerated")))
    again = generate_cached(comp, CAPTIONS[:3], [0, 1, 2], CFG, cache)
    assert np.array_equal(first, again)


def test_cached_images_are_written_off_the_drawing_thread_and_read_back_equal(saved_pipeline, tmp_path, monkeypatch):
    """PNG encoding runs on a writer thread, so the next batch is drawn meanwhile; what the first
    call returns from memory equals what a later call reads from the files."""
    import threading

    import genlineage.generation as gen

    writers, real = [], gen.write_png
    monkeypatch.setattr(gen, "write_png", lambda path, image: (writers.append(threading.current_thread()),
                                                               real(path, image))[1])
    comp = load_pipeline(saved_pipeline)
    first = generate_cached(comp, CAPTIONS[:5], [0, 1, 2, 3, 4], CFG, GenerationCache(tmp_path))
    assert len(writers) == 5 and all(t is not threading.main_thread() for t in writers)
    again = generate_cached(comp, CAPTIONS[:5], [0, 1, 2, 3, 4], CFG, GenerationCache(tmp_path))
    assert len(writers) == 5 and np.array_equal(first, again)


def test_engine_matches_the_diffusers_pipeline(saved_pipeline):
    from diffusers import StableDiffusionPipeline

    comp = load_pipeline(saved_pipeline)
    ours = generate(comp, CAPTIONS[:2], [5, 6], GenerationConfig(steps=5, guidance_scale=2.0, batch=2))
    pipe = StableDiffusionPipeline.from_pretrained(saved_pipeline, local_files_only=True, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    shape = (4, 8, 8)
    latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in (5, 6)])
    theirs = pipe(CAPTIONS[:2], num_inference_steps=5, guidance_scale=2.0, latents=latents, output_type="np").images
    theirs = (theirs * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2


def _perturbed(components, seed: int = 0):
    """Weights moved off their initialisation (as training moves them): a freshly built model's
    near-symmetric weights could hide an order-of-summation difference."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (components.unet, components.vae, components.text_encoder):
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return components


def test_the_callers_thread_count_does_not_reach_an_image_and_the_settings_key_every_image(saved_pipeline, tmp_path):
    """Why a stage job (1 thread), a notebook and `genlineage verify` can share one cache: every
    generation runs at the profile's ``generation.threads`` whatever the caller set, in batches of
    one shape. The batch size and thread count still change an image's last bits, so both are in
    its cache key."""
    from genlineage.generation import GenerationCache
    from genlineage.jobs import torch_threads

    comp = _perturbed(load_pipeline(saved_pipeline))
    cfg = GenerationConfig(steps=4, batch=5, threads=1)
    seen = []
    real = comp.unet.forward
    comp.unet.forward = lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1]
    with torch_threads(2):
        at_two = generate(comp, CAPTIONS[:7], list(range(7)), cfg)
        assert torch.get_num_threads() == 2, "the caller's count is restored"
    assert set(seen) == {1}, "every UNet call ran at generation.threads"
    with torch_threads(1):
        assert np.array_equal(generate(comp, CAPTIONS[:7], list(range(7)), cfg), at_two)
    cache = GenerationCache(tmp_path)
    paths = {cache.path("m", "p", 0, c) for c in (cfg, cfg.replace(threads=2), cfg.replace(batch=6))}
    assert len(paths) == 3, "batch size and thread count are part of an image's cache key"


def test_generation_image_size_overrides_the_models_own(saved_pipeline):
    """SD-2.1's UNet says 768 px while the paper's references are 512 px: the profile's
    generation.image_size decides, and the suspect check follows it."""
    from genlineage.generation import image_size

    comp = load_pipeline(saved_pipeline)
    own = GenerationConfig(steps=2, batch=2)
    half = own.replace(image_size=comp.image_size // 2)
    assert generate(comp, CAPTIONS[:1], [0], own).shape[1] == comp.image_size == image_size(comp, own)
    assert generate(comp, CAPTIONS[:1], [0], half).shape[1:3] == (comp.image_size // 2,) * 2 == (image_size(comp, half),) * 2


def test_long_steps_show_a_bar_with_its_unit_and_the_time_left(saved_pipeline, tmp_path, capsys):
    """Generation counts images and training counts steps, each with a total, so the bar can tell
    the time left (tqdm prints ``n/total [elapsed<left, rate unit/s]``; its first print, the one
    every run makes whatever ``TQDM_MININTERVAL`` throttles, already shows the total and the unit)."""
    from genlineage.config import TrainConfig
    from genlineage.training.encode import encode_dataset
    from genlineage.training.sd import train_sd

    model = load_pipeline(saved_pipeline)
    generate_cached(model, CAPTIONS[:5], list(range(5)), CFG, GenerationCache(tmp_path / "cache"), progress=True)
    err = capsys.readouterr().err
    assert "/5 [" in err and ("image/s" in err or "s/image" in err), err[-300:]
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    data = encode_dataset(model, images, CAPTIONS[:4])
    train_sd(model, data, TrainConfig(steps=3, batch=2, lr=1e-4), tmp_path / "work", progress=True, desc="tune")
    err = capsys.readouterr().err
    assert "/3 [" in err and ("step/s" in err or "s/step" in err), err[-300:]
