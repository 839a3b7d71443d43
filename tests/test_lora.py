"""LoRA models: trained through peft and the project's engine, saved in diffusers' format, loaded
onto their base through the LoRA gate and fused; taken by ``genlineage verify --suspect-lora``;
built as the owner's shadows by ``genlineage shadows``.

The stated tolerance of the round trip: a LoRA model loaded from its file (factors fused into the
base's weights) draws the images the trained model drew with its adapter active to within 1/255
per pixel (fusing changes the order of the float sums, nothing else); measured here, it is 0."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import CAPTIONS, snapshot
from genlineage.cache import STAMP
from genlineage.cli import main
from genlineage.config import TrainConfig, load_profile
from genlineage.data.imagefolder import write_imagefolder
from genlineage.errors import InputError
from genlineage.generation import generate
from genlineage.models import lora
from genlineage.models.lora import LORA_WEIGHTS, LoraModel, add_lora, check_lora_file, write_lora_weights
from genlineage.models.pipeline_io import fingerprint, load_lora, load_pipeline
from genlineage.training.encode import encode_dataset
from genlineage.training.finetune import finetune_folder
from genlineage.training.sd import train_sd
from genlineage.verify import verify
from genlineage.verify.shadows import plan_shadows

P = load_profile("smoke")
TOLERANCE = 1  # uint8 levels: see the module docstring
LORA = {"steps": 8, "batch": 4, "lr": 1e-2, "finetune": "lora", "lora_rank": 4}


def _images(n: int = len(CAPTIONS), offset: int = 0) -> np.ndarray:
    return np.random.default_rng(10 + offset).random((n, 32, 32, 3)).astype(np.float32)


def _trained_lora(base: Path, work: Path, alpha: float | None = None, steps: int = 8, stop_after: int | None = None):
    """The base with a LoRA adapter trained ``steps`` steps in memory (the adapter still active)."""
    components = load_pipeline(base)
    cfg = TrainConfig.from_mapping({**LORA, "steps": steps, "lora_alpha": alpha})
    add_lora(components.unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.seed)
    train_sd(components, encode_dataset(components, _images(), CAPTIONS), cfg, work, progress=False, stop_after=stop_after)
    return components, cfg


def _draw(components) -> np.ndarray:
    return generate(components, CAPTIONS[:4], [0, 1, 2, 3], P.generation)


@pytest.fixture(scope="module")
def trained(saved_pipeline, tmp_path_factory):
    """One LoRA trained on the smoke base, its images with the adapter active, and its file."""
    root = tmp_path_factory.mktemp("lora")
    components, cfg = _trained_lora(saved_pipeline, root / "work")
    (root / "out").mkdir()
    file = write_lora_weights(components.unet, root / "out", cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    return {"base": saved_pipeline, "file": file, "images": _draw(components), "root": root}


# --- the round trip -------------------------------------------------------------------------------

def test_a_lora_loaded_onto_its_base_draws_what_the_trained_model_drew(trained):
    fused = load_lora(LoraModel(trained["file"], trained["base"]))
    images = _draw(fused)
    assert np.abs(images.astype(int) - trained["images"].astype(int)).max() <= TOLERANCE
    base_images = _draw(load_pipeline(trained["base"]))
    assert np.abs(base_images.astype(int) - images.astype(int)).mean() > 1, "the LoRA changed the model"
    assert fused.path is None and fused.identity == lora.lora_identity(fingerprint(trained["base"]), trained["file"])
    from genlineage.models.pipeline_io import model_content_id
    assert model_content_id(LoraModel(trained["file"], trained["base"])) == fused.content_id, \
        "verify finds a LoRA's cached images without loading it"


def test_the_file_is_diffusers_format_and_diffusers_reads_it_the_same(trained):
    tensors = load_file(trained["file"])
    assert tensors and all(k.startswith("unet.") and (".lora.down." in k or ".lora.up." in k) for k in tensors)
    components = load_pipeline(trained["base"])
    pipe = lora._pipeline(components)
    pipe.load_lora_weights(str(trained["file"].parent))  # diffusers' own loader, adapter left unfused
    assert np.abs(_draw(components).astype(int) - trained["images"].astype(int)).max() <= TOLERANCE


def test_alpha_in_the_metadata_sets_the_scale(saved_pipeline, tmp_path):
    components, cfg = _trained_lora(saved_pipeline, tmp_path / "work", alpha=8.0, steps=3)
    file = write_lora_weights(components.unet, tmp_path, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    assert check_lora_file(file, saved_pipeline).scales == {"unet": 2.0}
    fused = load_lora(LoraModel(file, saved_pipeline))
    assert np.abs(_draw(fused).astype(int) - _draw(components).astype(int)).max() <= TOLERANCE


def test_an_interrupted_lora_fine_tune_resumes_to_the_same_weights(saved_pipeline, tmp_path):
    whole, _ = _trained_lora(saved_pipeline, tmp_path / "a", steps=6)
    _trained_lora(saved_pipeline, tmp_path / "b", steps=6, stop_after=3)
    assert (tmp_path / "b" / "checkpoint" / "unet.safetensors").is_file()
    saved = load_file(tmp_path / "b" / "checkpoint" / "unet.safetensors")
    assert saved and all(lora.is_lora_parameter(k) for k in saved), "a LoRA checkpoint holds only the adapter"
    resumed, _ = _trained_lora(saved_pipeline, tmp_path / "b", steps=6)
    a, b = whole.unet.state_dict(), resumed.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if lora.is_lora_parameter(k))


def test_finetune_folder_writes_a_lora_folder_that_loads_cached_and_keyed(saved_pipeline, smoke_profile, tmp_path):
    data_root = Path(os.environ["GENLINEAGE_DATA"])
    base = load_pipeline(saved_pipeline)
    from genlineage.models.pipeline_io import save_pipeline

    base_dir = save_pipeline(base, data_root / "base", {"role": "base"})
    write_imagefolder(tmp_path / "pairs", [(img, cap, {}) for img, cap in zip(_images(), CAPTIONS)])
    out = data_root / "models" / "lora_model"
    cfg = TrainConfig.from_mapping(LORA)
    finetune_folder(base_dir, tmp_path / "pairs", out, cfg, 32, tmp_path / "work", progress=False)
    assert {p.name for p in out.iterdir()} == {LORA_WEIGHTS, "genlineage.json", STAMP}
    assert (out / LORA_WEIGHTS).stat().st_size < 100_000, "a LoRA folder holds the adapter, not a pipeline"
    loaded = load_pipeline(out)
    assert loaded.identity == fingerprint(out) != fingerprint(base_dir)
    stamp = (out / STAMP).stat().st_mtime_ns
    finetune_folder(base_dir, tmp_path / "pairs", out, cfg, 32, tmp_path / "work", progress=False)
    assert (out / STAMP).stat().st_mtime_ns == stamp, "a fresh LoRA model is not trained again"
    moved = data_root / "moved"
    os.rename(data_root / "models", moved)  # the base is named relative to the folder
    assert load_pipeline(moved / "lora_model").identity == loaded.identity
    os.rename(data_root / "base", data_root / "elsewhere")
    with pytest.raises(InputError):
        load_pipeline(moved / "lora_model")


def test_the_lora_key_leaves_full_fine_tunes_alone():
    full = TrainConfig.from_mapping({"steps": 4, "batch": 4, "lr": 1e-3})
    assert full.key() == TrainConfig.from_mapping({"steps": 4, "batch": 4, "lr": 1e-3, "lora_rank": 16}).key()
    a, b = (TrainConfig.from_mapping({**LORA, "lora_rank": r}) for r in (4, 8))
    assert len({full.key(), a.key(), b.key()}) == 3
    assert a.key() == TrainConfig.from_mapping({**LORA, "lora_alpha": 4.0}).key(), "alpha None is alpha = rank"
    with pytest.raises(InputError, match="UNet only"):
        TrainConfig.from_mapping({**LORA, "train_text_encoder": True})


# --- the gate ---------------------------------------------------------------------------------------

def _rewrite(trained, tmp_path: Path, change, metadata: dict | None = None, name: str = LORA_WEIGHTS) -> Path:
    tensors = {k: v.clone() for k, v in load_file(trained["file"]).items()}
    change(tensors)
    out = tmp_path / name
    save_file(tensors, out, metadata=metadata)
    return out


def _first(tensors: dict, part: str = ".lora.down.") -> str:
    return next(k for k in sorted(tensors) if part in k)


REFUSALS = {
    "unknown layer": (lambda t: t.update({"unet.no_such_block.to_q.lora.down.weight": t[_first(t)].clone(),
                                          "unet.no_such_block.to_q.lora.up.weight": t[_first(t, ".lora.up.")].clone()}),
                      "a layer the base"),
    "wrong shape": (lambda t: t.update({_first(t): torch.zeros(4, 3)}), "do not fit"),
    "not a factor": (lambda t: t.update({"unet.conv_in.weight": torch.zeros(2, 2)}), "not a LoRA factor"),
    "missing factor": (lambda t: t.pop(_first(t, ".lora.up.")), "has no up factor"),
    "integer factor": (lambda t: t.update({_first(t): t[_first(t)].to(torch.int32)}), "dtype"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_the_lora_gate_refuses_what_is_not_a_lora_of_this_base(trained, tmp_path, case):
    change, message = REFUSALS[case]
    bad = _rewrite(trained, tmp_path, change)
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=message):
        load_lora(LoraModel(bad, trained["base"]))
    assert snapshot(tmp_path) == before, "a refusal writes nothing"


def test_the_lora_gate_refuses_pickles_oversized_corrupt_and_dora_files(trained, tmp_path, monkeypatch):
    pickle = tmp_path / "pytorch_lora_weights.bin"
    pickle.write_bytes(trained["file"].read_bytes())
    with pytest.raises(InputError, match="pickle"):
        check_lora_file(pickle, trained["base"])
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(InputError, match="truncated"):
        check_lora_file(corrupt, trained["base"])
    dora = _rewrite(trained, tmp_path, lambda t: None, {"lora_adapter_metadata": json.dumps({"unet.use_dora": True})},
                    "dora.safetensors")
    with pytest.raises(InputError, match="DoRA"):
        check_lora_file(dora, trained["base"])
    monkeypatch.setattr(lora, "LORA_FILE_MAX_BYTES", 1000)
    with pytest.raises(InputError, match="above the 1,000-byte bound"):
        check_lora_file(trained["file"], trained["base"])


def test_a_suspects_lora_folder_names_no_base_of_its_own(trained, tmp_path, monkeypatch):
    """A LoRA folder outside genlineage's data roots may not point at a base: its base is given
    beside it; inside them, only a base relative to the folder (as genlineage writes it) is read."""
    folder = tmp_path / "suspect_lora"
    folder.mkdir()
    (folder / LORA_WEIGHTS).write_bytes(trained["file"].read_bytes())
    (folder / "genlineage.json").write_text(json.dumps({"lora_base": str(trained["base"])}))
    with pytest.raises(InputError, match="--suspect-lora"):
        load_pipeline(folder)
    monkeypatch.setenv("GENLINEAGE_DATA", str(tmp_path))
    with pytest.raises(InputError, match="no relative lora_base"):
        load_pipeline(folder)


def test_a_lora_of_a_layer_that_cannot_carry_one_is_refused_not_half_applied(trained, tmp_path):
    """An embedding's weight is 2-D like a Linear's, so its shapes pass the header check; diffusers
    would skip its factors with a warning. The load refuses instead of judging part of a model."""
    te = "text_encoder.text_model."  # the spelling of SD's folders and LoRA files (transformers 5 drops text_model.)
    encoder = load_pipeline(trained["base"]).text_encoder
    vocab, hidden = encoder.get_input_embeddings().weight.shape
    q_out, q_in = encoder.encoder.layers[0].self_attn.q_proj.weight.shape
    good = {f"{te}encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(2, q_in),
            f"{te}encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(q_out, 2)}
    save_file(good, tmp_path / "text_encoder_lora.safetensors")
    fused = load_lora(LoraModel(tmp_path / "text_encoder_lora.safetensors", trained["base"]))
    assert not torch.equal(fused.text_encoder.encoder.layers[0].self_attn.q_proj.weight,
                           encoder.encoder.layers[0].self_attn.q_proj.weight), "a text-encoder LoRA loads"
    bad = tmp_path / "bad.safetensors"
    save_file({**good, f"{te}embeddings.token_embedding.lora_A.weight": torch.zeros(2, hidden),
               f"{te}embeddings.token_embedding.lora_B.weight": torch.zeros(vocab, 2)}, bad)
    assert len(check_lora_file(bad, trained["base"]).modules["text_encoder"]) == 2
    with pytest.raises(InputError, match="cannot carry a LoRA"):
        load_lora(LoraModel(bad, trained["base"]))


# --- verify and shadows -------------------------------------------------------------------------------

def _pairs(where: Path, offset: int, n: int = 6) -> Path:
    return write_imagefolder(where, [(img, CAPTIONS[(i + offset) % 12], {"id": f"{offset}-{i}"})
                                     for i, img in enumerate(_images(n, offset))]).root


def test_plan_shadows_names_and_seeds_each_shadow_apart():
    rows = plan_shadows(2, 3, [0.5, 1.0], 4, "lora", seed=0)
    assert [r["name"] for r in rows] == ["innocent_00", "innocent_01", "infringing_00_rho0.5", "infringing_01_rho1",
                                         "infringing_02_rho0.5"]
    assert [r["label"] for r in rows] == [0, 0, 1, 1, 1] and len({r["seed"] for r in rows}) == 5
    assert plan_shadows(3, 3, [0.5, 1.0], 4, "lora", seed=0)[:1] == rows[:1], "adding a shadow moves no other"
    with pytest.raises(InputError):
        plan_shadows(0, 0, [1.0], 4, "full", seed=0)


@pytest.fixture(scope="module")
def shadow_world(trained, tmp_path_factory):
    """A source (the base fine-tuned on its training pairs), the owner's unseen pairs, and the
    shadow set ``genlineage shadows`` builds from them (LoRA, two innocent and one infringing)."""
    root = tmp_path_factory.mktemp("shadows")
    source_data, unseen = _pairs(root / "source_data", 0), _pairs(root / "unseen", 100, n=8)
    cfg = TrainConfig.from_mapping({"steps": 3, "batch": 4, "lr": 1e-3})
    source = finetune_folder(trained["base"], source_data, root / "source", cfg, 32, root / "work", progress=False)
    args = ["shadows", "--base", str(trained["base"]), "--source", str(source), "--data", str(unseen),
            "--source-data", str(source_data), "--innocent", "2", "--infringing", "1", "--rhos", "0.5",
            "--n-samples", "4", "--finetune", "lora", "--profile", "smoke", "--quiet", "--out", str(root / "set")]
    return {"root": root, "source": source, "source_data": source_data, "unseen": unseen, "args": args}


def test_genlineage_shadows_builds_a_lora_shadow_set_with_its_manifest(shadow_world, capsys):
    root = shadow_world["root"]
    assert main(shadow_world["args"]) == 0
    printed = json.loads(capsys.readouterr().out)
    manifest = json.loads((root / "set" / "shadows.json").read_text())
    assert printed["shadows"] == 3 and [s["role"] for s in manifest["shadows"]] == ["innocent", "innocent", "infringing"]
    base = os.path.abspath(shadow_world["args"][shadow_world["args"].index("--base") + 1])
    assert manifest["base"] == base, "the base as an absolute path: verify reads it from any folder"
    for s in manifest["shadows"]:
        assert (root / "set" / s["path"] / LORA_WEIGHTS).is_file() and s["finetune"] == "lora"
        assert s["method"] == "lora" and s["base"] == base, "how each shadow was made, for verify's null check"
    origins = [json.loads(line)["origin"] for line in (root / "set" / "data" / "infringing_00_rho0.5" / "metadata.jsonl")
               .read_text().splitlines()]
    assert origins.count("generated") == 2 and origins.count("real") == 2
    assert "--innocent-shadow" in printed["verify_arguments"] and "--infringing-shadow" in printed["verify_arguments"]
    models = {k: v for k, v in snapshot(root / "set").items() if k.endswith(LORA_WEIGHTS)}
    assert main(shadow_world["args"]) == 0
    assert {k: v for k, v in snapshot(root / "set").items() if k.endswith(LORA_WEIGHTS)} == models, \
        "a re-run trains nothing"


def test_genlineage_shadows_refuses_data_that_overlaps_the_source_set(shadow_world, tmp_path, capsys):
    mixed = write_imagefolder(tmp_path / "mixed", [(img, CAPTIONS[i], {}) for i, img in enumerate(
        np.concatenate([_images(3, 100), _images(2, 0)]))]).root  # two of the source's own images
    args = list(shadow_world["args"])
    args[args.index("--data") + 1] = str(mixed)
    args[args.index("--out") + 1] = str(tmp_path / "never")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "2 of its 5 images are images of the source's training set" in err and "Remove them" in err
    assert not (tmp_path / "never").exists(), "nothing is written before the checks pass"


def test_verify_takes_a_lora_suspect_and_lora_shadows(shadow_world, trained, tmp_path, capsys):
    main(shadow_world["args"])
    capsys.readouterr()
    from genlineage.verify import select_keys

    keys_out = tmp_path / "owner"
    select_keys(shadow_world["source"], shadow_world["source_data"], "random", 4, profile=P, out=keys_out, progress=False)
    shadows = shadow_world["root"] / "set"
    before = snapshot(trained["file"].parent)
    args = ["verify", "--source", str(shadow_world["source"]), "--keys", str(keys_out / "keys"), "--profile", "smoke",
            "--out", str(tmp_path / "report"), "--suspect-lora", str(trained["file"]),
            "--suspect-base", str(trained["base"]), "--innocent-shadow", str(shadows / "innocent_00"),
            "--innocent-shadow", str(shadows / "innocent_01"), "--infringing-shadow", str(shadows / "infringing_00_rho0.5")]
    assert main(args) == 0
    said = capsys.readouterr()
    printed = json.loads(said.out)
    n_queries = 4 * len(P.attribution.query_seeds)
    assert printed["verdict"] in ("infringing", "not shown") and printed["queries"] == n_queries
    assert f"the suspect will be asked {n_queries} images: 4 keys x 2 query seeds" in said.err, "said before asking"
    assert said.err.index("asking 3 shadow model(s)") < said.err.index("the suspect will be asked")
    settings = json.loads((tmp_path / "report" / "verdict.json").read_text())["settings"]
    assert LORA_WEIGHTS in settings["suspect"] and "innocent_00" in settings["innocent_shadows"][0]
    assert snapshot(trained["file"].parent) == before, "nothing is written beside the suspect's file"
    with pytest.raises(SystemExit) as refused:  # a LoRA file without its base is a usage error
        main(args[:args.index("--suspect-base")] + args[args.index("--suspect-base") + 2:])
    assert refused.value.code == 2


def test_verify_refuses_a_lora_on_another_base(shadow_world, trained, tmp_path):
    from genlineage.models.pipeline_io import save_pipeline
    from genlineage.models.tiny import build_base, build_vae

    other = P.models.bases["v2"]  # another text encoder width: every cross-attention layer has another shape
    save_pipeline(build_base(other, build_vae(P.models.vae, 32, 3), CAPTIONS, 32, P.training.noise_scheduler),
                  tmp_path / "other_base", {"role": "test"})
    with pytest.raises(InputError, match="do not fit|does not have"):
        verify(shadow_world["source"], LoraModel(trained["file"], tmp_path / "other_base"), key_data=shadow_world["source_data"],
               strategy="random", profile=P, out=tmp_path / "r", progress=False, controls=shadow_world["unseen"])
    assert not (tmp_path / "r").exists()


def test_a_profile_chooses_lora_for_its_suspicious_models_with_its_own_settings():
    lora_profile = load_profile("smoke", {"suspicious": {"finetune": "lora", "lora": {"lora_rank": 8, "lr": 0.01}}})
    from genlineage.experiments.suspicious_models import _train_config
    from genlineage.study.manifest import plan_manifest

    row = plan_manifest(lora_profile).iloc[0].to_dict()
    cfg = _train_config(lora_profile, row)
    assert (cfg.finetune, cfg.lora_rank, cfg.lr) == ("lora", 8, 0.01)
    assert _train_config(lora_profile, {**row, "finetune": "full"}).finetune == "full", "a row may name its own"
    full = _train_config(P, plan_manifest(P).iloc[0].to_dict())
    assert full.finetune == "full" and full.lr == P.suspicious.train.get("lr", P.training.finetune.get("lr"))
    with pytest.raises(InputError, match="finetune"):
        load_profile("smoke", {"suspicious": {"finetune": "qlora"}})
