"""LoRA fine-tunes in diffusers' format: train, save, check, and load onto a base.

Infringers in the wild often fine-tune with LoRA: a small ``pytorch_lora_weights.safetensors``
on top of a public base (diffusers' ``train_text_to_image_lora.py`` writes it with
``StableDiffusionPipeline.save_lora_weights``; ``pipe.load_lora_weights`` reads it). genlineage
trains its own LoRA models through peft (``unet.add_adapter``), writes them in that format, and
takes anyone's such file as a suspect or shadow beside the base it was trained on.

A LoRA file from someone else is untrusted input, like a model folder: :func:`check_lora_file`
reads only its safetensors header (bounded, by the gate's parser) and the base's weight headers,
and refuses a file that is not safetensors, is above its size bound, holds a tensor whose name is
not a LoRA factor of a Linear or Conv2d layer the base has, or whose factors do not fit that layer.
Only then are the tensors read (safetensors, never a pickle), and they are loaded onto the base
and fused into its weights, so that querying a LoRA model costs what querying a full model costs.

genlineage's own LoRA models are folders holding the file, ``genlineage.json`` and the cache stamp;
their provenance names the base (relative to the folder), which is trusted only below genlineage's
data roots, where genlineage wrote it (:func:`lora_folder_base`).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ..cache import content_id
from ..errors import InputError
from ..io import stable_hash
from ..untrusted import open_regular, parse_json
from .gate import VARIANT_WEIGHTS, GiB, MiB, Trust, check_safetensors_header, read_model_json, weights_variant
from .quiet import quiet_hub

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
PROVENANCE = "genlineage.json"
LORA_FILE_MAX_BYTES = 4 * GiB   # SDXL LoRAs at rank 256 are about 1.7 GB; SD-v1.5 at rank 4: 3.2 MB
LORA_MAX_RANK = 1024
LORA_METADATA_MAX_BYTES = 1 * MiB
# diffusers' train_text_to_image_lora.py adapts the attention projections of the UNet
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
PARTS = ("unet", "text_encoder")
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}|\d{1,6}"
LORA_KEY = re.compile(rf"(?P<part>unet|text_encoder)\.(?P<module>(?:{_NAME})(?:\.(?:{_NAME})){{0,31}})"
                      r"\.(?P<factor>lora\.down|lora\.up|lora_A|lora_B|lora_linear_layer\.down|lora_linear_layer\.up)"
                      r"\.weight")
FACTOR = {"lora.down": "down", "lora_A": "down", "lora_linear_layer.down": "down",
          "lora.up": "up", "lora_B": "up", "lora_linear_layer.up": "up"}
FLOAT_DTYPES = ("F16", "BF16", "F32")
SAFETENSORS_NAMES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}
ADAPTER = "genlineage"


@dataclass(frozen=True)
class LoraModel:
    """A LoRA file and the base pipeline folder it was trained on: a model to query. ``base_trust``
    is how far the gate trusts the base; None: as far as the model's role allows (a suspect's base
    is checked like the suspect). Only code that knows the base is the owner's sets it (a stage
    passing one of the profile's bases, :func:`genlineage.models.pipeline_io.stage_model`)."""

    weights: Path
    base: Path
    base_trust: Trust | None = None

    def __str__(self) -> str:
        return f"{self.weights} on {self.base}"


@dataclass(frozen=True)
class LoraCheck:
    """What the gate found in a LoRA file: the layers it adapts per part, their ranks, and the scale
    (alpha / rank, from the file's metadata; 1 without metadata, diffusers' default) per part."""

    path: Path
    modules: dict[str, dict[str, int]]    # part -> module -> rank
    scales: dict[str, float]
    shapes: dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape), as checked

    @property
    def n_modules(self) -> int:
        return sum(len(m) for m in self.modules.values())


# --- the gate ---------------------------------------------------------------------------------------

def base_weight_shapes(base: str | Path, part: str) -> dict[str, tuple[int, ...]]:
    """Every weight of one component of a (checked) pipeline folder with its shape, read from the
    safetensors headers only (the variant the folder holds, every shard)."""
    folder = Path(base) / part
    variant = weights_variant(folder)
    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        match = VARIANT_WEIGHTS.fullmatch(file.name)
        if match is None or match.group("variant") != variant:
            continue
        header = check_safetensors_header(file)
        shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
    return shapes


