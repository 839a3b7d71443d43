"""Profiles: one YAML per profile, the only thing that differs between smoke, tiny and paper.

A profile is a nested mapping. Every count and size the code uses is read from it, so that the
same code path serves a 2-core CPU run and a GPU run on SD-v1.5/2.1. ``extends`` lets a profile
start from another one and override a few keys.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

import yaml

from .errors import InputError
from .io import stable_hash

PROFILE_DIR = Path(__file__).with_name("profiles")
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- typed sections ------------------------------------------------------------------------------
# Each section of a profile parses once into a frozen dataclass that owns its defaults and refuses
# an unknown key (naming it and the nearest valid one): a misspelled key must never be dropped
# silently and leave a default in force. Every job reads its settings from these objects.

def _key(where: str, name: str) -> str:
    """The dotted profile key of ``name`` in section ``where`` (the top level has no prefix)."""
    return f"{where}.{name}" if where else name


def _nearest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(valid), n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}? " if close else ""


def _coerce(kind: Any, value: Any, where: str) -> Any:
    """``value`` as the annotated ``kind`` (a section, a dict or tuple of them, a scalar), or an
    InputError naming the profile key."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kind = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    if isinstance(kind, type) and issubclass(kind, Section):
        return kind.parse(value, where)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise InputError(f"profile key {where} must be a mapping; got {value!r}.")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"profile key {where} must be a list; got {value!r}.")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"profile key {where} must be true or false; got {value!r}.")
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise InputError(f"profile key {where} must be {'an integer' if kind is int else 'a number'}; got {value!r}.")
        return kind(value)
    if kind is str:
        if not isinstance(value, str):
            raise InputError(f"profile key {where} must be text; got {value!r}.")
        return value
    raise TypeError(f"no rule to read {kind!r} at {where}")


@dataclass(frozen=True)
class Section:
    """A profile section: ``parse`` reads it from the YAML mapping, ``as_dict`` is what a cache
    stamp records (every setting, defaults included, so a changed default redoes the work)."""

    CHOICES: ClassVar[dict[str, tuple]] = {}  # field -> the values it may take

    @classmethod
    def parse(cls, raw: Mapping | None, where: str) -> "Section":
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise InputError(f"profile key {where or 'the profile'} must be a mapping of settings; got {raw!r}.")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in fields(cls)]
        for key in raw:
            if key not in names:
                raise InputError(f"profile key {_key(where, key)} is not a setting of {where or 'a profile'}; "
                                 f"{_nearest(str(key), names)}valid keys: {', '.join(names)}.")
        values = {}
        for f in fields(cls):
            if f.name in raw:
                values[f.name] = _coerce(hints[f.name], raw[f.name], _key(where, f.name))
            elif f.default is MISSING and f.default_factory is MISSING:
                raise InputError(f"profile key {_key(where, f.name)} is missing; add it to the profile.")
        for name, choices in cls.CHOICES.items():
            if name in values and values[name] not in choices:
                raise InputError(f"profile key {_key(where, name)} is {values[name]!r}; choose one of "
                                 f"{', '.join(map(str, choices))}.")
        return cls(**values)

    def as_dict(self) -> dict:
        return json.loads(json.dumps(_plain(self), default=str))

    def replace(self, **changes: Any) -> "Section":
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Duplication(Section):
    rate: float = 0.0     # share of a source set's images that appear ``copies`` times
    copies: int = 1


@dataclass(frozen=True)
class DomainSettings(Section):
    """One domain's data: generated stand-ins (``generated_faces``/``generated_scenes``) or a real
    release converted from ``root``; the size of each role."""
    kind: str
    source: int
    heldout: int
    suspicious_pool: int
    shadow_pool: int
    duplication: Duplication = Duplication()
    root: str | None = None      # real data: the local copy of the release
    images: str | None = None    # CC3M: a separate folder of downloaded images
    limit: int | None = None     # real data: convert at most this many items
    CHOICES: ClassVar[dict[str, tuple]] = {"kind": ("generated_faces", "generated_scenes", "celeba_dialog", "cc3m")}


