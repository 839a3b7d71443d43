"""Fine-tune a pipeline folder on an image folder, cached and resumable.

One function serves every fine-tune of the paper (the source models, every suspicious and shadow
model): it reads a base pipeline folder and an image folder with ``metadata.jsonl``, trains with
:func:`genlineage.training.sd.train_sd`, and writes a new pipeline folder whose ``genlineage.json``
records what it was made from. The model is one declared job, :class:`FineTuneJob`, keyed on the
content of the base and of the data and on the training settings: a finished model whose stamp
matches is not trained again; an interrupted one resumes from its checkpoint.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..cache import STAMP, Result
from ..cached_job import CachedJob, content, output
from ..data.imagefolder import read_imagefolder
from ..errors import InputError
from ..io import atomic_dir, read_json, stable_hash, write_json
from ..models import storage
from ..models.lora import PROVENANCE, add_lora, write_lora_weights
from ..models.pipeline_io import SDComponents, Trust, data_identity, fingerprint, load_pipeline, save_pipeline
from .encode import encode_dataset
from .sd import TrainConfig, clear_work_dir, train_sd


@dataclass(frozen=True)
class FineTuneJob(CachedJob):
    """A fine-tuned model, declared by what it is made from: the base pipeline (by its weights),
    the image folder it is trained on (by content; a training set released with its model by the
    id it had, ``pipeline_io.data_identity``), the training settings (``TrainConfig.key``:
    what changes the weights) and the image size. Where it is written and how it is run (device,
    progress, the work folder) are not inputs."""

    folder = True

    out: Path = output()
    base: Path = content(fingerprint)
    data: Path = content(data_identity)
    train: TrainConfig
    image_size: int


def finetune_result(base_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path, cfg: TrainConfig,
                    image_size: int) -> Result:
    """The fine-tuned model as a cached result (:class:`FineTuneJob`'s)."""
    return FineTuneJob(Path(out_dir), Path(base_dir), Path(dataset_dir), cfg, int(image_size)).result()


def train_and_save(components: SDComponents, images, captions: list[str], cfg: TrainConfig, result: Result,
                   work_root: Path, provenance: Mapping, progress: bool, desc: str) -> Path:
    """Encode, train (resumably, in a work folder named after the inputs), save the folder with its
    stamp in one atomic step, drop the checkpoint. The parts training left frozen are hard links to
    the files of the folder ``components`` came from (none for a model built in memory)."""
    work = Path(work_root) / stable_hash(result.stamp_record())
    started = time.perf_counter()
    data = encode_dataset(components, images, captions, batch=cfg.encode_batch, dtype=cfg.frozen_dtype)
    if cfg.finetune == "lora":
        add_lora(components.unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.seed)
    train_sd(components, data, cfg, work, progress=progress, desc=desc)
    seconds = time.perf_counter() - started  # of this call: a resumed run reports its last part
    record = {**provenance, "train_config": cfg.__dict__, "train_seconds": round(seconds, 1), "n_train": len(captions)}
    if cfg.finetune == "lora":
        save_lora_model(components, result.path, record, {STAMP: result.stamp_record()}, cfg)
    else:
        save_pipeline(components, result.path, record, extra_files={STAMP: result.stamp_record()},
                      link_from=components.path, linked=frozen_components(cfg))
    clear_work_dir(work)
    return result.path


def save_lora_model(components: SDComponents, out_dir: Path, provenance: Mapping, extra_files: Mapping,
                    cfg: TrainConfig) -> Path:
    """A LoRA fine-tune as genlineage keeps it: diffusers' ``pytorch_lora_weights.safetensors``
    beside ``genlineage.json``, whose ``lora_base`` names the base folder relative to this one (a
    data folder moved as a whole still resolves), written in one atomic step."""
    if components.path is None:
        raise ValueError("a LoRA model needs a base loaded from a folder (the folder it is saved against)")
    out_dir = Path(out_dir)
    base = os.path.relpath(os.path.realpath(components.path), os.path.realpath(out_dir.parent))
    with atomic_dir(out_dir) as tmp:
        write_lora_weights(components.unet, tmp, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        meta = {**components.provenance, **provenance, "lora_base": os.path.join("..", base)}
        for name, obj in {PROVENANCE: meta, **extra_files}.items():
            write_json(tmp / name, obj)
    return out_dir


def frozen_components(cfg: TrainConfig) -> tuple[str, ...]:
    """The pipeline parts a fine-tune with ``cfg`` leaves exactly as the base has them."""
    return ("vae", "tokenizer") + (() if cfg.train_text_encoder else ("text_encoder",))


def finetune_folder(base_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path, train_cfg: Mapping | TrainConfig,
                    image_size: int, work_root: str | Path, provenance: Mapping | None = None,
                    device: str = "cpu", progress: bool = True, desc: str = "finetune",
                    trust: Trust | None = None) -> Path:
    """Fine-tune the pipeline at ``base_dir`` on the image folder ``dataset_dir`` into ``out_dir``
    (``trust``: how far the gate trusts the base folder, :func:`~genlineage.models.pipeline_io.model_trust`)."""
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_mapping(train_cfg)
    result = finetune_result(base_dir, dataset_dir, out_dir, cfg, image_size)
    if result.fresh():
        return result.path
    folder = read_imagefolder(dataset_dir, size=image_size)
    components = load_pipeline(base_dir, device=device, dtype=torch.float32, trust=trust)
    prov = {"base_dir": str(base_dir), "dataset_dir": str(dataset_dir), **(provenance or {})}
    return train_and_save(components, folder.load_images(), folder.captions, cfg, result, Path(work_root), prov,
                          progress, desc)


def rebuild_from_recipe(folder: str | Path, work_root: str | Path, device: str = "cpu", trust: Any = None) -> Path:
    """Rebuild a pruned fine-tune from the recipe it kept (base folder, data folder, training
    settings, image size), refused unless that recipe still describes its stamp: the base and the
    data have the same content and the settings the same key (else the stage must re-run)."""
    folder = Path(folder)
    recipe, stamp = read_json(folder / PROVENANCE), read_json(folder / STAMP)
    cfg = TrainConfig.from_mapping(recipe["train_config"], f"{folder / PROVENANCE} train_config")
    image_size = int(stamp["inputs"]["image_size"])
    changed = finetune_result(recipe["base_dir"], recipe["dataset_dir"], folder, cfg, image_size).changed_inputs()
    if storage.released_data_identity(recipe["dataset_dir"]) is not None:
        raise InputError(f"{folder}'s training set {recipe['dataset_dir']} was released with it (models.keep_finetuned: "
                         "none); rebuild the set first with the job that made it (TrainingSetJob.build, which stage 03's "
                         "build_suspicious_model calls), then rebuild the model.")
    if changed:
        raise InputError(f"{folder}'s recipe no longer matches its stamp ({', '.join(changed)} changed); re-run the "
                         "stage that made it.")
    provenance = {k: v for k, v in recipe.items() if k not in ("train_config", "train_seconds", "n_train")}
    return storage.ensure_weights(folder, lambda: finetune_folder(recipe["base_dir"], recipe["dataset_dir"], folder, cfg,
                                                          image_size, work_root, provenance, device=device,
                                                          progress=False, trust=trust))
