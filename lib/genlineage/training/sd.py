"""One Stable-Diffusion training engine: pre-training of the tiny bases and every fine-tune.

The objective is SD's (diffusers' ``train_text_to_image.py``): noise prediction (or
v-prediction) on VAE latents at uniformly drawn timesteps, AdamW, a constant learning rate,
gradient clipping at 1. The VAE is frozen; the text encoder is frozen unless the config trains
it (the tiny bases learn theirs during pre-training).

Reproducibility: all randomness of step ``k`` (which samples, which noise, which timesteps)
comes from a generator seeded by ``(seed, k)``, and every sample is seen once per epoch in a
seeded order. So a run that is interrupted and resumed from its last checkpoint ends with the
same weights as one that never stopped.
"""
from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..errors import InputError
from ..io import atomic_dir
from ..models.lora import is_lora_parameter
from ..models.pipeline_io import SDComponents
from .encode import EncodedDataset, frozen_at


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def _batch_indices(seed: int, step: int, batch: int, n: int) -> torch.Tensor:
    """Samples for ``step``: a stream of per-epoch seeded permutations, cut into batches."""
    positions = torch.arange(step * batch, (step + 1) * batch)
    out = torch.empty(batch, dtype=torch.long)
    for epoch in positions.div(n, rounding_mode="floor").unique().tolist():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + epoch))
        mask = positions.div(n, rounding_mode="floor") == epoch
        out[mask] = perm[positions[mask] % n]
    return out


def lr_schedule(cfg: TrainConfig, optimizer: torch.optim.Optimizer, start: int) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' schedule of ``cfg.lr_scheduler`` (what train_text_to_image.py uses), positioned at
    step ``start`` of a resumed run."""
    if cfg.lr_scheduler not in ("constant", "constant_with_warmup"):
        raise ValueError(f"lr_scheduler {cfg.lr_scheduler!r} is not supported; use 'constant' or 'constant_with_warmup'.")
    for group in optimizer.param_groups:  # a scheduler that starts part-way reads each group's first rate
        group.setdefault("initial_lr", group["lr"])
    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                         num_training_steps=cfg.steps, last_epoch=start - 1)


class _Checkpoint:
    """The latest checkpoint of a run: trained weights (safetensors), optimizer, step, and the fp16
    loss scaler's state (its scale and growth count): a run resumed with a fresh scaler would start
    again at 65536 and skip steps to find its scale, and end with other weights than one that never
    stopped."""

    def __init__(self, work_dir: Path, cfg: TrainConfig):
        self.dir = Path(work_dir) / "checkpoint"
        self.cfg = cfg

    def _trained_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """What a resume needs: the whole module, or (LoRA) only the adapter's factors."""
        if self.cfg.finetune == "full":
            return module.state_dict()
        return {k: v for k, v in module.state_dict().items() if is_lora_parameter(k)}

    def load(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler | None = None) -> int:
        meta_file = self.dir / "meta.json"
        if not meta_file.is_file():
            return 0
        meta = json.loads(meta_file.read_text())
        if meta.get("config") != self.cfg.key():
            return 0
        for name, module in modules.items():
            state = load_file(self.dir / f"{name}.safetensors")
            if self.cfg.finetune == "full":
                module.load_state_dict(state)
            elif set(state) != set(self._trained_state(module)):  # an adapter of other layers: start again
                return 0
            else:
                module.load_state_dict(state, strict=False)
        optimizer.load_state_dict(torch.load(self.dir / "optimizer.pt", weights_only=True))
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        return int(meta["step"])

    def save(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer, step: int,
             scaler: torch.amp.GradScaler | None = None) -> None:
        with atomic_dir(self.dir) as tmp:
            for name, module in modules.items():
                save_file({k: v.detach().contiguous() for k, v in self._trained_state(module).items()},
                          tmp / f"{name}.safetensors")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            scaler_state = scaler.state_dict() if scaler is not None else None  # floats and ints: JSON
            (tmp / "meta.json").write_text(json.dumps({"step": step, "config": self.cfg.key(), "scaler": scaler_state}))


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.mixed_precision == "no":
        return nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


PREDICTION_TYPES = ("epsilon", "v_prediction")


def _is_v_prediction(prediction_type: str) -> bool:
    """The training target of the scheduler's prediction type; any other type (``sample``, a typo)
    is refused: training it as epsilon would silently fit the wrong target."""
    if prediction_type not in PREDICTION_TYPES:
        raise InputError(f"the noise scheduler's prediction_type is {prediction_type!r}; this trainer knows "
                         f"{', '.join(PREDICTION_TYPES)}: fix scheduler/scheduler_config.json of the base.")
    return prediction_type == "v_prediction"


