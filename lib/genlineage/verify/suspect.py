"""The suspect: untrusted, and queried only through (prompt, seed) -> image.

Two kinds. ``PipelineSuspect`` is a diffusers Stable-Diffusion pipeline folder (or a LoRA file in
diffusers' format with the base it was trained on, through the LoRA gate of
:mod:`genlineage.models.lora`), loaded from
safetensors only (``check_pipeline_folder``, the one gate of :mod:`genlineage.models.gate`, refuses
pickles, shards and links leaving the folder, special files, oversized or out-of-bounds configs,
corrupt safetensors and configs that ask for remote code) and never written to: its generations
are cached in the verify run's own folder. ``CallableSuspect`` wraps any function
``generate(prompt, seed) -> image`` (a remote API, another library): images are resized to the key
size and cached by (name, prompt, seed), so an interrupted run never pays for a query twice.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence, Union

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.imagefolder import MAX_IMAGE_PIXELS
from ..errors import InputError
from ..generation import GenerationCache, GenerationConfig, cached_images, generate_cached
from ..io import atomic_path, stable_hash
from ..key_sets import to_uint8
from ..models.gate import TOKENIZER_MAX_BYTES, read_model_json
from ..models.lora import LORA_WEIGHTS, LoraModel, check_lora_file, is_lora_folder, lora_folder_base
from ..models.pipeline_io import (OWNER, SDComponents, Trust, check_pipeline_folder, folder_image_size, is_own_pruned,
                                  load_lora, load_pipeline, model_content_id, own_data_roots, quiet_hub)
from ..models.storage import pruned_message

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


def check_sd_pipeline(path: str | Path, role: str, trust: Trust | None = None, steps: int | None = None) -> Path:
    """A safe Stable-Diffusion pipeline folder whose configs hold together (:func:`check_sd_configs`,
    for a sampler of ``steps`` steps when given), or InputError naming ``role`` and the fix
    (``trust``: the gate's, when the caller knows better than the role, e.g. a stage's own base)."""
    try:
        path = check_pipeline_folder(path, trust if trust is not None else role_trust(role))
    except InputError as err:
        raise InputError(f"{role}: {err}") from None
    index = read_model_json(path / "model_index.json")  # bounded: the gate has read it already
    cls = index.get("_class_name") if isinstance(index, dict) else None
    if cls not in SD_PIPELINES:
        what = f"a {cls} folder" if cls else "a folder whose model_index.json names no pipeline class"
        raise InputError(f"{role}: {path} is {what}; genlineage verify compares Stable-Diffusion "
                         f"pipelines ({', '.join(SD_PIPELINES)}: SD-v1.x/v2.x architecture). Export the model "
                         "in that format, or wrap it as a callable (--suspect-callable).")
    try:
        check_sd_configs(path, steps)
    except InputError as err:
        raise InputError(f"{role}: {err}") from None
    return path


# What the generation engine's DDIM sampler supports (diffusers' DDIMScheduler).
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
CONFIG_FIX = "fix the config, or re-save the model with StableDiffusionPipeline.save_pretrained"


def check_sd_configs(path: Path, steps: int | None = None) -> None:
    """Refuse configs that pass the gate's bounds but cannot draw an image, before any model is
    asked anything: a schedule that cannot be made (or one of ``steps`` steps), a text encoder
    whose width is not the UNet's cross-attention width, a tokenizer longer than the encoder's
    positions or with token ids beyond its vocabulary, latents of another channel count than the
    VAE's. Each would otherwise fail (a traceback) only when the model is first sampled, after the
    shadows had been queried. Reads only the (bounded) configs, never the weights."""
    configs = {name: read_model_json(path / name / file) for name, file in
               (("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"),
                ("scheduler", "scheduler_config.json"), ("tokenizer", "tokenizer_config.json"))}
    if not all(isinstance(c, dict) for c in configs.values()):
        bad = next(name for name, c in configs.items() if not isinstance(c, dict))
        raise InputError(f"{path / bad}: its config is not a JSON object; {CONFIG_FIX}.")
    _check_schedule(path / "scheduler" / "scheduler_config.json", configs["scheduler"], steps)
    _check_widths(path, configs)
    _check_tokenizer(path, configs["tokenizer"], configs["text_encoder"])


def _config_value(file: Path, config: dict, key: str, kind: type | tuple[type, ...], default: object = ...) -> object:
    """``config[key]`` of the type ``kind`` (booleans are no numbers), or a refusal naming the file."""
    value = config.get(key, default)
    if value is ... or not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{file}: '{key}' is {json.dumps(value)[:80] if value is not ... else 'missing'}, not a "
                         f"{'/'.join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))}; {CONFIG_FIX}.")
    return value


def _check_schedule(file: Path, config: dict, steps: int | None) -> None:
    """The sampler's schedule is made here from the config, as generation makes it: known
    prediction type and beta schedule, betas in (0, 1), and timesteps inside the training range."""
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise InputError(f"{file}: prediction_type {str(prediction)[:60]!r} is not one of {', '.join(PREDICTION_TYPES)}; "
                         f"{CONFIG_FIX}.")
    betas = config.get("trained_betas")
    if betas is None and config.get("beta_schedule", "linear") not in BETA_SCHEDULES:
        raise InputError(f"{file}: beta_schedule {str(config.get('beta_schedule'))[:60]!r} is not one of "
                         f"{', '.join(BETA_SCHEDULES)}; {CONFIG_FIX}.")
    total = _config_value(file, config, "num_train_timesteps", int, 1000)
    if betas is not None and not (isinstance(betas, list) and len(betas) == total
                                  and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 < b < 1
                                          for b in betas)):
        raise InputError(f"{file}: trained_betas is not a list of num_train_timesteps ({total}) numbers in (0, 1); "
                         f"{CONFIG_FIX}.")
    if betas is None:
        start = _config_value(file, config, "beta_start", (int, float), 0.0001)
        end = _config_value(file, config, "beta_end", (int, float), 0.02)
        if not 0 < start <= end < 1:
            raise InputError(f"{file}: beta_start {start} and beta_end {end} do not make a schedule (0 < start <= end "
                             f"< 1); {CONFIG_FIX}.")
    _config_value(file, config, "steps_offset", int, 0)
    _check_timesteps(file, config, total, steps or 1)


def _check_timesteps(file: Path, config: dict, total: int, steps: int) -> None:
    """Make the DDIM schedule of ``steps`` steps and refuse it unless every timestep indexes the
    training schedule (a huge ``steps_offset`` points past its end)."""
    from diffusers import DDIMScheduler

    try:
        with quiet_hub():
            sampler = DDIMScheduler.from_config(config)
            sampler.set_timesteps(steps)
        timesteps = sampler.timesteps
    except Exception as err:  # an unknown timestep_spacing, fewer timesteps than steps, ...
        raise InputError(f"{file}: no {steps}-step DDIM schedule can be made from it ({type(err).__name__}: "
                         f"{str(err)[:200]}); {CONFIG_FIX}.") from None
    if total < 2 or len(timesteps) == 0 or int(timesteps.max()) >= total or int(timesteps.min()) < 0:
        raise InputError(f"{file}: a {steps}-step DDIM schedule from it has timesteps outside [0, {total - 1}] "
                         f"(num_train_timesteps {total}, steps_offset {config.get('steps_offset', 0)}); {CONFIG_FIX}.")
    if not torch.isfinite(sampler.alphas_cumprod).all() or not bool((sampler.alphas_cumprod > 0).all()):
        raise InputError(f"{file}: its noise schedule is not finite and positive; {CONFIG_FIX}.")


def _check_widths(path: Path, configs: dict[str, dict]) -> None:
    """The UNet reads the text encoder's hidden states (cross-attention) and the VAE's latents."""
    unet, vae, text = configs["unet"], configs["vae"], configs["text_encoder"]
    unet_file, vae_file = path / "unet" / "config.json", path / "vae" / "config.json"
    text_file = path / "text_encoder" / "config.json"
    hidden = _config_value(text_file, text, "hidden_size", int)
    cross = _config_value(unet_file, unet, "cross_attention_dim", (int, list), 1280)
    if any(width != hidden for width in (cross if isinstance(cross, list) else [cross])):
        raise InputError(f"{unet_file}: cross_attention_dim {cross} is not the text encoder's hidden_size {hidden} "
                         f"({text_file}), so the UNet cannot read that encoder; {CONFIG_FIX}.")
    latent = _config_value(vae_file, vae, "latent_channels", int, 4)
    for key in ("in_channels", "out_channels"):
        if _config_value(unet_file, unet, key, int, 4) != latent:
            raise InputError(f"{unet_file}: {key} {unet.get(key, 4)} is not the VAE's latent_channels {latent} (a "
                             f"text-to-image UNet works on the VAE's latents); {CONFIG_FIX}.")
    _config_value(unet_file, unet, "sample_size", int)
    blocks = _config_value(vae_file, vae, "block_out_channels", list, [64])
    if not blocks:
        raise InputError(f"{vae_file}: block_out_channels is empty; {CONFIG_FIX}.")


def _check_tokenizer(path: Path, config: dict, text: dict) -> None:
    """Prompts are padded to the tokenizer's length, which the encoder must have positions for,
    and every token id must index the encoder's embeddings."""
    tok_file, text_file = path / "tokenizer" / "tokenizer_config.json", path / "text_encoder" / "config.json"
    length = _config_value(tok_file, config, "model_max_length", int)
    positions = _config_value(text_file, text, "max_position_embeddings", int, 77)
    if length > positions:
        raise InputError(f"{tok_file}: model_max_length {length} is longer than the text encoder's "
                         f"max_position_embeddings {positions} ({text_file}); {CONFIG_FIX}.")
    vocab = _config_value(text_file, text, "vocab_size", int, 49408)
    for file, ids in _token_ids(path / "tokenizer", config):
        if ids and max(ids) >= vocab:
            raise InputError(f"{file}: token id {max(ids)} lies beyond the text encoder's vocab_size {vocab} "
                             f"({text_file}); {CONFIG_FIX}.")


