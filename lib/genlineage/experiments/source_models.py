"""Stage 02: the six source models of the paper.

``v1`` and ``v2`` as they are, and each fine-tuned on the CelebA-like and the CC3M-like source
set. In the tiny profile the bases are built and pre-trained here (a shared VAE first, then each
base's text encoder and UNet on its own subset of the pre-training corpus); in the paper profile
``models.bases.<name>.path`` points at a local SD-v1.5 / SD-v2.1 folder and nothing is
pre-trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from diffusers import AutoencoderKL

from ..cached_job import CachedJob, content, hashed, output
from ..config import BaseSettings, NoiseSchedulerSettings, Profile, TrainConfig, VAESettings, as_profile
from ..errors import InputError
from ..data.build import build_datasets, load_pretrain_folder
from ..data.imagefolder import read_imagefolder
from ..cache import Result
from ..io import derive_seed, read_json, write_json
from ..jobs import executor_for, run_jobs, torch_threads
from ..models.pipeline_io import OWNER, PROVENANCE, check_pipeline_folder, model_trust, quiet_hub
from ..models import storage
from ..models.tiny import build_base, build_vae
from ..training.finetune import finetune_folder, finetune_result, train_and_save
from ..training.vae import train_vae
from .. import layout
from ..study.sources import source_models

DOMAINS_ROLE = "source"


def vae_dir(profile: Profile) -> Path:
    return layout.models_dir(profile) / "vae"


@dataclass(frozen=True)
class VaeJob(CachedJob):
    """The tiny family's one VAE: made from its settings, the image size and the pre-training corpus."""

    folder = True

    out: Path = output()
    vae: VAESettings
    image_size: int
    data: Path = content()


def vae_result(profile: Profile) -> Result:
    return VaeJob(vae_dir(profile), profile.models.vae, profile.data.image_size,
                  layout.datasets_dir(profile) / "pretrain").result()


def train_shared_vae(profile: Profile, progress: bool = True) -> Path:
    """The tiny family's one VAE, trained on the pre-training corpus (cached)."""
    cfg = profile.models.vae
    size = profile.data.image_size
    result = vae_result(profile)
    if result.fresh():
        return result.path
    images = read_imagefolder(layout.datasets_dir(profile) / "pretrain", size=size).load_images()
    train_cfg = cfg.train
    vae = build_vae(cfg, size, train_cfg.seed)
    stats = train_vae(vae, images, train_cfg, progress=progress)
    with result.building() as tmp, quiet_hub():
        vae.save_pretrained(tmp, safe_serialization=True)
        write_json(tmp / PROVENANCE, stats)
    return result.path


def _pretrain_config(profile: Profile, base: str) -> TrainConfig:
    cfg = profile.models.bases[base]
    if cfg.pretrain is None:
        raise InputError(f"models.bases.{base} has neither a path nor pretrain settings; give one of them.")
    return cfg.pretrain.replace(seed=cfg.seed)


@dataclass(frozen=True)
class BaseJob(CachedJob):
    """One tiny base: made from its config, the VAE, the corpus (its tokenizer is learnt on all of
    it), the rows it is pre-trained on, its training settings and the noise schedule."""

    folder = True

    out: Path = output()
    base: BaseSettings
    vae: Path = content()
    data: Path = content()
    rows: tuple[str, ...] | None = hashed()
    train: TrainConfig | None = None
    noise: NoiseSchedulerSettings | None = None


def base_result(profile: Profile, base: str) -> Result:
    pretrain = layout.datasets_dir(profile) / "pretrain"
    rows = tuple(load_pretrain_folder(profile, base).ids) if pretrain.is_dir() else None
    return BaseJob(layout.base_dir(profile, base), profile.models.bases[base], vae_dir(profile), pretrain, rows,
                   _pretrain_config(profile, base), profile.training.noise_scheduler).result()


def pretrain_base(profile: dict, base: str, progress: bool = True) -> str:
    """Build and pre-train one tiny base into ``models/base_<name>`` (cached, resumable)."""
    profile = as_profile(profile)
    result = base_result(profile, base)
    if result.fresh():
        return str(result.path)
    cfg = profile.models.bases[base]
    size = profile.data.image_size
    vae = AutoencoderKL.from_pretrained(vae_dir(profile), use_safetensors=True, local_files_only=True)
    vae.requires_grad_(False).eval()
    corpus = load_pretrain_folder(profile)
    folder = load_pretrain_folder(profile, base)  # each base sees its own share, as v1.5 and v2.1 did
    components = build_base(cfg, vae, corpus.captions, size, profile.training.noise_scheduler)
    train_and_save(components, folder.load_images(), folder.captions, _pretrain_config(profile, base), result,
                   layout.work_dir(profile), {"role": "base", "base": base, "profile": profile.name}, progress,
                   f"pretrain {base}")
    return str(result.path)