def train_sd(components: SDComponents, data: EncodedDataset, cfg: TrainConfig, work_dir: str | Path,
             stop_after: int | None = None, progress: bool = True, desc: str = "train") -> bool:
    """Train ``components`` in place; return True when all ``cfg.steps`` are done.

    ``work_dir`` holds the checkpoint; a call with the same config resumes from it.
    ``stop_after`` ends the run early after checkpointing that step (an interruption on purpose).
    """
    device = components.device
    unet, text_encoder = components.unet, components.text_encoder
    trained, params = _trainable(components, cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    noise_scheduler = components.noise_scheduler()
    scaling = float(components.vae.config.scaling_factor)
    checkpoint = _Checkpoint(Path(work_dir), cfg)
    scaler = torch.amp.GradScaler(device.type) if cfg.mixed_precision == "fp16" else None
    start = checkpoint.load(trained, optimizer, scaler)
    scheduler = lr_schedule(cfg, optimizer, start)
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)

    with torch.no_grad():
        frozen_states = None if cfg.train_text_encoder else _encode_unique(
            frozen_at(text_encoder, cfg.frozen_dtype), data.input_ids).float()

    bar = tqdm(range(start, last), initial=start, total=cfg.steps, desc=desc, unit="step", disable=not progress, leave=False)
    v_prediction = _is_v_prediction(noise_scheduler.config.prediction_type)
    for step in bar:
        gen = _step_generator(cfg.seed, step)
        idx = _batch_indices(cfg.seed, step, cfg.batch, len(data))
        eps_latent = torch.randn(data.mean[idx].shape, generator=gen)
        noise = torch.randn(data.mean[idx].shape, generator=gen)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (cfg.batch,), generator=gen)
        latents = (data.mean[idx] + data.std[idx] * eps_latent.to(device)) * scaling
        noise, timesteps = noise.to(device), timesteps.to(device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        target = noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
        with _autocast(cfg, device):
            states = text_encoder(data.input_ids[idx])[0] if frozen_states is None else frozen_states[idx]
            pred = unet(noisy, timesteps, states).sample
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        _optimise(loss, params, optimizer, scheduler, scaler, cfg.max_grad_norm)
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        done = step + 1
        # periodic checkpoints, and one where a run stops on purpose; none at the final step: the caller
        # saves the model next and deletes the work folder (a checkpoint written then is deleted at once)
        if done < cfg.steps and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == last):
            checkpoint.save(trained, optimizer, done, scaler)
    bar.close()
    for module in (unet, text_encoder):
        module.requires_grad_(False).eval()
    if cfg.gradient_checkpointing:
        unet.disable_gradient_checkpointing()
    return last >= cfg.steps


def _trainable(components: SDComponents, cfg: TrainConfig) -> tuple[dict[str, torch.nn.Module], list[torch.nn.Parameter]]:
    """The modules a run trains (the UNet, and the text encoder when asked) in train mode, and the
    parameters it updates (all of them, or for LoRA the adapter's); everything else frozen."""
    unet, text_encoder = components.unet, components.text_encoder
    trained: dict[str, torch.nn.Module] = {"unet": unet}
    if cfg.train_text_encoder:
        trained["text_encoder"] = text_encoder
    for module in (unet, text_encoder, components.vae):
        module.requires_grad_(False)
    params = []
    for module in trained.values():
        module.train()
        for name, param in module.named_parameters():
            if cfg.finetune == "full" or is_lora_parameter(name):  # lora: the adapter add_lora gave the UNet
                params.append(param.requires_grad_(True))
    if not params:
        raise ValueError("finetune lora needs the UNet's adapter first (genlineage.models.lora.add_lora)")
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    return trained, params


def _optimise(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler | None,
              max_grad_norm: float) -> None:
    """One update: backward (scaled under fp16), gradients clipped, the optimizer and the schedule
    stepped, gradients cleared."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _encode_unique(text_encoder: torch.nn.Module, input_ids: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Hidden states of a frozen text encoder for every caption, computed once."""
    text_encoder.eval()
    out = [text_encoder(input_ids[i:i + batch])[0] for i in range(0, len(input_ids), batch)]
    return torch.cat(out)


def clear_work_dir(work_dir: str | Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