def _token_ids(folder: Path, config: dict) -> list[tuple[Path, list[int]]]:
    """Every token id the tokenizer's files give (vocab.json, tokenizer.json's vocabulary and
    added tokens, tokenizer_config.json's added tokens), by file. A non-integer id is refused."""
    found: list[tuple[Path, list]] = []
    if (folder / "vocab.json").is_file():
        vocab = read_model_json(folder / "vocab.json", TOKENIZER_MAX_BYTES)
        found.append((folder / "vocab.json", list(vocab.values()) if isinstance(vocab, dict) else [None]))
    if (folder / "tokenizer.json").is_file():
        fast = read_model_json(folder / "tokenizer.json", TOKENIZER_MAX_BYTES)
        model = fast.get("model") if isinstance(fast, dict) else None
        vocab = model.get("vocab") if isinstance(model, dict) else None
        added = fast.get("added_tokens") if isinstance(fast, dict) else None
        ids = list(vocab.values()) if isinstance(vocab, dict) else []
        ids += [t.get("id") if isinstance(t, dict) else None for t in (added or [])]
        found.append((folder / "tokenizer.json", ids))
    decoder = config.get("added_tokens_decoder") or {}
    found.append((folder / "tokenizer_config.json",
                  [int(k) if str(k).isdigit() else None for k in (decoder if isinstance(decoder, dict) else [None])]))
    for file, ids in found:
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise InputError(f"{file}: a token id is not a non-negative integer; {CONFIG_FIX}.")
    return found


