"""Fine-tune a pipeline folder on an image folder, cached and resumable.

One function serves every fine-tune of the paper (the source models and, later, every
suspicious and shadow model): it reads a base pipeline folder and an image folder with
``metadata.jsonl``, trains with :func:`genlineage.training.sd.train_sd`, and writes a new
pipeline folder whose ``genlineage.json`` records what it was made from. A finished model whose
recorded key matches is not trained again; an interrupted one resumes from its checkpoint.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import torch

from ..data.imagefolder import read_imagefolder
from ..io import file_sha256, stable_hash
from ..models.pipeline_io import PROVENANCE, SDComponents, fingerprint, load_pipeline, save_pipeline
from .encode import encode_dataset
from .sd import TrainConfig, clear_work_dir, train_sd


def dataset_fingerprint(folder: str | Path) -> str:
    """Content hash of an image folder (its metadata and every image file)."""
    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "metadata.jsonl" and not p.name.startswith(("_", ".")))
    return stable_hash([file_sha256(meta)] + [(p.name, file_sha256(p)) for p in files])


def recorded_key(model_dir: str | Path) -> str | None:
    """The stage key a finished model folder was made with, or None if absent/unfinished."""
    meta = Path(model_dir) / PROVENANCE
    if not meta.is_file():
        return None
    import json

    return json.loads(meta.read_text()).get("stage_key")


def train_and_save(components: SDComponents, images, captions: list[str], cfg: TrainConfig, out_dir: Path,
                   key: str, work_root: Path, provenance: Mapping, progress: bool, desc: str) -> Path:
    """Encode, train (resumably, in ``work_root/key``), save the folder, drop the checkpoint."""
    work = Path(work_root) / key
    started = time.perf_counter()
    data = encode_dataset(components, images, captions)
    train_sd(components, data, cfg, work, progress=progress, desc=desc)
    seconds = time.perf_counter() - started  # of this call: a resumed run reports its last part
    save_pipeline(components, out_dir, {**provenance, "stage_key": key, "train_config": cfg.__dict__,
                                        "train_seconds": round(seconds, 1), "n_train": len(captions)})
    clear_work_dir(work)
    return out_dir


def finetune_folder(base_dir: str | Path, dataset_dir: str | Path, out_dir: str | Path, train_cfg: Mapping | TrainConfig,
                    image_size: int, work_root: str | Path, provenance: Mapping | None = None,
                    device: str = "cpu", progress: bool = True, desc: str = "finetune") -> Path:
    """Fine-tune the pipeline at ``base_dir`` on the image folder ``dataset_dir`` into ``out_dir``."""
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_mapping(train_cfg)
    out_dir = Path(out_dir)
    key = stable_hash({"base": fingerprint(base_dir), "data": dataset_fingerprint(dataset_dir),
                       "train": cfg.key(), "size": int(image_size)})
    if recorded_key(out_dir) == key:
        return out_dir
    folder = read_imagefolder(dataset_dir, size=image_size)
    components = load_pipeline(base_dir, device=device, dtype=torch.float32)
    prov = {"base_dir": str(base_dir), "dataset_dir": str(dataset_dir), **(provenance or {})}
    return train_and_save(components, folder.load_images(), folder.captions, cfg, out_dir, key,
                          Path(work_root), prov, progress, desc)
