"""The suspect: untrusted, and queried only through (prompt, seed) -> image.

Two kinds. ``PipelineSuspect`` is a diffusers Stable-Diffusion pipeline folder (or a LoRA file in
diffusers' format with the base it was trained on, through the LoRA gate of
:mod:`genlineage.models.lora`), loaded from
safetensors only (``check_pipeline_folder``, the one gate of :mod:`genlineage.models.gate`, refuses
pickles, shards and links leaving the folder, special files, oversized or out-of-bounds configs,
corrupt safetensors and configs that ask for remote code) and never written to: its generations
are cached in the verify run's own folder. ``CallableSuspect`` wraps any function ``generate(prompt, seed) -> image`` (a remote API,
another library): images are resized to the key size and cached by (name, prompt, seed), so an
interrupted run never pays for a query twice.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import InputError
from ..generation import GenerationCache, GenerationConfig, cached_images, generate_cached
from ..io import atomic_path, stable_hash
from ..keys import to_uint8
from ..models.gate import read_json
from ..models.lora import LORA_WEIGHTS, LoraModel, check_lora_file, is_lora_folder, lora_folder_base
from ..models.pipeline_io import (OWNER, SDComponents, Trust, check_pipeline_folder, folder_image_size, load_lora,
                                  load_pipeline, model_content_id, own_data_roots)

SD_PIPELINES = ("StableDiffusionPipeline",)


class Suspect(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], size: int, progress: bool) -> np.ndarray:
        """uint8 [N, size, size, 3], one image per (prompt, seed)."""


# The model owner's own folders: the gate lets them hold hard links (a base that genlineage
# fine-tuned from shares its frozen files with the fine-tunes) and be Hugging Face cache snapshots.
OWNER_ROLES = ("source model", "base", "innocent shadow", "infringing shadow")  # a shadow's role adds its name


def role_trust(role: str) -> Trust | None:
    """The gate's trust for a folder in ``role``: the owner's, or (a suspect) the default."""
    return OWNER if role.startswith(OWNER_ROLES) else None


def check_sd_pipeline(path: str | Path, role: str, trust: Trust | None = None) -> Path:
    """A safe Stable-Diffusion pipeline folder, or InputError naming ``role`` and the fix
    (``trust``: the gate's, when the caller knows better than the role, e.g. a stage's own base)."""
    try:
        path = check_pipeline_folder(path, trust if trust is not None else role_trust(role))
    except InputError as err:
        raise InputError(f"{role}: {err}") from None
    index = read_json(path / "model_index.json")  # bounded: the gate has read it already
    cls = index.get("_class_name") if isinstance(index, dict) else None
    if cls not in SD_PIPELINES:
        what = f"a {cls} folder" if cls else "a folder whose model_index.json names no pipeline class"
        raise InputError(f"{role}: {path} is {what}; genlineage verify compares Stable-Diffusion "
                         f"pipelines ({', '.join(SD_PIPELINES)}: SD-v1.x/v2.x architecture). Export the model "
                         "in that format, or wrap it as a callable (--suspect-callable).")
    return path


ModelPath = Path | LoraModel  # a pipeline folder, or a LoRA file on its base
LOCAL = (str, Path, LoraModel)  # the model specs that are files genlineage checks and loads itself


def check_sd_model(model: str | Path | LoraModel, role: str) -> ModelPath:
    """A model folder or LoRA model checked by the gates before anything loads it: a pipeline
    folder (:func:`check_sd_pipeline`); a :class:`~genlineage.models.lora.LoraModel` (its base a
    pipeline folder, its file a LoRA of that base's layers); or one of genlineage's LoRA folders,
    which the owner's roles may pass as a folder (its provenance names its base; a suspect's is
    believed only below genlineage's data roots, where genlineage wrote it; anyone else's LoRA comes
    with its base given beside it). The base passes the gate with the trust the model carries, else
    the role's (a suspect's base like the suspect)."""
    if not isinstance(model, LoraModel) and is_lora_folder(model):
        try:
            model = LoraModel(Path(model) / LORA_WEIGHTS,
                              lora_folder_base(model, role_trust(role) or Trust(own_roots=own_data_roots())))
        except InputError as err:
            raise InputError(f"{role}: {err}") from None
    if isinstance(model, LoraModel):
        base = check_sd_pipeline(model.base, f"{role}'s base", model.base_trust)
        check_lora_file(model.weights, base, role)
        return LoraModel(Path(model.weights), base, model.base_trust)
    return check_sd_pipeline(model, role)


def load_sd_pipeline(model: str | Path | LoraModel, role: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """Check, then load from safetensors on ``device`` in ``dtype`` (the profile's: a GPU run queries
    every shadow on the GPU); any loading failure becomes an InputError naming ``role``."""
    model = check_sd_model(model, role)
    try:
        if isinstance(model, LoraModel):
            return load_lora(model, device, dtype, base_trust=role_trust(role), role=role)
        return load_pipeline(model, device=device, dtype=dtype, trust=role_trust(role))
    except InputError:
        raise
    except Exception as err:  # a config of another architecture, mismatched shapes, ...
        raise InputError(f"{role}: {model} cannot be loaded as a Stable-Diffusion pipeline "
                         f"({type(err).__name__}: {str(err)[:300]}).") from None


def model_folders(model: ModelPath) -> tuple[Path, ...]:
    """The folders a model's files lie in (a LoRA: its file's and its base's): nothing of a run may
    be written there."""
    return (Path(model.weights).parent, Path(model.base)) if isinstance(model, LoraModel) else (Path(model),)


def model_identity(model: ModelPath) -> str:
    """One name per model however it was given (a LoRA folder and its file on its base are one)."""
    if isinstance(model, LoraModel):
        return f"{Path(model.weights).resolve()} on {Path(model.base).resolve()}"
    return str(Path(model).resolve())


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


class PipelineSuspect:
    """A pipeline folder, or a LoRA file on its base, queried locally. The files pass the gate at
    once; the weights are loaded (LoRA fused) only when an image is missing from the cache, which
    is keyed on the files' content: a shadow or suspect asked before costs no load at all."""

    def __init__(self, model: str | Path | LoraModel, cfg: GenerationConfig, cache_dir: Path, role: str = "suspect",
                 device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.path = check_sd_model(model, role)
        for folder in model_folders(self.path):
            if _inside(cache_dir, folder):
                raise InputError(f"{role}: the cache folder {cache_dir} lies inside the model folder {folder}; "
                                 "genlineage never writes into a suspect's folder. Pass --out elsewhere.")
        self.role, self.device, self.dtype = role, device, dtype
        self._components: SDComponents | None = None
        lora = self.path if isinstance(self.path, LoraModel) else None
        self.name = f"{lora.weights.parent.name}/{lora.weights.name} on {lora.base.name}" if lora else self.path.name
        self.cfg, self.cache = cfg, GenerationCache(cache_dir)

    @property
    def components(self) -> SDComponents:
        """The loaded pipeline (loaded on first use; a loading failure names the role)."""
        if self._components is None:
            self._components = load_sd_pipeline(self.path, self.role, self.device, self.dtype)
        return self._components

    def check_size(self, size: int) -> None:
        drawn = int(self.cfg.image_size) if self.cfg.image_size is not None else folder_image_size(self.path)
        if drawn != size:
            raise InputError(f"{self.path} generates {drawn} px images but the key samples are {size} px; set "
                             f"generation.image_size: {size} in the profile (or select keys at {drawn} px).")

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], size: int, progress: bool) -> np.ndarray:
        self.check_size(size)
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        cached = cached_images(self.cache, model_content_id(self.path), prompts, seeds, self.cfg)
        if cached is not None:
            return cached
        return generate_cached(self.components, prompts, seeds, self.cfg, self.cache, progress=progress)


