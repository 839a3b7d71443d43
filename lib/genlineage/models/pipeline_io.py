"""Save and load Stable-Diffusion pipeline folders, treating every folder as untrusted.

A model folder is the format of the ecosystem (``StableDiffusionPipeline.save_pretrained``):
``model_index.json`` plus ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``.
A suspicious model is someone else's file, so weights are only ever read from safetensors (never
unpickled) and a folder that is not such a pipeline is refused with a message naming what is
missing. Every folder passes the one gate (:mod:`genlineage.models.gate`) before any loader reads
it. The same loader serves our tiny models and SD-v1.5/2.1 checkpoint folders.
"""
from __future__ import annotations

import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from ..cache import content_id
from ..config import REPO_ROOT
from ..io import atomic_dir, write_json
from ..layout import base_dir
from .gate import (COMPONENTS, PICKLE_SUFFIXES, VARIANT_WEIGHTS, WEIGHTED, Trust, check_finite_weights,
                   check_model_folder, check_unchanged, files_signature, loaded_weight_files, read_model_json,
                   weights_variant)
from .lora import LORA_WEIGHTS, LoraModel, apply_lora, check_lora_file, is_lora_folder, lora_folder_base, lora_identity
from .private_copy import private_copy
from .quiet import quiet_hub
from .storage import RECORD, CachedOnlyModel, cached_only_model, is_pruned, kept_identity, released_data_identity

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["COMPONENTS", "PICKLE_SUFFIXES", "PROVENANCE", "OWNER", "SDComponents", "Trust", "WEIGHTED",
           "check_pipeline_folder", "data_identity", "fingerprint", "is_own_pruned", "load_lora", "load_model",
           "load_pipeline", "model_trust",
           "own_data_roots", "quiet_hub", "save_pipeline", "stage_model",
           "VARIANT_WEIGHTS", "weights_variant"]
PROVENANCE = "genlineage.json"


def vae_scale_factor(vae_config: Mapping) -> int:
    """How many pixels one latent cell covers: 2 per VAE down block after the first."""
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def native_image_size(unet_config: Mapping, vae_config: Mapping) -> int:
    """The side in px a pipeline draws by its own configs (UNet latent side x the VAE's factor)."""
    return int(unet_config["sample_size"]) * vae_scale_factor(vae_config)


def folder_image_size(model: str | Path | LoraModel) -> int:
    """A checked model's native image side read from its configs (a LoRA: its base's), no weights
    loaded: what a query can be checked against before anything is loaded."""
    folder = Path(model.base if isinstance(model, LoraModel) else model)
    return native_image_size(read_model_json(folder / "unet" / "config.json"), read_model_json(folder / "vae" / "config.json"))


def model_content_id(model: str | Path | LoraModel) -> str:
    """What the images of a checked model are cached under, computed from its files without loading
    it: a folder's fingerprint, a LoRA file's identity on its base (what the loaded components'
    ``content_id`` is)."""
    if isinstance(model, LoraModel):
        return lora_identity(fingerprint(model.base), model.weights)
    return fingerprint(model)


