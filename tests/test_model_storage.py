"""A finished fine-tune kept at the size a re-run needs (genlineage.models.storage): its own weights
in fp16, drawing what the fp32 folder draws at float16 inference and keeping its identity, or only
its recipe and stamp, whose cached images still read and which is rebuilt on demand."""
from __future__ import annotations

import json

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from genlineage.cache import Result, content_id
from genlineage.errors import InputError
from genlineage.generation import GenerationCache, GenerationConfig, generate, generate_cached
from genlineage.models import storage
from genlineage.models.gate import COMPONENTS, check_safetensors_header
from genlineage.models.pipeline_io import OWNER, fingerprint, folder_image_size, load_pipeline
from genlineage.training.finetune import finetune_folder, finetune_result, rebuild_from_recipe
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
    assert storage.folder_identity(folder) == identity == fingerprint(folder), "the recorded identity, not the bytes'"
    assert content_id(folder, parts=COMPONENTS) != identity
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

    rebuild_from_recipe(folder, made["work"], trust=OWNER)

    assert not storage.is_pruned(folder) and (folder / UNET).is_file()
    assert fingerprint(folder) == identity, "the same recipe trained the same weights"
    assert finetune_result(made["base"], made["data"], folder, TRAIN, 32).fresh()


def test_a_recipe_whose_data_changed_is_not_rebuilt(made):
    storage.prune_to_recipe(made["folder"])
    (made["data"] / "metadata.jsonl").write_text((made["data"] / "metadata.jsonl").read_text() + "\n")
    with pytest.raises(InputError, match="data changed"):
        rebuild_from_recipe(made["folder"], made["work"], trust=OWNER)
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


# --- stage 03 under models.keep_finetuned: none, at the smallest scale ------------------------------

def _profile_keeping(policy: str, monkeypatch):
    """The smoke profile keeping ``policy`` (profile key ``models.keep_finetuned``)."""
    from genlineage.config import load_profile

    return load_profile("smoke", {"models": {"keep_finetuned": policy}})


def _keys(profile, source: str, strategy: str) -> None:
    from genlineage.study.queries import keys_dir
    from genlineage.key_sets import KeySet

    rng = np.random.default_rng(len(strategy))
    KeySet(strategy=strategy, prompts=CAPTIONS[:3], references=rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8),
           indices=[0, 1, 2], scores=np.zeros(3),
           meta={"seeds": list(profile.attribution.key_seeds)}).save(keys_dir(profile, source, strategy))


@pytest.fixture()
def stage03(saved_pipeline, tmp_path, monkeypatch) -> dict:
    """What stage 03 needs of one evaluated model, built from the test configs (no smoke run): the
    base and a source (tiny pipelines), the domain's pool and held-out pairs, the source's three key
    sets, a one-row manifest, under a profile that keeps only recipes."""
    from genlineage import layout
    from genlineage.data.imagefolder import write_imagefolder
    from genlineage.study.manifest import write_manifest
    from genlineage.models.pipeline_io import save_pipeline

    from conftest import make_components

    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path / "data"))
    profile = _profile_keeping("none", monkeypatch)
    base, source = layout.base_dir(profile, "v1"), layout.source_dir(profile, "v1", "celeba")
    shutil.copytree(saved_pipeline, base)
    save_pipeline(make_components(seed_offset=1), source, {"role": "source"})
    rng = np.random.default_rng(0)
    for role, n in (("suspicious_pool", 6), ("heldout", 6)):
        write_imagefolder(layout.datasets_dir(profile) / f"celeba_{role}",
                          ((rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), CAPTIONS[-1 - i], {"id": f"{role}{i}"})
                           for i in range(n)))
    for strategy in ("detection", "generation", "random"):
        _keys(profile, "v1-celeba", strategy)
    name = "v1-celeba__evaluated__same__rho0__r0__s0"
    row = {"name": name, "source": "v1-celeba", "source_path": str(source), "source_base": "v1", "domain": "celeba",
           "role": "evaluated", "lineage": "same", "base": "v1", "base_path": str(base), "rho": 0.0, "label": 0,
           "replicate": 0, "n_samples": 4, "seed": 11, "pool": "celeba_suspicious_pool",
           "path": str(layout.models_dir(profile) / "suspicious" / name)}
    write_manifest(profile, pd.DataFrame([row]))
    return {"profile": profile, "row": row, "out": tmp_path / "verify"}


