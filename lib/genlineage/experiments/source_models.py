"""Stage 02: the six source models of the paper.

``v1`` and ``v2`` as they are, and each fine-tuned on the CelebA-like and the CC3M-like source
set. In the tiny profile the bases are built and pre-trained here (a shared VAE first, then each
base's text encoder and UNet on its own subset of the pre-training corpus); in the paper profile
``models.bases.<name>.path`` points at a local SD-v1.5 / SD-v2.1 folder and nothing is
pre-trained.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from diffusers import AutoencoderKL

from ..config import Profile
from ..data.build import build_datasets, load_pretrain_folder
from ..data.imagefolder import read_imagefolder
from ..io import atomic_dir, derive_seed, read_json, stable_hash
from ..jobs import run_jobs, torch_threads
from ..models.pipeline_io import quiet_hub
from ..models.tiny import build_base, build_vae
from ..training.finetune import dataset_fingerprint, finetune_folder, recorded_key, train_and_save
from ..training.sd import TrainConfig
from ..training.vae import VAETrainConfig, train_vae
from . import layout

DOMAINS_ROLE = "source"


def _profile(profile: Profile | dict) -> Profile:
    return profile if isinstance(profile, Profile) else Profile(profile)


def vae_dir(profile: Profile) -> Path:
    return layout.models_dir(profile) / "vae"


def train_shared_vae(profile: Profile, progress: bool = True) -> Path:
    """The tiny family's one VAE, trained on the pre-training corpus (cached)."""
    cfg = profile["models"]["vae"]
    size = int(profile["data"]["image_size"])
    pretrain = layout.datasets_dir(profile) / "pretrain"
    key = stable_hash({"vae": cfg, "size": size, "data": dataset_fingerprint(pretrain)})
    out = vae_dir(profile)
    stamp = out / "genlineage.json"
    if stamp.is_file() and read_json(stamp).get("stage_key") == key:
        return out
    images = read_imagefolder(pretrain, size=size).load_images()
    train_cfg = VAETrainConfig.from_mapping(cfg["train"])
    vae = build_vae(cfg, size, train_cfg.seed)
    stats = train_vae(vae, images, train_cfg, progress=progress)
    with atomic_dir(out) as tmp, quiet_hub():
        vae.save_pretrained(tmp, safe_serialization=True)
        (tmp / "genlineage.json").write_text(json.dumps({"stage_key": key, **stats}, indent=2))
    return out


def pretrain_base(profile: dict, base: str, progress: bool = True) -> str:
    """Build and pre-train one tiny base into ``models/base_<name>`` (cached, resumable)."""
    profile = _profile(profile)
    cfg = profile["models"]["bases"][base]
    size = int(profile["data"]["image_size"])
    vae_path = vae_dir(profile)
    vae = AutoencoderKL.from_pretrained(vae_path, use_safetensors=True, local_files_only=True)
    vae.requires_grad_(False).eval()
    corpus = load_pretrain_folder(profile)
    folder = load_pretrain_folder(profile, base)  # each base sees its own share, as v1.5 and v2.1 did
    train_cfg = TrainConfig.from_mapping(cfg["pretrain"], seed=int(cfg["seed"]))
    key = stable_hash({"base": cfg, "vae": read_json(vae_path / "genlineage.json")["stage_key"],
                       "ids": folder.ids, "train": train_cfg.key(),
                       "noise": profile["training"]["noise_scheduler"]})
    out = layout.base_dir(profile, base)
    if recorded_key(out) == key:
        return str(out)
    components = build_base(cfg, vae, corpus.captions, size, profile["training"]["noise_scheduler"])
    train_and_save(components, folder.load_images(), folder.captions, train_cfg, out, key, layout.work_dir(profile),
                   {"role": "base", "base": base, "profile": profile.name}, progress, f"pretrain {base}")
    return str(out)


def finetune_source(profile: dict, base: str, domain: str, progress: bool = True) -> str:
    """Fine-tune base ``base`` on the ``domain`` source set into ``models/<base>_<domain>``."""
    profile = _profile(profile)
    train = profile["training"]["finetune"]
    seed = derive_seed(profile["seed"], "source", base, domain)
    out = finetune_folder(
        layout.base_dir(profile, base), layout.datasets_dir(profile) / f"{domain}_{DOMAINS_ROLE}",
        layout.source_dir(profile, base, domain), TrainConfig.from_mapping(train, seed=seed),
        int(profile["data"]["image_size"]), layout.work_dir(profile),
        {"role": "source", "base": base, "domain": domain, "profile": profile.name},
        device=profile.get("device", "cpu"), progress=progress, desc=f"{base}-{domain}")
    return str(out)


def source_models(profile: Profile) -> pd.DataFrame:
    """The six source models: name, base, domain (None for a base as it is), folder."""
    rows = []
    for base in sorted(profile["models"]["bases"]):
        rows.append({"source": base, "base": base, "domain": None, "path": str(layout.source_dir(profile, base, None))})
        for domain in sorted(profile["data"]["domains"]):
            rows.append({"source": f"{base}-{domain}", "base": base, "domain": domain,
                         "path": str(layout.source_dir(profile, base, domain))})
    return pd.DataFrame(rows)


def build_source_models(profile: Profile, progress: bool = True) -> pd.DataFrame:
    """Datasets, VAE, bases and fine-tuned sources, each stage cached; returns the table."""
    build_datasets(profile, progress=progress)
    parallel = int(profile.get("parallel_jobs", 1))
    threads = int(profile.get("threads_per_job", 1))
    bases = profile["models"]["bases"]
    local = {b: c["path"] for b, c in bases.items() if c.get("path")}
    if len(local) < len(bases):
        with torch_threads(int(profile["models"]["vae"].get("threads", 2))):
            train_shared_vae(profile, progress)
        todo = [{"profile": dict(profile), "base": b, "progress": progress} for b in bases if b not in local]
        run_jobs("genlineage.experiments.source_models.pretrain_base", todo, parallel, threads)
    for base, path in local.items():
        _link_local_base(profile, base, Path(path))
    jobs = [{"profile": dict(profile), "base": b, "domain": d, "progress": progress}
            for b in sorted(bases) for d in sorted(profile["data"]["domains"])]
    run_jobs("genlineage.experiments.source_models.finetune_source", jobs, parallel, threads)
    return source_models(profile)


def _link_local_base(profile: Profile, base: str, path: Path) -> None:
    """Paper profile: a base is a local checkpoint folder; point ``models/base_<name>`` at it."""
    from ..models.pipeline_io import check_pipeline_folder

    check_pipeline_folder(path)
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
        rows.append({"model": "vae", "samples": meta.get("n_train"), "steps": profile["models"]["vae"]["train"]["steps"],
                     "seconds": meta.get("train_seconds")})
    for _, src in source_models(profile).iterrows():
        meta_file = Path(src.path) / "genlineage.json"
        meta = read_json(meta_file) if meta_file.is_file() else {}
        rows.append({"model": src.source if src.domain else f"base {src.base}", "samples": meta.get("n_train"),
                     "steps": (meta.get("train_config") or {}).get("steps"), "seconds": meta.get("train_seconds")})
    return pd.DataFrame(rows)