@dataclass(frozen=True)
class PretrainData(Section):
    n: int = 0
    mix: dict[str, float] = field(default_factory=lambda: {"faces": 0.5, "scenes": 0.5})


@dataclass(frozen=True)
class DataSettings(Section):
    image_size: int
    domains: dict[str, DomainSettings]
    pretrain: PretrainData = PretrainData()


@dataclass(frozen=True)
class TrainConfig(Section):
    """One training run's settings (pre-training, a source's or a suspicious model's fine-tune)."""
    steps: int
    batch: int
    lr: float
    seed: int = 0
    train_text_encoder: bool = False
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0            # 0: only at the end
    # The frozen parts (VAE, and the text encoder unless trained) encode the data once, before the
    # first step: in half precision on a GPU that is about twice as fast and half the memory, the
    # VAE at ``encode_batch`` images, a batch that fits the card (its encoder's activations at 512 px
    # are several hundred MB per image in fp16). The trained weights stay fp32.
    frozen_dtype: str = "float32"
    encode_batch: int = 64
    # full: every UNet weight trains (and the text encoder's with train_text_encoder). lora: only a
    # low-rank adapter on the UNet's ``lora_targets`` (peft; diffusers' train_text_to_image_lora.py),
    # saved as a pytorch_lora_weights.safetensors on the base. alpha None: the rank (scale 1).
    finetune: str = "full"
    lora_rank: int = 4
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    CHOICES: ClassVar[dict[str, tuple]] = {"mixed_precision": ("no", "fp16", "bf16"),
                                           "lr_scheduler": ("constant", "constant_with_warmup"),
                                           "frozen_dtype": ("float32", "float16", "bfloat16"),
                                           "finetune": ("full", "lora")}
    # Settings added after models had been trained and cached, left out of the key at the value that
    # trains exactly as before: adding a setting must not make every cached model stale.
    KEYED_WHEN_SET: ClassVar[dict[str, Any]] = {"frozen_dtype": "float32", "encode_batch": 64, "finetune": "full"}
    LORA_ONLY: ClassVar[tuple[str, ...]] = ("lora_rank", "lora_alpha", "lora_targets")

    def __post_init__(self) -> None:
        if self.finetune == "lora" and self.train_text_encoder:
            raise InputError("training: finetune lora adapts the UNet only; set train_text_encoder: false.")

    @classmethod
    def from_mapping(cls, cfg: Mapping, where: str = "training", **override: Any) -> "TrainConfig":
        return cls.parse({**dict(cfg), **override}, where)

    def key(self) -> str:
        """What determines the trained weights (checkpoint spacing does not)."""
        d = dataclasses.asdict(self)
        d.pop("checkpoint_every")
        if self.finetune == "full":
            for name in self.LORA_ONLY:  # a full fine-tune does not read them
                d.pop(name)
        else:  # alpha None trains as alpha = rank: one model, one key
            d["lora_alpha"] = float(self.lora_alpha or self.lora_rank)
        for name, neutral in self.KEYED_WHEN_SET.items():
            if d[name] == neutral:
                d.pop(name)
        return stable_hash(d)


@dataclass(frozen=True)
class VAETrainConfig(Section):
    steps: int
    batch: int
    lr: float
    kl_weight: float = 1e-6
    seed: int = 0

    @classmethod
    def from_mapping(cls, cfg: Mapping, where: str = "models.vae.train") -> "VAETrainConfig":
        return cls.parse(cfg, where)


@dataclass(frozen=True)
class VAESettings(Section):
    block_out_channels: tuple[int, ...]
    train: VAETrainConfig
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    threads: int = 2      # the VAE trains alone, before the bases, so it may use every core


@dataclass(frozen=True)
class TokenizerSettings(Section):
    max_length: int = 32


@dataclass(frozen=True)
class TextEncoderSettings(Section):
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    hidden_act: str = "quick_gelu"


@dataclass(frozen=True)
class UNetSettings(Section):
    block_out_channels: tuple[int, ...]
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 32