def test_under_none_stage_03_queries_then_prunes_and_every_later_read_is_cached(stage03, monkeypatch):
    from genlineage import layout
    from genlineage.experiments import suspicious_models
    from genlineage.key_sets import STRATEGIES
    from genlineage.study.queries import keys_dir, query_model, query_result
    from genlineage.keys import profile_seeds
    from genlineage.key_sets import KeySet
    from genlineage.models.pipeline_io import load_model
    from genlineage.reconstruction import reconstruct
    from genlineage.verify import verify
    from genlineage.verify.suspect import PipelineSuspect

    profile, row = stage03["profile"], stage03["row"]
    folder = Path(row["path"])
    whole = {}
    real_release = storage.release

    def seen_whole(path, *args, **kwargs):  # the identity the fp32 weights give, just before the release
        whole["identity"] = fingerprint(path)
        return real_release(path, *args, **kwargs)

    monkeypatch.setattr(storage, "release", seen_whole)
    suspicious_models.build_suspicious_model(profile, row)

    assert storage.is_pruned(folder) and storage.disk_bytes(folder) <= storage.STUB_BYTES
    assert fingerprint(folder) == whole["identity"], "the pruned folder keeps the identity of its weights"
    assert suspicious_models.model_result(profile, row).fresh(), "stage 03 would not retrain it"
    answers = query_result(profile, row)
    assert answers.fresh() and query_model(profile, row)["per_model"] == str(answers.path), "stage 04 reads its answers"
    model = load_model(profile, folder)
    assert isinstance(model, storage.CachedOnlyModel)
    cfg, cache = profile.generation, GenerationCache(layout.generation_cache_dir(profile))
    _, seeds = profile_seeds(profile)
    table = pd.read_csv(answers.path)
    for strategy in STRATEGIES:  # every key's RD, read back from the cache without weights
        keys = KeySet.load(keys_dir(profile, row["source"], strategy))
        rd = reconstruct(model, keys.prompts, keys.references, seeds, cfg, cache, profile.attribution.distance).distance
        assert np.allclose(rd, table[table.strategy == strategy].sort_values("rank").rd.to_numpy())
    # stage 08: the owner's tool judges the pruned suspect from the cache (keys and its control pairs)
    v = verify(row["source_path"], folder, keys=keys_dir(profile, row["source"], "generation"),
               controls=layout.datasets_dir(profile) / "celeba_heldout", profile=profile, out=stage03["out"],
               progress=False, cache_dir=layout.generation_cache_dir(profile))
    assert v.verdict in ("infringing", "not shown") and v.queries > 0
    with pytest.raises(InputError, match="keeps only its recipe and stamp"):
        PipelineSuspect(folder, cfg, layout.generation_cache_dir(profile)).generate(["never asked"], [5], 32, False)


def test_under_none_the_training_set_goes_with_its_model_and_is_rebuilt_byte_for_byte_on_demand(stage03):
    """27.5: a released model's training set keeps only its stamp and the content id it had; the
    model stays fresh, a second run neither rebuilds the set nor retrains, the job rebuilds the very
    bytes when a reader asks, and a set that would come back different is refused."""
    from genlineage.experiments import suspicious_models

    profile, row = stage03["profile"], stage03["row"]
    job = suspicious_models.training_set_job(profile, row)
    suspicious_models.build_suspicious_model(profile, row)
    assert job.is_released()
    assert sorted(p.name for p in job.out.iterdir()) == sorted([storage.DATA_RECORD, "_stamp.json"])
    assert suspicious_models.model_result(profile, row).fresh(), "releasing the set leaves the model fresh"
    record = (job.out / storage.DATA_RECORD).read_text()
    suspicious_models.build_suspicious_model(profile, row)
    assert job.is_released() and (job.out / storage.DATA_RECORD).read_text() == record, "not rebuilt while fresh"
    with pytest.raises(InputError, match="was released with it"):
        rebuild_from_recipe(row["path"], stage03["out"] / "work")

    rebuilt = job.build()
    assert not job.is_released() and content_id(rebuilt) == json.loads(record)["content_id"]
    assert suspicious_models.model_result(profile, row).fresh()

    job.release()
    (job.out / storage.DATA_RECORD).write_text(json.dumps({"content_id": "0" * 24}))
    with pytest.raises(InputError, match="differs from the set its model was trained on"):
        job.build()


def test_a_lora_twin_trains_on_its_originals_released_set_and_leaves_it_released(stage03):
    from genlineage.experiments import lora_ablation, suspicious_models

    profile, row = stage03["profile"], stage03["row"]
    suspicious_models.build_suspicious_model(profile, row)
    job = suspicious_models.training_set_job(profile, row)
    record = (job.out / storage.DATA_RECORD).read_text()
    twin = {**row, "name": row["name"] + "__lora", "twin_of": row["name"], "lora_lr": 1e-3,
            "path": str(Path(row["path"]).with_name(row["name"] + "__lora"))}
    lora_ablation.build_twin(profile, twin)
    assert (Path(twin["path"]) / "pytorch_lora_weights.safetensors").is_file()
    assert job.is_released() and (job.out / storage.DATA_RECORD).read_text() == record
    stamp = (Path(twin["path"]) / "_stamp.json").stat().st_mtime_ns
    lora_ablation.build_twin(profile, twin)  # fresh: neither the set rebuilt nor the twin retrained
    assert (Path(twin["path"]) / "_stamp.json").stat().st_mtime_ns == stamp


def test_a_released_infringing_set_gives_the_source_images_it_was_written_with(stage03):
    """The coverage table reads an infringer's generated training images: from a released set they
    come from the source through the generation cache, equal to what the folder held."""
    from genlineage.experiments import suspicious_models
    from genlineage.experiments.world_grid import generated_images

    profile = stage03["profile"]
    row = {**stage03["row"], "name": "v1-celeba__evaluated__same__rho1__r0__s0", "rho": 1.0, "label": 1}
    job = suspicious_models.training_set_job(profile, row)
    job.build()
    held = generated_images(profile, row)
    assert held.shape[0] == job.n_generated == 4
    job.release()
    assert job.is_released()
    assert np.array_equal(generated_images(profile, row), held)


def test_under_full_stage_03_writes_what_it_wrote_before(stage03, monkeypatch):
    """The tiny and smoke profiles keep every model whole: no record, the weights' own identity, and
    nothing of stage 04 asked in stage 03."""
    from genlineage.study.queries import query_result
    from genlineage.experiments.suspicious_models import build_suspicious_model, is_released

    monkeypatch.setattr(storage, "profile_policy", lambda profile: "full")
    profile, row = stage03["profile"], stage03["row"]
    folder = Path(build_suspicious_model(profile, row))
    assert not is_released(profile, row) and not (folder / storage.RECORD).exists() and (folder / UNET).is_file()
    assert fingerprint(folder) == content_id(folder, parts=COMPONENTS)
    assert not query_result(profile, row).path.exists(), "stage 04's queries wait for stage 04"