def check_lora_file(path: str | Path, base: str | Path, role: str = "suspect") -> LoraCheck:
    """Refuse a LoRA file unless it is a bounded, valid safetensors file whose every tensor is a
    LoRA factor of a layer ``base`` (a pipeline folder that passed the gate) has, fitting that
    layer's shape; read nothing but headers. ``role`` names the model in every refusal."""
    path = Path(path)
    fix = f"pass the {LORA_WEIGHTS} that diffusers' save_lora_weights writes"
    if not path.name.endswith(".safetensors"):
        raise InputError(f"{role}: {path} is not a .safetensors file; genlineage reads LoRA weights only as safetensors "
                         f"(a .bin or .pt is a pickle, which runs code when loaded): {fix}.")
    fd = open_regular(path, fix)
    size = os.fstat(fd).st_size
    os.close(fd)
    if size > LORA_FILE_MAX_BYTES:
        raise InputError(f"{role}: {path} is {size:,} bytes, above the {LORA_FILE_MAX_BYTES:,}-byte bound for a LoRA file "
                         "(it is refused unread); an SD LoRA is far smaller.")
    try:
        header = check_safetensors_header(path)
    except InputError as err:
        raise InputError(f"{role}: {err}") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        raise InputError(f"{role}: {path} holds no tensors; {fix}.")
    factors = _factors(path, tensors, role)
    shapes = {part: {_canonical(part, k): v for k, v in base_weight_shapes(base, part).items()}
              for part in {part for part, _ in factors}}
    modules: dict[str, dict[str, int]] = {}
    for (part, module), pair in sorted(factors.items()):
        modules.setdefault(part, {})[module] = _check_factor_pair(path, part, module, pair, shapes[part], base, role)
    scales = _scales(path, header.get("__metadata__", {}), modules, role)
    return LoraCheck(path, modules, scales, {k: (v["dtype"], tuple(v["shape"])) for k, v in tensors.items()})


def _factors(path: Path, tensors: Mapping[str, Any], role: str) -> dict[tuple[str, str], dict[str, tuple[str, Any]]]:
    """(part, module) -> {"down": (name, info), "up": (name, info)}, every name a LoRA factor."""
    out: dict[tuple[str, str], dict[str, tuple[str, Any]]] = {}
    for name, info in tensors.items():
        match = LORA_KEY.fullmatch(name)
        if match is None:
            raise InputError(f"{role}: {path} holds the tensor {name[:120]!r}, which is not a LoRA factor of the UNet or "
                             "text encoder in diffusers' format (unet.<layer>.lora.down.weight / lora_A.weight, ...); "
                             "genlineage loads only those (convert other formats, e.g. kohya's, with diffusers first).")
        if info["dtype"] not in FLOAT_DTYPES:
            raise InputError(f"{role}: {path}: tensor {name!r} has dtype {info['dtype']}; LoRA factors are "
                             f"{', '.join(FLOAT_DTYPES)}.")
        slot = out.setdefault((match["part"], match["module"]), {})
        kind = FACTOR[match["factor"]]
        if kind in slot:
            raise InputError(f"{role}: {path} gives the {kind} factor of {match['part']}.{match['module']} twice "
                             f"({slot[kind][0]!r} and {name!r}).")
        slot[kind] = (name, info)
    return out


def _canonical(part: str, name: str) -> str:
    """A layer's name as both transformers generations spell it: CLIP's text encoder was saved with
    a ``text_model.`` prefix (SD-v1.5, SD-v2.1, most LoRA files), which transformers 5 drops."""
    return name.removeprefix("text_model.") if part == "text_encoder" else name


