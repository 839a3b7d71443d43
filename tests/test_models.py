"""Tokenizer, tiny family and pipeline folders: built offline, saved, loaded, refused."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from genlineage.errors import InputError
from genlineage.models.pipeline_io import check_pipeline_folder, fingerprint, load_pipeline
from genlineage.models.tokenizer import build_clip_tokenizer

from conftest import CAPTIONS


def test_tokenizer_makes_corpus_words_single_tokens():
    tok = build_clip_tokenizer(["The man has no bangs.", "a red star"], max_length=12)
    ids = tok("the man has no bangs.", padding="max_length", max_length=12).input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[:7] == ["<|startoftext|>", "the</w>", "man</w>", "has</w>", "no</w>", "bangs</w>", ".</w>"]
    assert tokens[7] == "<|endoftext|>" and len(ids) == 12


def test_tokenizer_falls_back_to_characters_for_unknown_words():
    tok = build_clip_tokenizer(["a red star"], max_length=16, lexicon=[])  # no generator words
    tokens = tok.convert_ids_to_tokens(tok("zebra").input_ids)
    assert tokens[1:-1] == ["z", "e", "b", "r", "a</w>"]


def test_pipeline_round_trip_offline(saved_pipeline, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_pipeline(saved_pipeline)
    assert loaded.provenance["role"] == "test"
    assert loaded.image_size == 32
    ids = loaded.tokenizer(CAPTIONS[:1]).input_ids
    assert all(i < loaded.text_encoder.config.vocab_size for i in ids[0])
    # the standard diffusers loader reads the same folder
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(saved_pipeline, local_files_only=True, use_safetensors=True)
    assert torch.equal(pipe.unet.conv_in.weight, loaded.unet.conv_in.weight)


def test_fingerprint_follows_content(saved_pipeline, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(saved_pipeline, copy)
    assert fingerprint(copy) == fingerprint(saved_pipeline)
    cfg = copy / "unet" / "config.json"
    cfg.write_text(cfg.read_text().replace('"norm_eps"', '"norm_eps" ', 1))
    assert fingerprint(copy) != fingerprint(saved_pipeline)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="does-not-exist.*does not exist"):
        load_pipeline(tmp_path / "does-not-exist")


def test_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="model_index.json"):
        check_pipeline_folder(tmp_path)


def test_missing_component_is_named(saved_pipeline, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(saved_pipeline, copy)
    shutil.rmtree(copy / "vae")
    with pytest.raises(InputError, match="'vae/'"):
        check_pipeline_folder(copy)


def test_pickle_weights_are_refused(saved_pipeline, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(saved_pipeline, copy)
    for f in (copy / "unet").glob("*.safetensors"):
        f.unlink()
    torch.save({"x": torch.zeros(1)}, copy / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(InputError, match="pickle weights.*never loads"):
        load_pipeline(copy)


def test_remote_code_and_escaping_links_are_refused(saved_pipeline, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(saved_pipeline, copy)
    index = json.loads((copy / "model_index.json").read_text())
    index["auto_map"] = {"x": "evil.Module"}
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="remote or custom code"):
        check_pipeline_folder(copy)
    copy2 = tmp_path / "p2"
    shutil.copytree(saved_pipeline, copy2)
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (copy2 / "unet" / "extra.json").symlink_to(outside)
    with pytest.raises(InputError, match="outside the model folder"):
        check_pipeline_folder(copy2)
