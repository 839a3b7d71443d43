"""The GPU path, proven in one call: SD-v1.5- and SD-v2.1-architecture pipelines built from their
published configs with random weights (no weights can be downloaded), each fine-tuned through the
project's engine with fp16 autocast and gradient checkpointing, checkpointed and resumed, then
asked for images through the project's generation engine; beside each, the same work done by a
bare PyTorch training loop and by diffusers' ``StableDiffusionPipeline``, so a slow engine shows.

Prints one table (steps/s, images/s, peak memory) and writes it as JSON to ``--out``.

    bash scripts/gpu_check.sh                    # real sizes: 512 px, 20 steps, 16 images (a GPU)
    .venv/bin/python scripts/gpu_check.py --toy  # the same code at toy sizes (the tests, on a CPU)
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from genlineage.config import GenerationConfig, NoiseSchedulerSettings, TrainConfig
from genlineage.generation import generate
from genlineage.models.pipeline_io import SDComponents, load_pipeline, quiet_hub, save_pipeline
from genlineage.models.tiny import noise_scheduler_config
from genlineage.models.tokenizer import build_clip_tokenizer
from genlineage.training.encode import encode_dataset, images_to_tensor
from genlineage.training.sd import train_sd

CAPTIONS = ["The woman has long bangs and smiles.", "a red star on a blue background",
            "This man wears eyeglasses.", "a green circle on a grassy field"]


@dataclass(frozen=True)
class Architecture:
    """The parts of a published model's configs that size it (diffusers' and transformers' names)."""

    name: str
    unet: dict
    text: dict
    vae: dict
    prediction_type: str


# stable-diffusion-v1-5 and stable-diffusion-2-1, from their unet/, text_encoder/ and vae/ config.json
SD15 = Architecture("SD-v1.5", unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                                         cross_attention_dim=768, attention_head_dim=8),
                    text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              projection_dim=768, hidden_act="quick_gelu"),
                    vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2), prediction_type="epsilon")
SD21 = Architecture("SD-v2.1", unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                                         cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                         use_linear_projection=True),
                    text=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                              projection_dim=512, hidden_act="gelu"),
                    vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2),
                    prediction_type="v_prediction")


def toy(arch: Architecture) -> Architecture:
    """The same architecture (four UNet levels, cross-attention, the VAE's four levels, the
    prediction type) at widths a CPU test runs in seconds."""
    heads = 2 if isinstance(arch.unet["attention_head_dim"], int) else (1, 2, 2, 2)
    width = 32 if arch.text["hidden_size"] == 768 else 48
    return Architecture(f"{arch.name} (toy)",
                        unet={**arch.unet, "block_out_channels": (32, 32, 64, 64), "layers_per_block": 1,
                              "cross_attention_dim": width, "attention_head_dim": heads},
                        text={**arch.text, "hidden_size": width, "intermediate_size": 2 * width,
                              "num_hidden_layers": 1, "num_attention_heads": 2, "projection_dim": width},
                        vae={"block_out_channels": (32, 32, 32, 32), "layers_per_block": 1},
                        prediction_type=arch.prediction_type)


def build(arch: Architecture, image_size: int) -> SDComponents:
    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer(CAPTIONS, 77)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id, **arch.text))
    levels = len(arch.vae["block_out_channels"])
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                        latent_channels=4, sample_size=image_size, **arch.vae)
    unet = UNet2DConditionModel(sample_size=image_size // 2 ** (levels - 1), **arch.unet)
    return SDComponents(tokenizer, text, vae, unet, noise_scheduler_config(NoiseSchedulerSettings(), arch.prediction_type))


def peak_memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB: the process's whole peak


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engine_training(folder: Path, images: np.ndarray, cfg: TrainConfig, device: str, work: Path) -> dict:
    """The project's engine: half the steps and a checkpoint, then a fresh load that resumes from it
    to the end. Steps/s counts the training calls; the reload and restore are reported apart."""
    first = load_pipeline(folder, device=device)
    data = encode_dataset(first, images, CAPTIONS * (len(images) // len(CAPTIONS)), batch=cfg.encode_batch,
                          dtype=cfg.frozen_dtype)
    reset_peak(device)
    started = time.perf_counter()
    assert not train_sd(first, data, cfg, work, stop_after=cfg.steps // 2, progress=False)
    sync(device)
    training = time.perf_counter() - started
    started = time.perf_counter()
    resumed = load_pipeline(folder, device=device)
    reload = time.perf_counter() - started
    started = time.perf_counter()
    assert train_sd(resumed, data, cfg, work, progress=False), "the resumed run did not reach the last step"
    sync(device)
    training += time.perf_counter() - started
    return {"steps_per_s": cfg.steps / training, "peak_gb": peak_memory_gb(device), "resumed_at": cfg.steps // 2,
            "reload_s": reload}


def bare_training(folder: Path, images: np.ndarray, cfg: TrainConfig, device: str) -> dict:
    """The same objective as a plain loop: what the engine's bookkeeping costs, by difference."""
    comp = load_pipeline(folder, device=device)
    unet, scheduler = comp.unet, comp.noise_scheduler()
    unet.requires_grad_(True).train()
    unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=cfg.mixed_precision == "fp16")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision)
    ids = comp.tokenizer(CAPTIONS[: cfg.batch], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        states = comp.text_encoder(ids.to(device))[0]
        latents = comp.vae.encode(images_to_tensor(images[: cfg.batch]).to(device)).latent_dist.mean
        latents = latents * comp.vae.config.scaling_factor
    reset_peak(device)
    started = time.perf_counter()
    for _ in range(cfg.steps):
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,), device=device)
        target = scheduler.get_velocity(latents, noise, t) if comp.prediction_type == "v_prediction" else noise
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
            pred = unet(scheduler.add_noise(latents, noise, t), t, states).sample
        scaler.scale(F.mse_loss(pred.float(), target.float())).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return {"steps_per_s": cfg.steps / (time.perf_counter() - started), "peak_gb": peak_memory_gb(device)}