def _check_factor_pair(path: Path, part: str, module: str, pair: dict, base_shapes: Mapping[str, tuple[int, ...]],
                       base: str | Path, role: str) -> int:
    """The rank of one adapted layer, after checking both factors exist and fit the base's weight."""
    where = f"{role}: {path}: {part}.{module}"
    if set(pair) != {"down", "up"}:
        missing = ({"down", "up"} - set(pair)).pop()
        raise InputError(f"{where} has no {missing} factor; a LoRA layer needs both (down and up).")
    weight = base_shapes.get(f"{_canonical(part, module)}.weight")
    if weight is None:
        raise InputError(f"{where} adapts a layer the base {base} does not have ({part} has no {module}.weight); "
                         "give the base the LoRA was trained on (--suspect-base).")
    down, up = (tuple(pair[k][1]["shape"]) for k in ("down", "up"))
    rank = down[0] if down else 0
    if len(weight) == 2:      # Linear [out, in]: down [r, in], up [out, r]
        fits = down == (rank, weight[1]) and up == (weight[0], rank)
    elif len(weight) == 4:    # Conv2d [out, in, kh, kw]: down [r, in, kh, kw], up [out, r, 1, 1]
        fits = down == (rank, *weight[1:]) and up == (weight[0], rank, 1, 1)
    else:
        raise InputError(f"{where} adapts a layer of shape {list(weight)}, neither Linear nor Conv2d.")
    if not fits:
        raise InputError(f"{where}: factors of shapes {list(down)} and {list(up)} do not fit the base's layer of shape "
                         f"{list(weight)}; the LoRA was trained on another base (pass that one as --suspect-base).")
    if not 1 <= rank <= min(LORA_MAX_RANK, *weight[:2]):
        raise InputError(f"{where} has rank {rank}, outside 1..{min(LORA_MAX_RANK, *weight[:2])}.")
    return rank


def _scales(path: Path, metadata: Mapping[str, str], modules: Mapping[str, Mapping[str, int]],
            role: str) -> dict[str, float]:
    """alpha / rank per part (alpha / sqrt(rank) with rsLoRA), from the adapter metadata diffusers
    writes beside the tensors; 1 without it (diffusers then takes alpha = rank). Settings that make
    a layer more than ``scale * up @ down`` (DoRA, per-layer rank or alpha patterns) are refused."""
    raw = metadata.get("lora_adapter_metadata")
    if raw is None:
        return {part: 1.0 for part in modules}
    if len(raw) > LORA_METADATA_MAX_BYTES:
        raise InputError(f"{role}: {path}: its lora_adapter_metadata is above {LORA_METADATA_MAX_BYTES:,} bytes.")
    meta = parse_json(raw, path, "re-save the LoRA with diffusers' save_lora_weights")
    if not isinstance(meta, dict):
        raise InputError(f"{role}: {path}: its lora_adapter_metadata is not a JSON object.")
    scales = {}
    for part, layers in modules.items():
        get = lambda key, default=None: meta.get(f"{part}.{key}", default)  # noqa: E731
        if get("use_dora") or get("rank_pattern") or get("alpha_pattern"):
            raise InputError(f"{role}: {path}: the {part} adapter uses DoRA or per-layer rank/alpha patterns, which "
                             "genlineage does not load; merge the LoRA into a full pipeline folder and pass that (--suspect).")
        rank, alpha = get("r"), get("lora_alpha")
        if rank is None and alpha is None:
            scales[part] = 1.0
            continue
        ranks = set(layers.values())
        if not (_positive(rank) and _positive(alpha)) or not float(rank).is_integer() or ranks != {int(rank)}:
            raise InputError(f"{role}: {path}: its metadata gives {part} rank {rank!r} and alpha {alpha!r}, but its "
                             f"factors have rank(s) {sorted(ranks)}; re-save the LoRA with save_lora_weights.")
        scales[part] = float(alpha) / (math.sqrt(rank) if get("use_rslora") else float(rank))
    return scales


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1e6


# --- loading onto a base ------------------------------------------------------------------------------

def apply_lora(components: Any, check: LoraCheck) -> Any:
    """Load the checked file's tensors (safetensors) onto ``components`` (an SDComponents of the
    base) and fuse them into the weights, in place: the model then generates like a full one.
    The tensors read must be exactly those the gate checked."""
    from safetensors.torch import load_file

    state = load_file(check.path)
    if {k: (SAFETENSORS_NAMES.get(v.dtype), tuple(v.shape)) for k, v in state.items()} != check.shapes:
        raise InputError(f"{check.path} changed while it was being checked; pass a file nobody writes meanwhile.")
    pipe = _pipeline(components)
    try:
        with quiet_hub():  # diffusers notes each part the file does not adapt
            pipe.load_lora_weights(state, adapter_name=ADAPTER)
            _check_every_layer_adapted(components, check)
            for part, scale in check.scales.items():
                pipe.fuse_lora(components=[part], lora_scale=scale, adapter_names=[ADAPTER])
            pipe.unload_lora_weights()
    except InputError:
        raise
    except Exception as err:  # a layout diffusers cannot map although every name fits the base
        raise InputError(f"{check.path} cannot be loaded onto its base ({type(err).__name__}: {str(err)[:300]}).") from None
    for module in (components.unet, components.text_encoder):
        module.requires_grad_(False).eval()
    return components