@dataclass
class SDComponents:
    """The parts of a Stable-Diffusion pipeline that training and generation need."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler_config: dict
    provenance: dict = field(default_factory=dict)
    path: Path | None = None        # the pipeline folder it was loaded from (None: built in memory, or a LoRA model)
    identity: str | None = None     # the content id of the bytes loaded (a folder's, pinned at load; a LoRA on its base)

    @property
    def content_id(self) -> str | None:
        """What caches of this model's images key on: its folder's fingerprint, or its identity."""
        return self.identity or (fingerprint(self.path) if self.path is not None else None)

    @property
    def name(self) -> str:
        """The model in words for a message: its folder, or its LoRA file on its base."""
        if self.path is not None:
            return str(self.path)
        if "lora" in self.provenance:
            return f"{self.provenance['lora']} on {self.provenance.get('lora_base', 'its base')}"
        return "the model (built in memory)"

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def image_size(self) -> int:
        return native_image_size(self.unet.config, self.vae.config)

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae.config)

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
                  extra_files: Mapping[str, Any] | None = None, link_from: str | Path | None = None,
                  linked: tuple[str, ...] = ()) -> Path:
    """Write a complete ``StableDiffusionPipeline`` folder with safetensors weights, atomically;
    ``extra_files`` (name -> JSON object, e.g. the cache stamp) land in the same atomic step.

    ``linked`` components (the parts a fine-tune kept frozen) are not written again: their files
    are hard links to those of the pipeline folder ``link_from`` they were loaded from, so a
    fine-tune costs the disk of what it changed (SD-v1.5: its 3.4 GB fp32 UNet, not the 0.5 GB
    text encoder and 0.3 GB VAE beside it, 720 times). The folder stays an ordinary pipeline
    folder. Links are made only below genlineage's data roots, the one place the gate accepts
    them (:func:`own_data_roots`); elsewhere, or where a link cannot be made (another file system),
    the files are copied."""
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
    if link_from is None or not _below_own_roots(out_dir):
        linked = ()
    linked = tuple(name for name in linked if (Path(link_from) / name).is_dir())
    with atomic_dir(out_dir) as tmp, quiet_hub():
        if not linked:
            pipe.save_pretrained(tmp, safe_serialization=True)
        else:
            pipe.save_config(tmp)  # model_index.json, as save_pretrained writes it
            for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
                if name in linked:
                    _link_component(Path(link_from) / name, tmp / name)
                else:
                    _save_component(getattr(pipe, name), tmp / name)
        meta = dict(components.provenance)
        meta.update(provenance or {})
        for name, obj in {PROVENANCE: meta, **(extra_files or {})}.items():
            write_json(tmp / name, obj)
    return out_dir


def _below_own_roots(folder: Path) -> bool:
    return Trust(own_roots=own_data_roots()).vouches_for(folder)


def _save_component(component: Any, folder: Path) -> None:
    """One component as ``save_pretrained`` writes it (weights as safetensors)."""
    if isinstance(component, torch.nn.Module):
        component.save_pretrained(folder, safe_serialization=True)
    else:  # tokenizer, scheduler
        component.save_pretrained(folder)


def _link_component(source: Path, folder: Path) -> None:
    """Hard-link every file of ``source`` (through a snapshot's links to the real file) into ``folder``."""
    for file in sorted(f for f in source.rglob("*") if f.is_file()):
        target = folder / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        real = os.path.realpath(file)
        try:
            os.link(real, target)
        except OSError:  # another file system, or links not allowed: a copy is the same folder
            shutil.copy2(real, target)


def own_data_roots() -> tuple[Path, ...]:
    """Where genlineage writes its models: the repository's ``data/`` and ``$GENLINEAGE_DATA``."""
    roots = [REPO_ROOT / "data"]
    if os.environ.get("GENLINEAGE_DATA"):
        roots.append(Path(os.environ["GENLINEAGE_DATA"]))
    return tuple(roots)


def check_pipeline_folder(path: str | Path, trust: Trust | None = None) -> Path:
    """Refuse anything that is not a safe safetensors Stable-Diffusion pipeline folder.

    The one gate (:func:`genlineage.models.gate.check_model_folder`): every folder passes it before
    any loader reads it. It raises InputError naming the file and the fix, and writes nothing.
    By default a folder below genlineage's own data roots may hold hard links (its fine-tunes link
    their frozen parts); nothing else is relaxed unless ``trust`` says so.
    """
    return check_model_folder(path, Trust(own_roots=own_data_roots()) if trust is None else trust)


def load_pipeline(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  trust: Trust | None = None) -> SDComponents:
    """Load a pipeline folder's components from safetensors only (never a pickle); a component
    holding only a variant's weights (fp16) is loaded as that variant. One of genlineage's own
    LoRA folders loads as its base with the LoRA fused (:func:`load_lora`)."""
    if is_lora_folder(path):
        trust = Trust(own_roots=own_data_roots()) if trust is None else trust
        return load_lora(LoraModel(Path(path) / LORA_WEIGHTS, lora_folder_base(path, trust)), device, dtype, trust)
    given = Path(path)
    # A folder nobody vouches for (a suspect's) must hold the same bytes from before the gate to after
    # the loaders, and the loaders read a private copy of them (models.private_copy). Not asked of
    # genlineage's own folders or the owner's: a parallel fine-tune's hard link to a base's frozen
    # files moves those files' ctime, and no one else writes there.
    watched = not (trust or Trust(own_roots=own_data_roots())).vouches_for(given)
    before = files_signature(given) if watched else None
    path = check_pipeline_folder(path, trust)
    with (private_copy(path, before) if watched else nullcontext(path)) as loaded:
        components = _load_components(Path(loaded), dtype)
    identity = fingerprint(path)  # pinned: what these very bytes' images are cached under
    if watched:
        check_unchanged(before, given)
    components.path, components.identity = path, identity
    return components.to(device)


def _load_components(path: Path, dtype: torch.dtype) -> SDComponents:
    """The components of a checked folder, weights from safetensors only, every weights file first
    shown to hold only finite numbers (NaN weights would draw NaN images, shown as black pixels)."""
    for weights_file in loaded_weight_files(path):
        check_finite_weights(weights_file)
    common: dict[str, Any] = {"local_files_only": True}
    weights: dict[str, Any] = {"use_safetensors": True, "torch_dtype": dtype, **common}
    with quiet_hub():
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", variant=weights_variant(path / "unet"),
                                                    **weights)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", variant=weights_variant(path / "vae"), **weights)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder",
                                                     variant=weights_variant(path / "text_encoder"), **weights)
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **common)
    scheduler_config = dict(DDPMScheduler.load_config(path, subfolder="scheduler", **common))
    provenance_file = path / PROVENANCE
    provenance = read_model_json(provenance_file) if provenance_file.is_file() else {}  # bounded, like every config
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False).eval()
    return SDComponents(tokenizer, text_encoder, vae, unet, scheduler_config, provenance, path)


