"""Save and load Stable-Diffusion pipeline folders, treating every folder as untrusted.

A model folder is the format of the ecosystem (``StableDiffusionPipeline.save_pretrained``):
``model_index.json`` plus ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``.
A suspicious model is someone else's file, so weights are only ever read from safetensors (never
unpickled) and a folder that is not such a pipeline is refused with a message naming what is
missing. Every folder passes the one gate (:mod:`genlineage.models.gate`) before any loader reads
it. The same loader serves our tiny models and SD-v1.5/2.1 checkpoint folders.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..cache import content_id
from ..io import atomic_dir
from .gate import COMPONENTS, PICKLE_SUFFIXES, WEIGHTED, check_model_folder, read_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["COMPONENTS", "PICKLE_SUFFIXES", "PROVENANCE", "SDComponents", "WEIGHTED", "check_pipeline_folder",
           "fingerprint", "load_model", "load_pipeline", "quiet_hub", "save_pipeline"]
PROVENANCE = "genlineage.json"


@dataclass
class SDComponents:
    """The parts of a Stable-Diffusion pipeline that training and generation need."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler_config: dict
    provenance: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def image_size(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def noise_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler.from_config(self.scheduler_config)

    def sampler(self) -> DDIMScheduler:
        return DDIMScheduler.from_config(self.scheduler_config)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> "SDComponents":
        for module in (self.text_encoder, self.vae, self.unet):
            module.to(device=device, dtype=dtype) if dtype else module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device


def save_pipeline(components: SDComponents, out_dir: str | Path, provenance: dict | None = None,
                  extra_files: Mapping[str, Any] | None = None) -> Path:
    """Write a complete ``StableDiffusionPipeline`` folder with safetensors weights, atomically;
    ``extra_files`` (name -> JSON object, e.g. the cache stamp) land in the same atomic step."""
    with quiet_hub():  # importing the pipeline class makes transformers warn about torchvision
        from diffusers import StableDiffusionPipeline

    out_dir = Path(out_dir)
    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=components.sampler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with atomic_dir(out_dir) as tmp, quiet_hub():
        pipe.save_pretrained(tmp, safe_serialization=True)
        meta = dict(components.provenance)
        meta.update(provenance or {})
        for name, obj in {PROVENANCE: meta, **(extra_files or {})}.items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return out_dir


def check_pipeline_folder(path: str | Path) -> Path:
    """Refuse anything that is not a safe safetensors Stable-Diffusion pipeline folder.

    The one gate (:func:`genlineage.models.gate.check_model_folder`): every folder passes it before
    any loader reads it. It raises InputError naming the file and the fix, and writes nothing.
    """
    return check_model_folder(path)


def load_pipeline(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> SDComponents:
    """Load a pipeline folder's components from safetensors only (never a pickle)."""
    path = check_pipeline_folder(path)
    common: dict[str, Any] = {"local_files_only": True}
    weights: dict[str, Any] = {"use_safetensors": True, "torch_dtype": dtype, **common}
    with quiet_hub():
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **weights)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **weights)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **weights)
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **common)
    scheduler_config = dict(DDPMScheduler.load_config(path, subfolder="scheduler", **common))
    provenance_file = path / PROVENANCE
    provenance = read_json(provenance_file) if provenance_file.is_file() else {}  # bounded, like every config
    components = SDComponents(tokenizer, text_encoder, vae, unet, scheduler_config, provenance, path)
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False).eval()
    return components.to(device)


def load_model(profile: Any, path: str | Path) -> SDComponents:
    """A pipeline folder loaded for inference on ``profile``'s device and dtype: the one way every
    stage loads a model (through the gate, like any folder)."""
    return load_pipeline(path, device=profile.run.device, dtype=profile.torch_dtype)


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """Silence the libraries' per-file progress bars and notices while reading or writing a
    folder; genlineage shows its own progress for the work that takes time."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    levels = (dlog.get_verbosity(), tlog.get_verbosity())
    dlog.set_verbosity_error(), tlog.set_verbosity_error()
    dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0]), tlog.set_verbosity(levels[1])


def fingerprint(path: str | Path) -> str:
    """Content id of a pipeline folder's weights and configs (its components, not its provenance
    or stamp): what every result made with the model is keyed on (``cache.content_id``)."""
    return content_id(path, parts=COMPONENTS)
