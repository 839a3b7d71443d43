"""Model folders as they come: fine-tunes that link their frozen parts, fp16-only downloads, and
Hugging Face cache snapshots (accepted for the owner's own folders, refused for a suspect)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genlineage.errors import InputError
from genlineage.generation import GenerationConfig, generate
from genlineage.models.gate import STRICT, check_model_folder
from genlineage.models.pipeline_io import OWNER, check_pipeline_folder, load_pipeline, weights_variant
from genlineage.training.finetune import finetune_folder
from genlineage.training.sd import TrainConfig
from genlineage.verify.suspect import check_sd_pipeline

from conftest import CAPTIONS

CFG = GenerationConfig(steps=3, guidance_scale=3.0, batch=2)


def _dataset(folder: Path) -> Path:
    from genlineage.data.imagefolder import write_imagefolder

    rng = np.random.default_rng(0)
    items = ((rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), c, {}) for c in CAPTIONS[:4])
    write_imagefolder(folder, items)
    return folder


@pytest.fixture()
def base(saved_pipeline, tmp_path) -> Path:
    """A private copy of the base: linking gives its files a second name."""
    copy = tmp_path / "owner" / "base"
    shutil.copytree(saved_pipeline, copy)
    return copy


def _finetune(base: Path, out: Path, tmp_path: Path) -> Path:
    cfg = TrainConfig(steps=2, batch=2, lr=1e-3)
    return finetune_folder(base, _dataset(tmp_path / "set"), out, cfg, 32, tmp_path / "work", progress=False, trust=OWNER)


def _inode(path: Path) -> int:
    return os.stat(path).st_ino


def test_a_finetune_below_the_data_root_links_its_frozen_parts_and_writes_its_unet(base, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    out = _finetune(base, tmp_path / "data" / "smoke" / "models" / "ft", tmp_path)
    for name in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "tokenizer/tokenizer.json"):
        assert _inode(out / name) == _inode(base / name), f"{name} is a link to the base's file"
    assert _inode(out / "unet/diffusion_pytorch_model.safetensors") != _inode(base / "unet/diffusion_pytorch_model.safetensors")
    model, original = load_pipeline(out), load_pipeline(base, trust=OWNER)  # the base now has two names: the owner's
    assert all(torch.equal(a, b) for a, b in zip(model.vae.state_dict().values(), original.vae.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(model.unet.state_dict().values(),
                                                     original.unet.state_dict().values()))
    assert check_sd_pipeline(out, "suspect") == out, "a suspect below the data root may be one of our fine-tunes"
    with pytest.raises(InputError, match="hard link"):
        check_model_folder(out, STRICT)
    with pytest.raises(InputError, match="hard link"):
        check_pipeline_folder(base), "the base, as a suspect, is refused: its files have two names"
    assert check_sd_pipeline(base, "base") == base and check_sd_pipeline(base, "innocent shadow s0") == base


def test_a_finetune_elsewhere_copies_every_part(base, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    out = _finetune(base, tmp_path / "elsewhere" / "ft", tmp_path)
    assert all(os.stat(f).st_nlink == 1 for f in out.rglob("*") if f.is_file())
    assert check_model_folder(out, STRICT) == out


def test_the_linked_finetune_draws_what_a_copied_one_draws(base, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    linked = _finetune(base, tmp_path / "data" / "models" / "ft", tmp_path)
    copied = _finetune(base, tmp_path / "copies" / "ft", tmp_path)
    a = generate(load_pipeline(linked), CAPTIONS[:2], [0, 1], CFG)
    b = generate(load_pipeline(copied), CAPTIONS[:2], [0, 1], CFG)
    assert np.array_equal(a, b)


def _as_variant(folder: Path, variant: str = "fp16") -> None:
    """Rename every weights file as a variant download has it (``*.fp16.safetensors`` only)."""
    for f in list(folder.rglob("*.safetensors")):
        f.rename(f.with_name(f.name.replace(".safetensors", f".{variant}.safetensors")))


def test_a_folder_of_fp16_variants_only_loads_as_that_variant(saved_pipeline, tmp_path):
    folder = tmp_path / "fp16"
    shutil.copytree(saved_pipeline, folder)
    _as_variant(folder)
    assert weights_variant(folder / "unet") == "fp16" and weights_variant(saved_pipeline / "unet") is None
    model, plain = load_pipeline(folder), load_pipeline(saved_pipeline)
    assert all(torch.equal(a, b) for a, b in zip(model.unet.state_dict().values(), plain.unet.state_dict().values()))


def test_two_variants_and_no_plain_weights_are_refused_by_name(saved_pipeline, tmp_path):
    folder = tmp_path / "two"
    shutil.copytree(saved_pipeline, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    shutil.copy(weights, weights.with_name("diffusion_pytorch_model.bf16.safetensors"))
    weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    with pytest.raises(InputError, match=r"variants \['bf16', 'fp16'\]"):
        load_pipeline(folder)


def _cache_snapshot(pipeline: Path, cache: Path) -> Path:
    """The pipeline laid out as huggingface_hub's cache keeps it: blobs named by hash, and a
    snapshot folder of relative links to them."""
    repo = cache / "models--owner--sd"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    for i, f in enumerate(sorted(p for p in pipeline.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"blob{i:03d}"
        shutil.copy(f, blob)
        link = snapshot / f.relative_to(pipeline)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_a_cache_snapshot_is_the_owners_base_but_never_a_suspect(saved_pipeline, tmp_path):
    snapshot = _cache_snapshot(saved_pipeline, tmp_path / "hub")
    with pytest.raises(InputError, match="Hugging Face cache snapshot.*--local-dir"):
        check_sd_pipeline(snapshot, "suspect")
    assert check_sd_pipeline(snapshot, "base") == snapshot
    model, plain = load_pipeline(snapshot, trust=OWNER), load_pipeline(saved_pipeline)
    assert all(torch.equal(a, b) for a, b in zip(model.unet.state_dict().values(), plain.unet.state_dict().values()))


def test_a_snapshot_link_that_leaves_its_repository_is_refused_even_for_the_owner(saved_pipeline, tmp_path):
    snapshot = _cache_snapshot(saved_pipeline, tmp_path / "hub")
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}")
    (snapshot / "unet" / "extra.json").symlink_to(outside)
    with pytest.raises(InputError, match="outside the model folder"):
        check_pipeline_folder(snapshot, OWNER)