def load_lora(model: LoraModel, device: str = "cpu", dtype: torch.dtype = torch.float32,
              base_trust: Trust | None = None, role: str = "suspect") -> SDComponents:
    """A LoRA model: its base folder through the gate, its file through the LoRA gate (every tensor
    a factor of a layer the base has), then loaded and fused into the base's weights. The result
    has no folder of its own; its images are cached under the base's and the file's content."""
    base_trust = model.base_trust if model.base_trust is not None else base_trust
    before = files_signature(model.weights)  # a LoRA file: the same bytes from its check to its fusing
    base = check_pipeline_folder(model.base, base_trust)
    check = check_lora_file(model.weights, base, role)
    check_finite_weights(model.weights)  # a NaN factor makes the fused weights NaN
    components = apply_lora(load_pipeline(base, device=device, dtype=dtype, trust=base_trust), check)
    components.identity = model_content_id(LoraModel(model.weights, base))
    check_unchanged(before, model.weights, role)
    components.provenance = {**components.provenance, "lora": str(model.weights), "lora_base": str(base)}
    components.path = None  # not a folder: a fine-tune from it must not link the base's files as its own
    return components


def model_trust(profile: Any, path: str | Path) -> Trust:
    """How far the gate trusts a folder a stage loads: the profile's bases (``models/base_*``, in
    the paper profile links to the owner's SD folders) are the owner's (hard links, cache
    snapshots); any other folder below the data roots may hold hard links; nothing else is relaxed."""
    real = os.path.realpath(path)
    bases = {os.path.realpath(base_dir(profile, name)) for name in profile.models.bases}
    return Trust(own_roots=(*own_data_roots(), profile.data_root), owner=real in bases)


OWNER = Trust(owner=True)  # the model owner's own folders: a base, a source, a shadow


def load_model(profile: Any, path: str | Path) -> SDComponents | CachedOnlyModel:
    """A pipeline folder loaded for inference on ``profile``'s device and dtype: the one way every
    stage loads a model (through the gate, like any folder). A fine-tune of the stage's own that
    kept only its recipe (``models.keep_finetuned: none``) comes as a :class:`CachedOnlyModel`: its
    cached images read under its identity, and asking it a new one names the rebuild."""
    if is_own_pruned(path):
        return cached_only_model(path)
    model = stage_model(profile, path)
    if isinstance(model, LoraModel):  # a LoRA model of a stage, on one of the profile's bases
        return load_lora(model, profile.run.device, profile.torch_dtype, role=str(path))
    return load_pipeline(path, device=profile.run.device, dtype=profile.torch_dtype, trust=model_trust(profile, path))


def stage_model(profile: Any, path: str | Path) -> Path | LoraModel:
    """A model folder a stage made, as verify and the loaders take it: the folder itself, or for a
    LoRA folder its file on the base its provenance names, with that base trusted as the profile
    trusts it (the profile's own bases are the owner's; in the paper profile they may be cache
    snapshots the suspect's default trust would refuse)."""
    if not is_lora_folder(path):
        return Path(path)
    base = lora_folder_base(path, model_trust(profile, path))
    return LoraModel(Path(path) / LORA_WEIGHTS, base, base_trust=model_trust(profile, base))


def fingerprint(path: str | Path) -> str:
    """Content id of a pipeline folder's weights and configs (its components, not its provenance
    or stamp): what every result made with the model is keyed on (``cache.content_id``). A
    genlineage LoRA folder's is its base's and its file's (:func:`~genlineage.models.lora.lora_identity`).
    A fine-tune genlineage released (``models.storage``: its weights in fp16, or only its recipe)
    keeps the identity it had in full, so every result keyed on it stays valid."""
    if is_lora_folder(path):
        return lora_identity(fingerprint(lora_folder_base(path, OWNER)), Path(path) / LORA_WEIGHTS)
    return _released_identity(path) or content_id(path, parts=COMPONENTS)


def data_identity(folder: str | Path) -> str:
    """Content id of an image folder (``cache.content_id``); for a training set genlineage released
    with its model (``models.storage.release_data_folder``), the id it had, believed only below
    genlineage's own data roots: what a fine-tune's key names its data by, so releasing the set
    leaves the model fresh."""
    recorded = released_data_identity(folder) if _below_own_roots(Path(folder)) else None
    return recorded or content_id(folder)


def _released_identity(path: str | Path) -> str | None:
    """The identity a released folder recorded, believed only below genlineage's own data roots
    (where genlineage wrote the record); None for any other folder. The record's existence is
    asked first: a folder never released costs one ``stat``."""
    if not (Path(path) / RECORD).is_file() or not _below_own_roots(Path(path)):
        return None
    return kept_identity(path)


def is_own_pruned(path: str | Path) -> bool:
    """Whether ``path`` is one of genlineage's own fine-tunes kept as its recipe and stamp only
    (``models.keep_finetuned: none``): what loaders and verify's gate recognise instead of
    refusing a folder without weights. A folder elsewhere is never believed to be one, and its
    record is not even read."""
    if not isinstance(path, (str, Path)) or not (Path(path) / RECORD).is_file():
        return False
    return _below_own_roots(Path(path)) and is_pruned(path)