def load_callable(spec: str) -> tuple[Callable, str]:
    """``module:function`` or ``path/to/file.py:function``: the function and its cache name (the
    resolved file or module, and the function)."""
    if ":" not in spec:
        raise InputError(f"--suspect-callable {spec!r}: write it as module:function or path/to/file.py:function.")
    where, func = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            file = Path(where)
            if not file.is_file():
                raise InputError(f"--suspect-callable: {file} does not exist.")
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"--suspect-callable: cannot import {where!r} ({type(err).__name__}: {err}).") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise InputError(f"--suspect-callable: {where!r} has no function {func!r}.")
    return fn, f"{Path(where).resolve() if where.endswith('.py') else where}:{func}"


class CallableSuspect:
    """``fn(prompt, seed)`` returning a PIL image or an HxWx3 array (uint8, or float in [0, 1]).
    Its images are cached under (name, role): two different functions need two different names."""

    def __init__(self, fn: Callable[[str, int], object], cache_dir: Path, name: str | None = None, role: str = "suspect"):
        self.fn = fn
        self.name = name or f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        self.cache_dir = Path(cache_dir) / "callable" / stable_hash([self.name, role], 16)

    def _image(self, out: object) -> Image.Image:
        if isinstance(out, Image.Image):
            return out.convert("RGB")
        arr = np.asarray(out)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise InputError(f"suspect callable {self.name} returned an array of shape {arr.shape}; return a PIL image "
                             "or an HxWx3 array (uint8, or float in [0, 1]).")
        return Image.fromarray(to_uint8(arr[..., :3]))

    def _one(self, prompt: str, seed: int, size: int) -> np.ndarray:
        path = self.cache_dir / f"{stable_hash([prompt, int(seed), size], 24)}.png"
        if path.is_file():
            return np.asarray(Image.open(path).convert("RGB"))
        img = self._image(self.fn(prompt, int(seed)))
        if img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        return np.asarray(img)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], size: int, progress: bool) -> np.ndarray:
        pairs = list(zip(prompts, seeds))
        return np.stack([self._one(p, s, size) for p, s in tqdm(pairs, desc=f"query {self.name}", unit="query", disable=not progress)])