ModelPath = Path | LoraModel  # a pipeline folder, or a LoRA file on its base
LOCAL = (str, Path, LoraModel)  # the model specs that are files genlineage checks and loads itself


def check_sd_model(model: str | Path | LoraModel, role: str, steps: int | None = None) -> ModelPath:
    """A model folder or LoRA model checked by the gates before anything loads it: a pipeline
    folder (:func:`check_sd_pipeline`); a :class:`~genlineage.models.lora.LoraModel` (its base a
    pipeline folder, its file a LoRA of that base's layers); or one of genlineage's LoRA folders,
    which the owner's roles may pass as a folder (its provenance names its base; a suspect's is
    believed only below genlineage's data roots, where genlineage wrote it; anyone else's LoRA comes
    with its base given beside it). The base passes the gate with the trust the model carries, else
    the role's (a suspect's base like the suspect). One of genlineage's own fine-tunes kept as its
    recipe (``models.keep_finetuned: none``, below its data roots) is recognised as it is: it holds
    no weights to check, and :class:`PipelineSuspect` answers only from its cached images."""
    if is_own_pruned(model):
        return Path(model)
    if not isinstance(model, LoraModel) and is_lora_folder(model):
        try:
            model = LoraModel(Path(model) / LORA_WEIGHTS,
                              lora_folder_base(model, role_trust(role) or Trust(own_roots=own_data_roots())))
        except InputError as err:
            raise InputError(f"{role}: {err}") from None
    if isinstance(model, LoraModel):
        base = check_sd_pipeline(model.base, f"{role}'s base", model.base_trust, steps)
        check_lora_file(model.weights, base, role)
        return LoraModel(Path(model.weights), base, model.base_trust)
    return check_sd_pipeline(model, role, steps=steps)