@dataclass(frozen=True)
class BaseSettings(Section):
    """A base model: a local pipeline folder (``path``, the paper profile) or a tiny one built and
    pre-trained here from the other keys."""
    path: str | None = None
    seed: int = 0
    pretrain_subset: tuple[float, ...] | None = None   # [start, end) share of the corpus this base sees
    tokenizer: TokenizerSettings = TokenizerSettings()
    text_encoder: TextEncoderSettings | None = None
    unet: UNetSettings | None = None
    prediction_type: str = "epsilon"
    pretrain: TrainConfig | None = None
    CHOICES: ClassVar[dict[str, tuple]] = {"prediction_type": ("epsilon", "v_prediction")}


# What stage 03 keeps of a fine-tune once it is queried (``models.keep_finetuned``; the disk plan
# and the release live in ``models.storage``; the choices and their check live here, with the settings).
KEEP_POLICIES = ("full", "fp16", "none")
EXACT_FP16_DTYPE = "float16"  # the inference dtype under which fp16 weights draw the same images


def check_policy(policy: str, inference_dtype: str | None = None) -> str:
    """Refuse a keep policy that is not one of :data:`KEEP_POLICIES`, and ``fp16`` where it would
    change images (any inference dtype but float16)."""
    if policy not in KEEP_POLICIES:
        raise InputError(f"models.keep_finetuned: {policy!r} is not one of {', '.join(KEEP_POLICIES)}.")
    if policy == "fp16" and inference_dtype is not None and inference_dtype != EXACT_FP16_DTYPE:
        raise InputError(f"models.keep_finetuned: fp16 needs run.dtype: float16 (this profile infers in "
                         f"{inference_dtype}, where fp16 weights would draw other images than the ones cached "
                         "under the model's identity); keep full, or use none.")
    return policy


@dataclass(frozen=True)
class ModelsSettings(Section):
    bases: dict[str, BaseSettings]
    vae: VAESettings | None = None
    # What an evaluated or shadow fine-tune keeps once its queries are cached (models.storage):
    # full (as trained), fp16 (its own weights in float16; needs dtype: float16), none (its recipe).
    keep_finetuned: str = "full"
    # Whether stage 02's memorisation images stay in the generation cache once each model's RD table
    # is written (false: removed; nothing else reads them, and the sources and bases they come from
    # are kept, so notebook 02's few examples are drawn again on demand).
    keep_memorisation_images: bool = True
    CHOICES: ClassVar[dict[str, tuple]] = {"keep_finetuned": KEEP_POLICIES}


@dataclass(frozen=True)
class NoiseSchedulerSettings(Section):
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012


@dataclass(frozen=True)
class TrainingSettings(Section):
    finetune: dict[str, Any]          # a TrainConfig without its seed (each job derives one)
    noise_scheduler: NoiseSchedulerSettings = NoiseSchedulerSettings()

    @classmethod
    def parse(cls, raw: Mapping | None, where: str) -> "TrainingSettings":
        out = super().parse(raw, where)
        TrainConfig.from_mapping(out.finetune, f"{where}.finetune")  # refuses a misspelled key now, not in a job
        return out