def _source_config(profile: Profile, base: str, domain: str) -> TrainConfig:
    return TrainConfig.from_mapping(profile.training.finetune, "training.finetune",
                                    seed=derive_seed(profile.run.seed, "source", base, domain))


def source_result(profile: Profile, base: str, domain: str) -> Result:
    """A fine-tuned source: made from its base and its source set, by content, and its settings."""
    return finetune_result(layout.base_dir(profile, base), layout.datasets_dir(profile) / f"{domain}_{DOMAINS_ROLE}",
                           layout.source_dir(profile, base, domain), _source_config(profile, base, domain),
                           profile.data.image_size)


def finetune_source(profile: dict, base: str, domain: str, progress: bool = True) -> str:
    """Fine-tune base ``base`` on the ``domain`` source set into ``models/<base>_<domain>``; kept
    whole, or its own weights in fp16 where the profile releases its models and infers in float16
    (``storage.source_policy``: later stages ask a source new images, so it is never pruned)."""
    profile = as_profile(profile)
    out = finetune_folder(
        layout.base_dir(profile, base), layout.datasets_dir(profile) / f"{domain}_{DOMAINS_ROLE}",
        layout.source_dir(profile, base, domain), _source_config(profile, base, domain),
        profile.data.image_size, layout.work_dir(profile),
        {"role": "source", "base": base, "domain": domain, "profile": profile.name},
        device=profile.run.device, progress=progress, desc=f"{base}-{domain}",
        trust=model_trust(profile, layout.base_dir(profile, base)))
    storage.release(out, storage.source_policy(storage.profile_policy(profile), profile.run.dtype), profile.run.dtype)
    return str(out)


def stage_results(profile: Profile) -> list[Result]:
    """Every cached result of stage 02 as a run would judge it now (what the invalidation tests
    compare): the VAE and the bases the profile builds, and every fine-tuned source."""
    built = [b for b, c in profile.models.bases.items() if not c.path]
    results = ([vae_result(profile)] + [base_result(profile, b) for b in sorted(built)]) if built else []
    return results + [source_result(profile, b, d) for b in sorted(profile.models.bases)
                      for d in sorted(profile.data.domains)]


def build_source_models(profile: Profile, progress: bool = True) -> pd.DataFrame:
    """Datasets, VAE, bases and fine-tuned sources, each stage cached; returns the table."""
    build_datasets(profile, progress=progress)
    parallel, threads = profile.run.parallel_jobs, profile.run.threads_per_job
    bases = profile.models.bases
    local = {b: c.path for b, c in bases.items() if c.path}
    if len(local) < len(bases):
        if profile.models.vae is None:
            raise InputError("the profile builds tiny bases but has no models.vae section; add it (see profiles/tiny.yaml).")
        with torch_threads(profile.models.vae.threads):
            train_shared_vae(profile, progress)
        todo = [{"profile": profile, "base": b, "progress": progress} for b in bases if b not in local]
        run_jobs(pretrain_base, todo, parallel, threads,
                 executor=executor_for(profile.run))
    for base, path in local.items():
        _link_local_base(profile, base, Path(path))
    jobs = [{"profile": profile, "base": b, "domain": d, "progress": progress}
            for b in sorted(bases) for d in sorted(profile.data.domains)]
    run_jobs(finetune_source, jobs, parallel, threads,
             executor=executor_for(profile.run))
    return source_models(profile)


def _link_local_base(profile: Profile, base: str, path: Path) -> None:
    """Paper profile: a base is a local checkpoint folder; point ``models/base_<name>`` at it."""
    check_pipeline_folder(path, OWNER)  # the owner's own folder: a cache snapshot will do
    target = layout.base_dir(profile, base)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        if target.resolve() == path.resolve():
            return
        raise FileExistsError(f"{target} exists and is not a link to {path}; remove it to use the local base.")
    target.symlink_to(path.resolve(), target_is_directory=True)


def stage_costs(profile: Profile) -> pd.DataFrame:
    """Training wall time of every model of stage 02, read from what each model recorded."""
    rows = []
    vae_meta = vae_dir(profile) / "genlineage.json"
    if vae_meta.is_file():
        meta = read_json(vae_meta)
        rows.append({"model": "vae", "samples": meta.get("n_train"), "steps": profile.models.vae.train.steps,
                     "seconds": meta.get("train_seconds")})
    for _, src in source_models(profile).iterrows():
        meta_file = Path(src.path) / "genlineage.json"
        meta = read_json(meta_file) if meta_file.is_file() else {}
        rows.append({"model": src.source if src.domain else f"base {src.base}", "samples": meta.get("n_train"),
                     "steps": (meta.get("train_config") or {}).get("steps"), "seconds": meta.get("train_seconds")})
    return pd.DataFrame(rows)