def _check_every_layer_adapted(components: Any, check: LoraCheck) -> None:
    """Every layer the gate checked now carries the adapter: diffusers skips, with a warning only,
    factors of a layer it cannot adapt (an embedding has a 2-D weight like a Linear), and a model
    missing part of its LoRA would be judged as another model."""
    for part, layers in check.modules.items():
        model = getattr(components, part)
        adapted = {_canonical(part, name) for name, module in model.named_modules()
                   if ADAPTER in getattr(module, "lora_A", {})}
        skipped = sorted(name for name in layers if _canonical(part, name) not in adapted)
        if skipped:
            raise InputError(f"{check.path}: {len(skipped)} of its {len(layers)} {part} layers cannot carry a LoRA "
                             f"(e.g. {skipped[0]}: not a Linear or Conv2d layer); genlineage loads a LoRA only whole.")


def _pipeline(components: Any):
    """A StableDiffusionPipeline around the components (the object diffusers' LoRA loader works on)."""
    with quiet_hub():  # importing the pipeline class makes transformers warn about torchvision
        from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=components.vae, text_encoder=components.text_encoder,
                                   tokenizer=components.tokenizer, unet=components.unet, scheduler=components.sampler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def lora_identity(base_fingerprint: str, weights: str | Path) -> str:
    """The content id of a LoRA model: its base's and its file's (what caches of its images key on)."""
    return stable_hash(["lora", base_fingerprint, content_id(weights)], length=24)


# --- genlineage's own LoRA folders ---------------------------------------------------------------------

def is_lora_folder(path: str | Path) -> bool:
    """A folder holding a LoRA file and no pipeline: one of genlineage's LoRA models."""
    path = Path(path)
    return (path / LORA_WEIGHTS).is_file() and not (path / "model_index.json").exists()


def lora_folder_base(path: str | Path, trust: Trust) -> Path:
    """The base a genlineage LoRA folder was trained on, as its provenance names it (relative to the
    folder). Trusted only for folders genlineage wrote (below its data roots) or the owner's: anyone
    else's LoRA names no base of its own; its base is given beside it."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    if not trust.vouches_for(path):
        raise InputError(f"{path} is a LoRA folder outside genlineage's data roots; give its file and the base it was "
                         f"trained on: --suspect-lora {path / LORA_WEIGHTS} --suspect-base BASE_DIR.")
    meta = read_model_json(path / PROVENANCE) if (path / PROVENANCE).is_file() else {}
    base = meta.get("lora_base") if isinstance(meta, dict) else None
    if not isinstance(base, str) or os.path.isabs(base):
        raise InputError(f"{path}: {PROVENANCE} names no relative lora_base; it is not a LoRA model genlineage wrote.")
    return Path(os.path.normpath(real / base))  # written relative to the folder's real path (save_lora_model)


# --- training ---------------------------------------------------------------------------------------

def add_lora(unet: torch.nn.Module, rank: int, alpha: float | None, targets: Iterable[str], seed: int = 0) -> None:
    """Give ``unet`` a trainable LoRA adapter on ``targets`` (peft, as diffusers' LoRA script does):
    only the adapter's factors train; the up factors start at zero, so step 0 is the base. The down
    factors' random start is drawn from ``seed`` (peft draws from torch's global generator, which
    would make two runs of one config, or a run and its resumption, start apart)."""
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet.add_adapter(LoraConfig(r=int(rank), lora_alpha=float(alpha or rank), init_lora_weights="gaussian",
                                    target_modules=list(targets)))


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def write_lora_weights(unet: torch.nn.Module, folder: Path, rank: int, alpha: float | None,
                       targets: Iterable[str]) -> Path:
    """The adapter of ``unet`` as ``folder/pytorch_lora_weights.safetensors``, written as diffusers'
    LoRA script writes it (with its rank and alpha as adapter metadata), so ``load_lora_weights``
    of diffusers reads it as well as genlineage does."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    with quiet_hub():
        from diffusers import StableDiffusionPipeline

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    layers = {k: v.detach().contiguous() for k, v in layers.items()}
    metadata = {"r": int(rank), "lora_alpha": float(alpha or rank), "target_modules": sorted(targets)}
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True,
                                              unet_lora_adapter_metadata=metadata)
    return folder / LORA_WEIGHTS