@dataclass(frozen=True)
class GenerationConfig(Section):
    """G(M, p, s)'s sampler: DDIM with classifier-free guidance, run in batches of exactly ``batch``
    images (a short batch is padded) with ``threads`` torch threads. Both are fixed per profile
    because the last bits of an image depend on them: the float kernels' summation order follows
    the batch shape and the thread count (a trained smoke model's images differ by one grey level
    between batches of 1, 5 and 16, and between 1 and 2 threads at a batch of 12)."""
    sampler: str = "ddim"
    steps: int = 20
    guidance_scale: float = 3.0
    eta: float = 0.0
    batch: int = 64
    threads: int = 1
    image_size: int | None = None   # px; None: the model's own (SD-2.1's UNet says 768: the paper profile asks 512)
    CHOICES: ClassVar[dict[str, tuple]] = {"sampler": ("ddim",)}

    @classmethod
    def from_mapping(cls, cfg: Mapping, where: str = "generation") -> "GenerationConfig":
        return cfg if isinstance(cfg, GenerationConfig) else cls.parse(cfg, where)

    def key(self) -> dict:
        """Everything that changes an image, to the last bit: every setting, batch and threads included."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MemorisationSettings(Section):
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    distance: str = "l2"


@dataclass(frozen=True)
class ModelCounts(Section):
    infringing: int
    innocent: int


@dataclass(frozen=True)
class LoraAblationSettings(Section):
    """Which suspicious models get a LoRA twin (same pairs, same seed, a LoRA instead of a full
    fine-tune), and the LoRA learning rates tried on shadow models before any twin is evaluated."""
    enabled: bool = True                      # false: run_all skips notebook 10 (a profile that cannot afford it)
    on_request: bool = False                  # true: run_all runs notebook 10 only when named (--only 10)
    rhos: tuple[float, ...] = (1.0,)          # evaluated infringers twinned (every evaluated innocent is)
    replicates: tuple[int, ...] = ()          # evaluated models of these (empty: every); shadows: every replicate
    sources: tuple[str, ...] = ()             # the sources whose models are twinned (empty: every)
    lr_grid: tuple[float, ...] = ()           # empty: suspicious.lora's lr (or the full fine-tune's), no choice
    selection_replicate: int = 0              # whose shadows choose the lr


@dataclass(frozen=True)
class WorldGridSettings(Section):
    """The suspects' world chosen on shadow models (stage 03, ``genlineage.experiments.world_grid``):
    every cell (training-set size n, fine-tune steps) of the grid trains ``shadows`` infringing
    shadows at ``rho`` and as many innocent ones per source, from the shadow pool; the rule of
    ``world_grid.WORLD_RULE`` picks the cell, among those whose stage-03 fine-tune steps (every
    suspicious, shadow and null-shadow model at the cell's steps) fit ``budget_steps``. An empty grid
    keeps ``suspicious.n_samples`` and ``suspicious.train.steps`` as written."""
    n_samples: tuple[int, ...] = ()
    steps: tuple[int, ...] = ()
    rho: float = 0.3
    shadows: int = 1
    budget_steps: int = 0        # 0: no cap

    @property
    def enabled(self) -> bool:
        return bool(self.n_samples) and bool(self.steps)

    @classmethod
    def parse(cls, raw: Mapping | None, where: str) -> "WorldGridSettings":
        out = super().parse(raw, where)
        if bool(out.n_samples) != bool(out.steps):
            raise InputError(f"profile key {where}: give both n_samples and steps (a grid of both), or neither.")
        if any(int(v) < 1 for v in (*out.n_samples, *out.steps)) or out.shadows < 1 or out.budget_steps < 0:
            raise InputError(f"profile key {where}: sizes, steps and shadows must be at least 1, budget_steps >= 0.")
        if not 0 < out.rho <= 1:
            raise InputError(f"profile key {where}.rho must lie in (0, 1].")
        return out


@dataclass(frozen=True)
class SuspiciousSettings(Section):
    n_samples: int
    rhos: tuple[float, ...]
    evaluated: ModelCounts
    shadow: ModelCounts
    # Innocent shadows per source shared by every replicate: the owner's test's null (stage 08) is
    # every innocent shadow made like the suspect (the source's base, the profile's fine-tune, the
    # source's domain), these and each replicate's own. Enough of them let the rank test alone
    # support the target rate (19 for 5%).
    null_shadows: int = 0
    train: dict[str, Any] = field(default_factory=dict)  # overrides training.finetune
    replicates: tuple[int, ...] = (0,)
    lineages: tuple[str, ...] = ("same",)
    base_sources: bool = True
    base_source_domain: str | None = None     # None: the first domain in sorted order
    base_candidates: str = "pretrain"
    candidates_max: int = 10**9
    watermark_generated: bool = False
    # How suspicious and shadow models are fine-tuned: full (every UNet weight) or lora (a low-rank
    # adapter on the base, the way most fine-tunes in the wild are made); ``lora`` overrides the
    # training settings of LoRA models (lora_rank, lora_alpha, lora_targets, and e.g. a larger lr).
    finetune: str = "full"
    lora: dict[str, Any] = field(default_factory=dict)
    lora_ablation: LoraAblationSettings = LoraAblationSettings()
    world: WorldGridSettings = WorldGridSettings()
    CHOICES: ClassVar[dict[str, tuple]] = {"base_candidates": ("pretrain", "domain_source"), "finetune": ("full", "lora")}

    def train_config(self, finetune_defaults: Mapping, finetune: str | None = None, **override: Any) -> TrainConfig:
        """The TrainConfig of a suspicious or shadow model fine-tuned the ``finetune`` way (default:
        the profile's): training.finetune, then ``train``, then for LoRA ``lora``."""
        how = finetune or self.finetune
        extra = {"finetune": how, **(self.lora if how == "lora" else {})}
        return TrainConfig.from_mapping({**finetune_defaults, **self.train, **extra}, "suspicious.train", **override)


@dataclass(frozen=True)
class Delta0Grid(Section):
    start: float = 0.01
    stop: float = 0.40
    step: float = 0.005


@dataclass(frozen=True)
class WatermarkSettings(Section):
    n_images: int = 30
    target_fpr: float = 0.1


def check_seeds_apart(key_seeds: Iterable[int], query_seeds: Iterable[int], where: str = "") -> None:
    """Refuse reference seeds that are also query seeds. A Strategy 2 reference is the source's
    generation at one of its key seeds; a suspect queried at that seed starts from the very noise
    the reference was drawn from, and every model tuned from the same base gets part of its
    distance from shared noise rather than from inherited memory."""
    key_seeds, query_seeds = [int(s) for s in key_seeds], [int(s) for s in query_seeds]
    shared = sorted(set(key_seeds) & set(query_seeds))
    if shared:
        raise InputError(f"{where}key seeds {sorted(key_seeds)} and query seeds {sorted(query_seeds)} share {shared}: "
                         "a suspect queried at a seed a key reference was made with starts from the reference's own "
                         "noise. Make attribution.key_seeds and attribution.query_seeds disjoint (e.g. key_seeds: "
                         "[1000, 1001, ...], query_seeds: [0, 1, ...]) or rebuild the key set with other seeds.")


@dataclass(frozen=True)
class AttributionSettings(Section):
    """Stage 04 and the tool: key sets, query seeds, distance, delta0. ``key_seeds`` make key
    references (Strategy 1's scoring, Strategy 2's self-consistency and medoid) and
    ``query_seeds`` query every suspect: at least 2 key seeds (self-consistency compares
    generations pairwise), at least 1 query seed, none in both."""
    key_seeds: tuple[int, ...]
    query_seeds: tuple[int, ...]
    n_keys: int = 30
    n_keys_grid: tuple[int, ...] = (10, 20, 30, 50)
    distance: str = "l2"
    delta0: float = 0.15
    delta0_grid: Delta0Grid = Delta0Grid()
    main_strategy: str = "generation"
    generation_relative_to_base: bool = True
    random_seed: int = 0
    watermark: WatermarkSettings = WatermarkSettings()
    CHOICES: ClassVar[dict[str, tuple]] = {"main_strategy": ("generation", "detection", "random")}

    @classmethod
    def parse(cls, raw: Mapping | None, where: str) -> "AttributionSettings":
        raw = dict(raw or {})
        if "seeds" in raw:
            raise InputError(f"{where}.seeds is gone; name two disjoint lists instead, {where}.key_seeds (make key "
                             f"references, at least 2) and {where}.query_seeds (query suspects).")
        out = super().parse(raw, where)
        for name in ("key_seeds", "query_seeds"):
            seeds = getattr(out, name)
            if len(set(seeds)) != len(seeds):
                raise InputError(f"{where}.{name} {list(seeds)} repeats a seed; list each seed once.")
        if len(out.key_seeds) < 2:
            raise InputError(f"{where}.key_seeds {list(out.key_seeds)} has fewer than 2 seeds; Strategy 2 measures "
                             "self-consistency between generations of one prompt, so list at least 2.")
        if not out.query_seeds:
            raise InputError(f"{where}.query_seeds is empty; list at least 1 seed to query suspects with.")
        check_seeds_apart(out.key_seeds, out.query_seeds, f"{where}: ")
        return out


@dataclass(frozen=True)
class StatisticalSettings(Section):
    classifier: str = "logistic"
    strategy: str | None = None           # None: attribution.main_strategy
    delta0: str = "calibrated"
    target_fpr: float = 0.1
    n_boot: int = 1000
    CHOICES: ClassVar[dict[str, tuple]] = {"classifier": ("logistic", "random_forest"), "delta0": ("calibrated", "paper")}


OWNER_STATISTICS = ("mean_rd", "lowest_k_rd", "conf", "key_control_contrast", "discriminator", "per_key_z")


def check_level(value: float, where: str = "target FPR") -> float:
    """The one range check of a test's level (the owner's target FPR, the selection rate): strictly
    between 0 and 1, since a rank or t p-value is never 0 and a level of 1 calls every model.
    NaN fails too. Used by the profile, the CLI and ``genlineage.verify``."""
    if not 0 < float(value) < 1:
        raise InputError(f"{where} {value}: the target FPR must lie strictly between 0 and 1 "
                         "(e.g. 0.05 for 5%).")
    return float(value)


@dataclass(frozen=True)
class OwnerTestSettings(Section):
    """The owner's test (``genlineage verify`` and stage 08): the statistic it compares with the
    innocent shadows' and the candidates stage 08 chooses it among, on shadow models only, by the
    rule written in ``genlineage.verify.statistics.SELECTION_RULE`` at ``selection_fpr``."""
    statistic: str = "mean_rd"               # verify's default; stage 08 uses the one its rule chooses
    candidates: tuple[str, ...] = OWNER_STATISTICS
    selection_fpr: float = 0.05              # the target rate the leave-one-shadow-out TPR is counted at
    target_fpr: float = 0.05                 # stage 08's verdicts (its table adds 0.01 and 0.1)
    k_smallest: int = 5                      # lowest_k_rd: the closest keys averaged
    variance_prior: float = 4.0              # per_key_z: weight, in shadows, of the pooled key variance
    n_controls: int = 30                     # control pairs asked of every model when a statistic needs them

    @classmethod
    def parse(cls, raw: Mapping | None, where: str) -> "OwnerTestSettings":
        out = super().parse(raw, where)
        for name in (out.statistic, *out.candidates):
            if name not in OWNER_STATISTICS:
                raise InputError(f"profile key {where}: {name!r} is not a test statistic; choose among "
                                 f"{', '.join(OWNER_STATISTICS)}.")
        for key in ("selection_fpr", "target_fpr"):
            check_level(getattr(out, key), f"profile key {where}.{key}:")
        if out.k_smallest < 1 or out.n_controls < 1 or out.variance_prior < 0:
            raise InputError(f"profile key {where}: k_smallest and n_controls must be at least 1, variance_prior >= 0.")
        return out


@dataclass(frozen=True)
class RunSettings(Section):
    """The top level: what runs where, and where committed outputs go."""
    name: str
    # What a run of this profile is, and is not, in a sentence: the top of its reproduction report
    # and run_all's first line say it (the smoke profile's models are noise; tyres is a short look).
    about: str | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    # Independent jobs side by side: a number, or "auto": as many as the machine has usable cores
    # (its CPU affinity), within memory (``memory_per_job_gb`` each). Results are the same at any
    # count (every job is seeded and single-threaded; tests/test_runner.py compares 1, 2 and 3).
    parallel_jobs: Any = 1
    memory_per_job_gb: float = 2.0
    threads_per_job: int = 1
    figures_dir: str | None = None   # committed figures, relative to the repository (None: beside the data)
    tables_dir: str | None = None    # committed tables, likewise
    data_root: str | None = None     # overridden by $GENLINEAGE_DATA
    # Where independent jobs run (genlineage.jobs): "local" (a process pool of parallel_jobs) or "ray"
    # (ray_address: a cluster's "host:port", or None for a local instance), each job on gpus_per_job
    # GPUs (None: 1 on a cuda device, else 0) and retried job_retries times before the run stops
    # naming it. $GENLINEAGE_EXECUTOR and $GENLINEAGE_RAY_ADDRESS (run_all.sh --executor/--address) win.
    executor: str = "local"
    ray_address: str | None = None
    job_retries: int = 2
    gpus_per_job: float | None = None
    CHOICES: ClassVar[dict[str, tuple]] = {"dtype": ("float32", "float16", "bfloat16"), "executor": ("local", "ray")}


    @classmethod
    def parse(cls, raw: Mapping | None, where: str) -> "RunSettings":
        out = super().parse(raw, where)
        jobs = out.parallel_jobs
        if jobs == "auto":
            return dataclasses.replace(out, parallel_jobs=auto_jobs(out.memory_per_job_gb, out.threads_per_job))
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise InputError(f"profile key parallel_jobs is {jobs!r}; give a number of jobs (1 or more) or \"auto\" "
                             "(as many as this machine's usable cores, within memory).")
        return out


def auto_jobs(memory_per_job_gb: float, threads_per_job: int = 1) -> int:
    """How many jobs of ``threads_per_job`` threads this machine runs side by side: its usable
    cores (the process's CPU affinity, which a container or ``taskset`` may narrow), no more than
    its memory holds at ``memory_per_job_gb`` each, and at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory_gb = float("inf")
    by_memory = int(memory_gb // memory_per_job_gb) if memory_per_job_gb > 0 else cores
    return max(1, min(cores // max(threads_per_job, 1), by_memory))


SECTIONS: dict[str, type[Section]] = {
    "data": DataSettings, "models": ModelsSettings, "training": TrainingSettings, "generation": GenerationConfig,
    "memorisation": MemorisationSettings, "suspicious": SuspiciousSettings, "attribution": AttributionSettings,
    "statistical": StatisticalSettings, "verify": OwnerTestSettings,
}


class Profile(dict):
    """A profile: the YAML mapping (``profile["attribution"]``, what the notebooks print) and its
    typed sections (``profile.attribution.distance``), parsed on first use (and again if the mapping
    was edited since); jobs read only the typed sections."""

    def _section(self, name: str) -> Any:
        raw = {k: v for k, v in self.items() if k not in SECTIONS} if name == "run" else self.get(name)
        seen = json.dumps(raw, sort_keys=True, default=str)  # the mapping as parsed: a later edit re-parses
        cache = self.__dict__.setdefault("_typed", {})
        if name not in cache or cache[name][0] != seen:
            cache[name] = (seen, RunSettings.parse(raw, "") if name == "run" else SECTIONS[name].parse(raw, name))
        return cache[name][1]

    def validate(self) -> "Profile":
        """Parse every section now, so a misspelled key stops the run before any stage starts."""
        for name in ("run", *SECTIONS):
            self._section(name)
        # The fine-tune sections are merged late (training.finetune, then suspicious.train, then
        # suspicious.lora): build both merged configs now, so a misspelt key there stops the run here.
        for how in ("full", "lora"):
            self.suspicious.train_config(self.training.finetune, how)
        check_policy(self.models.keep_finetuned, self.run.dtype)  # fp16 only where it draws the same images
        return self

    run = property(lambda self: self._section("run"), doc="Top-level settings (``RunSettings``).")
    data = property(lambda self: self._section("data"), doc="``DataSettings``.")
    models = property(lambda self: self._section("models"), doc="``ModelsSettings``.")
    training = property(lambda self: self._section("training"), doc="``TrainingSettings``.")
    generation = property(lambda self: self._section("generation"), doc="``GenerationConfig``.")
    memorisation = property(lambda self: self._section("memorisation"), doc="``MemorisationSettings``.")
    suspicious = property(lambda self: self._section("suspicious"), doc="``SuspiciousSettings``.")
    attribution = property(lambda self: self._section("attribution"), doc="``AttributionSettings``.")
    statistical = property(lambda self: self._section("statistical"), doc="``StatisticalSettings``.")
    verify = property(lambda self: self._section("verify"), doc="``OwnerTestSettings``.")

    @property
    def name(self) -> str:
        return str(self["name"])

    def get_path(self, dotted: str, default: Any = ...) -> Any:
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if default is ...:
                    raise KeyError(f"profile {self.get('name')!r} has no key {dotted!r}")
                return default
            node = node[part]
        return node

    @property
    def torch_dtype(self):
        """The dtype models are loaded in for inference (training keeps fp32 master weights)."""
        import torch

        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[self.run.dtype]

    @property
    def data_root(self) -> Path:
        """Where this profile's generated data, models and caches live."""
        root = os.environ.get("GENLINEAGE_DATA") or self.run.data_root or REPO_ROOT / "data"
        return Path(root) / self.name


def as_profile(profile: Mapping) -> Profile:
    """``profile`` as a :class:`Profile` (a job may receive the plain mapping)."""
    return profile if isinstance(profile, Profile) else Profile(profile)


def _merge(base: dict, override: Mapping) -> dict:
    """``override`` over ``base``, mapping by mapping. A null over a mapping removes it: how a
    profile that extends another drops one of its bases or domains (``models: {bases: {v1: null}}``);
    a null over anything else is a value (``figures_dir: null``)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None and isinstance(out.get(key), dict):
            del out[key]
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise InputError(f"profile file {path} is not a YAML mapping; start it with 'name: <profile>'.")
    parent = data.pop("extends", None)
    data.setdefault("name", path.stem)  # a profile that extends another is not that profile: own name, own data folder
    if parent:
        data = _merge(_read_yaml(_resolve(parent)), data)
    return data


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise InputError(f"profile file {path} does not exist; pass one of {available_profiles()} or a YAML path.")
        return path
    candidate = PROFILE_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise InputError(f"unknown profile {str(name_or_path)!r}; choose one of {available_profiles()} or pass a YAML path.")
    return candidate


def load_profile(name_or_path: str | Path = "tiny", overrides: Mapping | None = None) -> Profile:
    """Load a profile by name (``smoke``, ``tiny``, ``paper``) or YAML path, with overrides, and
    with the suspects' world stage 03 chose on shadows when it has (:func:`with_chosen_world`)."""
    data = _read_yaml(_resolve(name_or_path))
    if overrides:
        data = _merge(data, overrides)
    data.setdefault("name", Path(str(name_or_path)).stem)
    return with_chosen_world(Profile(data).validate())


WORLD_FILE = "world.json"  # stage 03's choice of the suspects' set size and steps, under the data root


def chosen_world(profile: Profile) -> dict | None:
    """The (n_samples, steps) stage 03 chose on shadow models for this profile's grid, or None
    before it has (or when the profile has no grid, or the record is of another grid)."""
    grid = profile.suspicious.world
    path = profile.data_root / WORLD_FILE
    if not grid.enabled or not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("grid") == grid.as_dict() else None


def with_chosen_world(profile: Profile) -> Profile:
    """``profile`` with ``suspicious.n_samples`` and ``suspicious.train.steps`` set to stage 03's
    choice: the choice is an output of stage 03 that every later stage (and ``genlineage shadows``
    on the same data folder) reads, as a DVC stage reads a params file an earlier stage wrote. The
    YAML's own values serve until the choice exists (and a profile with no grid keeps them)."""
    record = chosen_world(profile)
    if record is None:
        return profile
    data = copy.deepcopy(dict(profile))
    suspicious = data.setdefault("suspicious", {})
    suspicious["n_samples"] = int(record["n_samples"])
    suspicious["train"] = {**suspicious.get("train", {}), "steps": int(record["steps"])}
    return Profile(data).validate()