def engine_generation(folder: Path, cfg: GenerationConfig, n: int, device: str, dtype: torch.dtype) -> dict:
    comp = load_pipeline(folder, device=device, dtype=dtype)
    prompts = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    generate(comp, prompts[: cfg.batch], list(range(cfg.batch)), cfg)  # warm-up
    reset_peak(device)
    started = time.perf_counter()
    images = generate(comp, prompts, list(range(n)), cfg)
    sync(device)
    return {"images_per_s": n / (time.perf_counter() - started), "peak_gb": peak_memory_gb(device),
            "size": int(images.shape[1])}


def diffusers_generation(folder: Path, cfg: GenerationConfig, n: int, device: str, dtype: torch.dtype) -> dict:
    with quiet_hub():
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, safety_checker=None,
                                                       local_files_only=True).to(device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]
    kwargs = dict(num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale, height=cfg.image_size,
                  width=cfg.image_size, output_type="np")
    pipe(prompts[: cfg.batch], **kwargs)  # warm-up
    reset_peak(device)
    started = time.perf_counter()
    for start in range(0, n, cfg.batch):
        pipe(prompts[start:start + cfg.batch], **kwargs)
    sync(device)
    return {"images_per_s": n / (time.perf_counter() - started), "peak_gb": peak_memory_gb(device)}


def check(arch: Architecture, size: int, train_steps: int, n_images: int, gen_steps: int, device: str,
          precision: str, work: Path) -> list[dict]:
    folder = work / arch.name.replace(" ", "_")
    save_pipeline(build(arch, size), folder)
    rng = np.random.default_rng(0)
    images = rng.random((2 * len(CAPTIONS), size, size, 3)).astype(np.float32)
    half = "float16" if device.startswith("cuda") else "float32"
    train = TrainConfig(steps=train_steps, batch=2, lr=2e-6, mixed_precision=precision, gradient_checkpointing=True,
                        checkpoint_every=max(1, train_steps // 2), frozen_dtype=half, encode_batch=4)
    gen = GenerationConfig(steps=gen_steps, guidance_scale=7.5, batch=min(8, n_images), image_size=size)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    rows = [{"model": arch.name, "what": "fine-tune: genlineage engine (checkpoint + resume)",
             **engine_training(folder, images, train, device, folder.with_name(folder.name + "_work"))},
            {"model": arch.name, "what": "fine-tune: bare PyTorch loop", **bare_training(folder, images, train, device)},
            {"model": arch.name, "what": "generate: genlineage engine",
             **engine_generation(folder, gen, n_images, device, dtype)},
            {"model": arch.name, "what": "generate: diffusers StableDiffusionPipeline",
             **diffusers_generation(folder, gen, n_images, device, dtype)}]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy", action="store_true", help="toy widths and sizes (runs on a CPU in seconds)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; --toy: 1, as a test beside other work runs it)")
    parser.add_argument("--models", nargs="+", choices=("SD-v1.5", "SD-v2.1"), default=("SD-v1.5", "SD-v2.1"))
    args = parser.parse_args(argv)
    threads = args.threads or (1 if args.toy else None)
    if threads:
        torch.set_num_threads(threads)
    # fp16 autocast and its loss scaler are what a GPU runs; a CPU (the tests) runs fp32, as bf16 there
    # is emulated and ten times slower
    precision = "fp16" if args.device.startswith("cuda") else "no"
    archs = [a for a in (SD15, SD21) if a.name in args.models]
    archs = [toy(a) for a in archs] if args.toy else archs
    size, train_steps, n_images, gen_steps = (32, 4, 2, 2) if args.toy else (512, 20, 16, 50)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for arch in archs:
            rows += check(arch, size, train_steps, n_images, gen_steps, args.device, precision, Path(work))
    print(f"{size} px, {train_steps} training steps at batch 2 ({precision} autocast, gradient checkpointing), "
          f"{n_images} images of {gen_steps} DDIM steps, on {args.device}:")
    for row in rows:
        rate = f"{row['steps_per_s']:.2f} steps/s" if "steps_per_s" in row else f"{row['images_per_s']:.2f} images/s"
        print(f"  {row['model']:<16} {row['what']:<52} {rate:>16}   peak {row['peak_gb']:.2f} GB")
    if args.out:
        args.out.write_text(json.dumps({"device": args.device, "size": size, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