def load_sd_pipeline(model: str | Path | LoraModel, role: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """Check, then load from safetensors on ``device`` in ``dtype`` (the profile's: a GPU run queries
    every shadow on the GPU); any loading failure becomes an InputError naming ``role``."""
    model = check_sd_model(model, role)
    try:
        if isinstance(model, LoraModel):
            return load_lora(model, device, dtype, base_trust=role_trust(role), role=role)
        return load_pipeline(model, device=device, dtype=dtype, trust=role_trust(role))
    except InputError as err:  # e.g. weights that are not finite: the message names the file, this the role
        raise type(err)(f"{role}: {err}") from None
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


@contextmanager
def drawing(role: str, model: object) -> Iterator[None]:
    """Any failure while ``model`` draws images as an :class:`InputError` naming its role: configs
    within the gate's bounds can still fail at sampling time (a schedule that cannot be made, a
    shape that does not fit), and a verdict run must end with a message, never a traceback."""
    try:
        yield
    except InputError as err:
        raise type(err)(f"{role}: {err}") from None
    except Exception as err:
        raise InputError(f"{role}: {model} failed while drawing images ({type(err).__name__}: {str(err)[:300]}); "
                         "it is refused. Check that it is a working Stable-Diffusion pipeline (load and sample it "
                         "with diffusers).") from None


class PipelineSuspect:
    """A pipeline folder, or a LoRA file on its base, queried locally. The files pass the gate at
    once; the weights are loaded (LoRA fused) only when an image is missing from the cache, which
    is keyed on the files' content: a shadow or suspect asked before costs no load at all."""

    def __init__(self, model: str | Path | LoraModel, cfg: GenerationConfig, cache_dir: Path, role: str = "suspect",
                 device: str = "cpu", dtype: torch.dtype = torch.float32):
        self.path = check_sd_model(model, role, cfg.steps)
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
        """The loaded pipeline (loaded on first use; a loading failure names the role). A pruned
        fine-tune has none: asked an image its cache does not hold, it is refused with the rebuild."""
        if self._components is None and is_own_pruned(self.path):
            raise InputError(f"{self.role}: {pruned_message(self.path)}")
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
        components = self.components
        with drawing(self.role, self.path):
            return generate_cached(components, prompts, seeds, self.cfg, self.cache, progress=progress)


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
        """The callable's answer as an RGB image: its pixel count checked before any conversion
        (an answer of 100,000 x 100,000 px would take tens of GB to convert), its values finite."""
        if isinstance(out, Image.Image):
            self._check_pixels(out.width * out.height, f"{out.width}x{out.height} px")
            return out.convert("RGB")
        arr = np.asarray(out)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise InputError(f"suspect callable {self.name} returned an array of shape {arr.shape}; return a PIL image "
                             "or an HxWx3 array (uint8, or float in [0, 1]).")
        self._check_pixels(arr.shape[0] * arr.shape[1], f"{arr.shape[1]}x{arr.shape[0]} px")
        try:
            return Image.fromarray(to_uint8(arr[..., :3]))
        except InputError as err:
            raise type(err)(f"suspect callable {self.name} returned an image of which {err}; it is refused, never "
                            "judged. Return finite pixel values (uint8, or float in [0, 1]).") from None
        except (TypeError, ValueError) as err:  # e.g. an array of strings or objects
            raise InputError(f"suspect callable {self.name} returned an array PIL cannot read as an image "
                             f"({str(err)[:200]}); return uint8, or float in [0, 1].") from None

    def _check_pixels(self, pixels: int, what: str) -> None:
        if pixels > MAX_IMAGE_PIXELS:
            raise InputError(f"suspect callable {self.name} returned an image of {what}, above the "
                             f"{MAX_IMAGE_PIXELS:,}-pixel bound; return images of about the key size (they are "
                             "resized to it).")

    def _call(self, prompt: str, seed: int) -> object:
        """The callable's answer; anything it raises becomes a message naming it (exit 2, not a traceback)."""
        try:
            return self.fn(prompt, int(seed))
        except Exception as err:
            raise InputError(f"suspect callable {self.name} raised {type(err).__name__} for prompt {prompt[:80]!r} "
                             f"and seed {int(seed)}: {str(err)[:300]}. Fix the function, then run again (answers "
                             "already given are cached).") from None

    def _one(self, prompt: str, seed: int, size: int) -> np.ndarray:
        path = self.cache_dir / f"{stable_hash([prompt, int(seed), size], 24)}.png"
        if path.is_file():
            return np.asarray(Image.open(path).convert("RGB"))
        img = self._image(self._call(prompt, seed))
        if img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        return np.asarray(img)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], size: int, progress: bool) -> np.ndarray:
        pairs = list(zip(prompts, seeds))
        return np.stack([self._one(p, s, size)
                         for p, s in tqdm(pairs, desc=f"query {self.name}", unit="query", disable=not progress)])


# a pipeline folder, a LoRA file on its base, a callable (prompt, seed) -> image, or a Suspect
ModelSpec = Union[str, Path, LoraModel, Callable, Suspect]
