"""A finished fine-tune kept at the size a re-run needs (genlineage.models.storage): its own weights
in fp16, drawing what the fp32 folder draws at float16 inference and keeping its identity, or only
its recipe and stamp, whose cached images still read and which is rebuilt on demand."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genlineage.cache import Result
from genlineage.errors import InputError
from genlineage.generation import GenerationCache, GenerationConfig, generate, generate_cached
from genlineage.models import storage
from genlineage.models.gate import check_safetensors_header
from genlineage.models.pipeline_io import OWNER, fingerprint, folder_image_size, load_pipeline
from genlineage.training.finetune import finetune_folder, finetune_result
from genlineage.training.sd import TrainConfig

from conftest import CAPTIONS, snapshot

CFG = GenerationConfig(steps=3, guidance_scale=3.0, batch=2)
TRAIN = TrainConfig(steps=2, batch=2, lr=1e-3)
UNET = Path("unet") / "diffusion_pytorch_model.safetensors"


def _dataset(folder: Path) -> Path:
    from genlineage.data.imagefolder import write_imagefolder

    rng = np.random.default_rng(0)
    write_imagefolder(folder, ((rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), c, {}) for c in CAPTIONS[:4]))
    return folder


@pytest.fixture()
def made(saved_pipeline, tmp_path, monkeypatch) -> dict:
    """A fine-tune below the data root (its frozen parts hard links to its base), as stage 03 makes
    one, with what it was made from."""
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    base = tmp_path / "owner" / "base"
    shutil.copytree(saved_pipeline, base)
    data = _dataset(tmp_path / "set")
    out = finetune_folder(base, data, tmp_path / "data" / "models" / "ft", TRAIN, 32, tmp_path / "work",
                          progress=False, trust=OWNER)
    return {"base": base, "data": data, "folder": out, "work": tmp_path / "work"}


def _state(folder: Path, dtype: torch.dtype) -> dict:
    return load_pipeline(folder, dtype=dtype).unet.state_dict()


def test_fp16_halves_the_unet_keeps_the_links_and_the_identity_and_loads_as_it_was(made, tmp_path):
    folder = made["folder"]
    fp32_copy = tmp_path / "fp32_copy"
    shutil.copytree(folder, fp32_copy)  # a copy outside the data root: single-name files
    identity, before = fingerprint(folder), storage.owned_bytes(folder)
    unet_bytes = (folder / UNET).stat().st_size
    vae_inode = os.stat(folder / "vae" / "diffusion_pytorch_model.safetensors").st_ino

    record = storage.compact_fp16(folder, "float16")

    half = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    assert not (folder / UNET).exists() and half.is_file()
    assert {v["dtype"] for k, v in check_safetensors_header(half).items() if k != "__metadata__"} == {"F16"}
    record_bytes = (folder / storage.RECORD).stat().st_size
    assert storage.owned_bytes(folder) - record_bytes == record.bytes_after < before - 0.45 * unet_bytes
    assert record.bytes_before == before and record.files == (str(half.relative_to(folder)),)
    assert os.stat(folder / "vae" / "diffusion_pytorch_model.safetensors").st_ino == vae_inode, "still the base's file"
    assert storage.folder_identity(folder) == identity != fingerprint(folder), "the recorded identity, not the bytes'"
    assert storage.compact_fp16(folder) == record, "idempotent"
    # at float16 inference the weights are bit for bit what the fp32 folder gives; at float32, within fp16's rounding
    assert all(torch.equal(a, b) for a, b in zip(_state(folder, torch.float16).values(),
                                                 _state(fp32_copy, torch.float16).values()))
    for a, b in zip(_state(folder, torch.float32).values(), _state(fp32_copy, torch.float32).values()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)
    images = generate(load_pipeline(folder), CAPTIONS[:2], [0, 1], CFG)  # the project's loader, through the gate
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8 and images.std() > 0


def test_fp16_is_refused_where_the_profile_infers_in_float32_and_nothing_is_written(made):
    before = snapshot(made["folder"])
    with pytest.raises(InputError, match="run.dtype: float16"):
        storage.release(made["folder"], "fp16", "float32")
    assert snapshot(made["folder"]) == before


def test_an_interrupted_compaction_leaves_the_folder_as_it_was(made, monkeypatch):
    before = snapshot(made["folder"])

    def killed(source: Path, target: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(storage, "_write_half", killed)
    with pytest.raises(KeyboardInterrupt):
        storage.compact_fp16(made["folder"])
    assert snapshot(made["folder"]) == before
    assert not [p for p in made["folder"].parent.iterdir() if p.name.startswith(".")], "no leftover"


def test_a_pruned_model_keeps_its_recipe_and_stamp_and_its_cached_images_read_without_weights(made, tmp_path):
    folder, cache = made["folder"], GenerationCache(tmp_path / "cache")
    identity = fingerprint(folder)
    drawn = generate_cached(load_pipeline(folder), CAPTIONS[:2], [0, 1], CFG, cache)

    record = storage.release(folder, "none", "float32")

    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(
        ["_stamp.json", "genlineage.json", storage.RECORD, "unet/config.json", "vae/config.json"])
    assert storage.disk_bytes(folder) <= storage.STUB_BYTES and record.bytes_after < 10_000 < record.bytes_before
    assert folder_image_size(folder) == 32, "its image size reads without weights"
    assert storage.is_pruned(folder) and storage.folder_identity(folder) == identity
    assert finetune_result(made["base"], made["data"], folder, TRAIN, 32).fresh(), "stage 03 would not retrain it"
    model = storage.cached_only_model(folder)
    assert np.array_equal(generate_cached(model, CAPTIONS[:2], [0, 1], CFG, cache), drawn)
    with pytest.raises(InputError, match="keeps only its recipe and stamp"):
        generate_cached(model, CAPTIONS[:2], [7, 8], CFG, cache)  # not cached: it would need the weights
    with pytest.raises(InputError, match="model_index.json"):
        load_pipeline(folder)


def test_a_pruned_model_is_rebuilt_from_its_recipe_to_the_same_bytes_on_this_cpu(made):
    folder = made["folder"]
    identity = fingerprint(folder)
    storage.compact_fp16(folder)
    storage.prune_to_recipe(folder)  # an fp16 folder pruned keeps the fp32 identity it recorded
    assert storage.folder_identity(folder) == identity

    storage.rebuild_from_recipe(folder, made["work"], trust=OWNER)

    assert not storage.is_pruned(folder) and (folder / UNET).is_file()
    assert fingerprint(folder) == identity, "the same recipe trained the same weights"
    assert finetune_result(made["base"], made["data"], folder, TRAIN, 32).fresh()


def test_a_recipe_whose_data_changed_is_not_rebuilt(made):
    storage.prune_to_recipe(made["folder"])
    (made["data"] / "metadata.jsonl").write_text((made["data"] / "metadata.jsonl").read_text() + "\n")
    with pytest.raises(InputError, match="data changed"):
        storage.rebuild_from_recipe(made["folder"], made["work"], trust=OWNER)
    assert storage.is_pruned(made["folder"])


def test_nothing_is_released_while_a_result_that_needs_it_is_not_cached(made, tmp_path):
    before = snapshot(made["folder"])
    pending = Result(tmp_path / "per_model" / "ft.csv", {"model": fingerprint(made["folder"])})
    with pytest.raises(ValueError, match="still needed by"):
        storage.release(made["folder"], "none", "float16", needed_by=[pending])
    assert snapshot(made["folder"]) == before
    pending.write(lambda tmp: tmp.write_text("rd\n0.1\n"))
    assert storage.release(made["folder"], "none", "float16", needed_by=[pending]).policy == "none"
    assert storage.release(made["folder"], "full", "float16") is None


def test_ensure_weights_rebuilds_only_a_pruned_folder(made):
    calls = []
    assert storage.ensure_weights(made["folder"], lambda: calls.append(1)) == made["folder"] and not calls
    storage.prune_to_recipe(made["folder"])
    with pytest.raises(RuntimeError, match="left no pipeline folder"):
        storage.ensure_weights(made["folder"], lambda: calls.append(1))
    assert calls == [1] and not made["folder"].exists(), "the stub is gone, so the stage's builder trains it"


# --- the dry run's figures ------------------------------------------------------------------------

SD15_UNET = 3.44e9
PAPER_OTHER_GB = 10.3 + 52.8 + 120.4  # the paper plan's checkpoints in flight, training sets, generation cache


def test_kept_bytes_per_policy():
    assert storage.kept_bytes(SD15_UNET, "full") == SD15_UNET
    assert storage.kept_bytes(SD15_UNET, "fp16") == SD15_UNET / 2
    assert storage.kept_bytes(SD15_UNET, "none") == storage.STUB_BYTES
    with pytest.raises(InputError, match="not one of"):
        storage.kept_bytes(SD15_UNET, "fp8")


def test_the_paper_plan_fits_200_gb_only_when_queried_models_keep_their_recipe():
    """4 sources and 264 evaluated and shadow models, one job at a time, at float16 inference."""
    counts = {"sources": 4, "released": 264, "kept_full": 0, "unet_fp32_bytes": SD15_UNET,
              "inference_dtype": "float16", "in_flight": 1}
    full, fp16, none = (storage.model_disk(policy=p, **counts) for p in ("full", "fp16", "none"))
    assert full.full_gb == full.kept_gb == pytest.approx(921.9, abs=0.1)
    assert fp16.kept_gb == pytest.approx((4 * 1.72 + 264 * 1.72 + 1.72), abs=0.1)
    assert PAPER_OTHER_GB + fp16.kept_gb > 200 >= PAPER_OTHER_GB + none.kept_gb
    assert none.kept_gb == pytest.approx(4 * 1.72 + 3.44 + 263 * storage.STUB_BYTES / 1e9, abs=1e-6), "one in flight"
    assert "921.9 GB if every model were kept in fp32" in none.sentence() and "recipe and stamp" in none.sentence()
    at_fp32 = storage.model_disk(policy="none", **{**counts, "inference_dtype": "float32"})
    assert at_fp32.kept_gb == pytest.approx(none.kept_gb + 4 * 1.72), "sources stay fp32 where fp16 is not exact"
