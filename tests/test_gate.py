"""The one gate (docs/method.md#untrusted-inputs): a battery of hostile and malformed model folders, each
refused with an InputError naming the file, before any loader reads it and without writing
anything; and the published SD-v1.5, SD-v2.1 and SDXL configs, which must pass.

Each hostile case copies the session's tiny saved pipeline and applies one edit. The edit returns
the file the refusal must name.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import struct
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from conftest import snapshot
from genlineage.cli import main
from genlineage.errors import InputError
from genlineage.models import gate
from genlineage.models.gate import check_model_folder, check_safetensors_header
from genlineage.models.pipeline_io import check_pipeline_folder, load_pipeline
from genlineage.verify.suspect import check_sd_pipeline

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
VAE_WEIGHTS = "vae/diffusion_pytorch_model.safetensors"
GB = 1 << 30


# --- helpers ------------------------------------------------------------------------------------

def _edit_json(file: Path, change: Callable[[dict], None]) -> Path:
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))
    return file


def _set(file: str, key: str, value) -> Callable[[Path, Path], Path]:
    """An edit that sets ``key`` of the JSON ``file`` (relative to the folder) to ``value``."""
    return lambda folder, tmp: _edit_json(folder / file, lambda d: d.__setitem__(key, value))


def _write_safetensors(file: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    """A safetensors file by hand: 8 bytes little-endian header length, the header, the data."""
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(blob) if length is None else length) + blob + data)
    return file


def _tensor(dtype: str = "F32", shape=(4,), offsets=(0, 16)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


class _CreatesFile:
    """A pickle that creates a file when unpickled: what a hostile ``.bin`` does, harmlessly."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _payload(target: Path) -> bytes:
    return pickle.dumps(_CreatesFile(target))


@pytest.fixture()
def folder(saved_pipeline, tmp_path) -> Path:
    """A fresh copy of the tiny pipeline (built once per session) to break."""
    copy = tmp_path / "model"
    shutil.copytree(saved_pipeline, copy)
    return copy


# --- the hostile edits ------------------------------------------------------------------------

def _index(folder: Path, component: str, name: str, shards: list[str]) -> Path:
    """A shard index beside the real weights, naming ``shards``."""
    file = folder / component / name
    file.write_text(json.dumps({"metadata": {"total_size": 16}, "weight_map": {f"t{i}": s for i, s in enumerate(shards)}}))
    return file


def shard_dotdot(folder, tmp):
    (tmp / "outside.safetensors").write_bytes(b"x")
    return _index(folder, "unet", "diffusion_pytorch_model.safetensors.index.json", ["../../outside.safetensors"])


def shard_absolute(folder, tmp):
    return _index(folder, "unet", "diffusion_pytorch_model.safetensors.index.json", [str(tmp / "outside.safetensors")])


def shard_pickle(folder, tmp):  # transformers' index naming a .bin shard (which torch.load would unpickle)
    return _index(folder, "text_encoder", "model.safetensors.index.json", ["pytorch_model-00001-of-00001.bin"])


def shard_missing(folder, tmp):
    return _index(folder, "unet", "diffusion_pytorch_model.safetensors.index.json", ["gone-00001.safetensors"])


def shard_no_weight_map(folder, tmp):
    file = folder / "vae" / "diffusion_pytorch_model.safetensors.index.json"
    file.write_text(json.dumps({"metadata": {}}))
    return file


def pickle_file(relative: str) -> Callable[[Path, Path], Path]:
    def edit(folder, tmp):
        file = folder / relative
        torch.save({"x": torch.zeros(1)}, file)
        return file
    return edit


def link_outside(folder, tmp):
    (tmp / "elsewhere.json").write_text("{}")
    (folder / "unet" / "extra.json").symlink_to(tmp / "elsewhere.json")
    return folder / "unet" / "extra.json"


def link_weights_outside(folder, tmp):
    weights = folder / UNET_WEIGHTS
    shutil.move(weights, tmp / "weights.safetensors")
    weights.symlink_to(tmp / "weights.safetensors")
    return weights


def link_dir_outside(folder, tmp):
    shutil.move(folder / "vae", tmp / "vae")
    (folder / "vae").symlink_to(tmp / "vae", target_is_directory=True)
    return folder / "vae"


def link_loop(folder, tmp):
    a, b = folder / "unet" / "a.json", folder / "unet" / "b.json"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def link_dangling(folder, tmp):
    (folder / "tokenizer" / "vocab.json").symlink_to(folder / "tokenizer" / "nothing.json")
    return folder / "tokenizer" / "vocab.json"


def hard_link(folder, tmp):
    os.link(folder / UNET_WEIGHTS, tmp / "second_name.safetensors")
    return folder / UNET_WEIGHTS


def fifo(folder, tmp):
    os.mkfifo(folder / "unet" / "config.json.fifo")
    return folder / "unet" / "config.json.fifo"


def device_file(folder, tmp):
    target = folder / "scheduler" / "zero"
    try:
        os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # like /dev/zero: reads never end
    except (PermissionError, AttributeError):
        pytest.skip("creating a device file needs CAP_MKNOD")
    return target


def oversized_config(folder, tmp):
    file = folder / "unet" / "config.json"
    file.write_text(file.read_text() + " " * (gate.CONFIG_MAX_BYTES + 1))
    return file


def sparse_model_index(folder, tmp):  # 8 GB by its stat size, no disk: refused by stat alone
    file = folder / "model_index.json"
    with open(file, "r+b") as fh:
        fh.truncate(8 * GB)
    return file


def sparse_vocab(folder, tmp):
    file = folder / "tokenizer" / "vocab.json"
    with open(file, "wb") as fh:
        fh.truncate(4 * GB)
    return file


def sparse_unknown_suffix(folder, tmp):  # no loader reads it, but the fingerprint would hash all 64 GB
    file = folder / "unet" / "notes.md"
    with open(file, "wb") as fh:
        fh.truncate(64 * GB)
    return file


def sparse_merges(folder, tmp):
    file = folder / "tokenizer" / "merges.txt"
    with open(file, "wb") as fh:
        fh.truncate(gate.TOKENIZER_MAX_BYTES + 1)
    return file


def remote_code_padded(folder, tmp):  # past the old 1 MB scan, within the tokenizer bound
    file = folder / "tokenizer" / "tokenizer_config.json"
    data = json.loads(file.read_text())
    file.write_text("{" + " " * (2 << 20) + json.dumps(data)[1:-1] + ', "auto_map": {"AutoTokenizer": ["evil.Tok", null]}}')
    return file


def remote_code_escaped(folder, tmp):  # "auto\u005fmap" is "auto_map" to a JSON reader, not to a text scan
    file = folder / "unet" / "config.json"
    file.write_text(file.read_text().rstrip()[:-1] + ', "auto\\u005fmap": {"x": "evil.Model"}}')
    return file


def duplicate_key(folder, tmp):
    file = folder / "scheduler" / "scheduler_config.json"
    file.write_text(file.read_text().rstrip()[:-1] + ', "num_train_timesteps": 1000000000}')
    return file


def not_utf8(folder, tmp):
    file = folder / "vae" / "config.json"
    file.write_bytes(b'{"_class_name": "\xff\xfe"}')
    return file


def deeply_nested(folder, tmp):
    file = folder / "unet" / "config.json"
    file.write_text("[" * 200_000 + "]" * 200_000)
    return file


def index_not_object(folder, tmp):
    file = folder / "model_index.json"
    file.write_text("[1, 2, 3]")
    return file


def index_is_folder(folder, tmp):
    file = folder / "model_index.json"
    file.unlink()
    file.mkdir()
    return file


def component_bad_name(folder, tmp):
    return _edit_json(folder / "model_index.json", lambda d: d.__setitem__("../evil", ["diffusers", "UNet2DConditionModel"]))


def component_bad_class(folder, tmp):
    return _edit_json(folder / "model_index.json", lambda d: d.__setitem__("unet", ["diffusers", "os.system"]))


def too_deep(folder, tmp):
    deep = folder / "unet" / "a" / "b" / "c" / "d" / "e" / "f" / "g" / "h"
    deep.mkdir(parents=True)
    return deep


# --- safetensors edits (on the VAE's weights) -----------------------------------------------------

def st_empty(folder, tmp):
    (folder / VAE_WEIGHTS).write_bytes(b"")
    return folder / VAE_WEIGHTS


def st_short(folder, tmp):
    (folder / VAE_WEIGHTS).write_bytes(b"\x10\x00\x00")
    return folder / VAE_WEIGHTS


def st_truncated(folder, tmp):
    file = folder / VAE_WEIGHTS
    with open(file, "r+b") as fh:
        fh.truncate(file.stat().st_size // 2)
    return file


def st_length_beyond_file(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, {"w": _tensor()}, b"\0" * 16, length=1_000_000)


def st_length_huge(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, {"w": _tensor()}, b"\0" * 16, length=1 << 62)


def st_header_not_json(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, b"\xff" * 32, b"\0" * 16)


def st_header_not_object(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, b"[1, 2]", b"")


def st_huge_tensor(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, {"w": _tensor(shape=(10**9, 10**9), offsets=(0, 16))}, b"\0" * 16)


def st_offsets_beyond_file(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, {"w": _tensor(shape=(1 << 38,), offsets=(0, 1 << 40))}, b"\0" * 16)


def st_overlap(folder, tmp):
    header = {"a": _tensor(offsets=(0, 16)), "b": _tensor(offsets=(8, 24))}
    return _write_safetensors(folder / VAE_WEIGHTS, header, b"\0" * 24)


def st_wrong_dtype(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, {"w": _tensor(dtype="X99")}, b"\0" * 16)


def st_float8_dtype(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, {"w": _tensor(dtype="F8_E4M3", offsets=(0, 4))}, b"\0" * 4)


def st_bad_shape(folder, tmp):
    return _write_safetensors(folder / VAE_WEIGHTS, {"w": _tensor(shape=(-4,), offsets=(0, 16))}, b"\0" * 16)


def st_pickle_inside(folder, tmp):  # a pickle under a safetensors name: its first 8 bytes are no header
    (folder / VAE_WEIGHTS).write_bytes(_payload(tmp / "pwned_by_vae"))
    return folder / VAE_WEIGHTS


HOSTILE = [
    pytest.param(shard_dotdot, "not a file name", id="shard-index-dotdot"),
    pytest.param(shard_absolute, "not a file name", id="shard-index-absolute"),
    pytest.param(shard_pickle, "not .safetensors", id="shard-index-names-bin"),
    pytest.param(shard_missing, "which is not in", id="shard-index-missing-shard"),
    pytest.param(shard_no_weight_map, "without a 'weight_map'", id="shard-index-no-weight-map"),
    pytest.param(pickle_file("unet/diffusion_pytorch_model.bin"), "pickle weights.*never loads",
                 id="pickle-bin-beside-safetensors"),
    pytest.param(pickle_file("text_encoder/pytorch_model.pt"), "pickle weights", id="pickle-pt"),
    pytest.param(pickle_file("vae/weights.pth"), "pickle weights", id="pickle-pth"),
    pytest.param(pickle_file("model.ckpt"), "pickle weights", id="pickle-ckpt-at-root"),
    pytest.param(pickle_file("scheduler/state.PKL"), "pickle weights", id="pickle-pkl-any-case"),
    pytest.param(link_outside, "leads outside the model folder", id="link-outside"),
    pytest.param(link_weights_outside, "leads outside the model folder", id="link-weights-outside"),
    pytest.param(link_dir_outside, "leads outside the model folder", id="link-folder-outside"),
    pytest.param(link_loop, "link loop", id="link-loop"),
    pytest.param(link_dangling, "link to nothing", id="link-dangling"),
    pytest.param(hard_link, "hard link", id="hard-link"),
    pytest.param(fifo, "FIFO", id="fifo"),
    pytest.param(device_file, "character device", id="device-file"),
    pytest.param(oversized_config, "above the 1,048,576-byte bound", id="config-above-size-bound"),
    pytest.param(sparse_model_index, "refused unread", id="sparse-8GB-model-index"),
    pytest.param(sparse_vocab, "refused unread", id="sparse-4GB-tokenizer-vocab"),
    pytest.param(sparse_merges, "refused unread", id="sparse-tokenizer-merges"),
    pytest.param(sparse_unknown_suffix, "refused unread", id="sparse-64GB-file-of-unknown-kind"),
    pytest.param(_set("unet/config.json", "auto_map", {"AutoModel": "evil.Model"}), "remote or custom code",
                 id="remote-auto-map"),
    pytest.param(_set("text_encoder/config.json", "trust_remote_code", True), "remote or custom code",
                 id="remote-trust-remote-code"),
    pytest.param(_set("model_index.json", "custom_pipeline", "evil_pipeline"), "remote or custom code",
                 id="remote-custom-pipeline"),
    pytest.param(remote_code_padded, "remote or custom code", id="remote-code-padded-past-1MB"),
    pytest.param(_set("tokenizer/tokenizer_config.json", "fast_tokenizer_files", ["../../elsewhere/tokenizer.1.json"]),
                 "not a file of", id="tokenizer-file-dotdot"),
    pytest.param(_set("tokenizer/tokenizer_config.json", "fast_tokenizer_files", ["/etc/tokenizer.1.json"]),
                 "not a file of", id="tokenizer-file-absolute"),
    pytest.param(_set("tokenizer/tokenizer_config.json", "vocab_file", "sub/../../vocab.json"), "not a file of",
                 id="tokenizer-vocab-file-path"),
    pytest.param(_set("text_encoder/config.json", "attn_implementation", "kernels-community/flash-attn"),
                 "not one of transformers' own attention", id="attention-kernel-from-the-hub"),
    pytest.param(_set("text_encoder/config.json", "_attn_implementation", "my_kernel"),
                 "not one of transformers' own attention", id="attention-unknown-private-key"),
    pytest.param(remote_code_escaped, "remote or custom code", id="remote-code-unicode-escaped-key"),
    pytest.param(_set("model_index.json", "_class_name", "MyEvilPipeline"), "'MyEvilPipeline', not a Stable-Diffusion",
                 id="custom-pipeline-class"),
    pytest.param(_set("model_index.json", "unet", ["evil_library", "UNet"]), "from another library",
                 id="component-other-library"),
    pytest.param(component_bad_name, "not a plain folder name", id="component-name-is-a-path"),
    pytest.param(component_bad_class, "from another library", id="component-class-not-an-identifier"),
    pytest.param(duplicate_key, "twice", id="config-duplicate-key"),
    pytest.param(not_utf8, "not valid JSON", id="config-not-utf8"),
    pytest.param(deeply_nested, "not valid JSON", id="config-nested-200k-deep"),
    pytest.param(index_not_object, "not a pipeline index", id="model-index-not-an-object"),
    pytest.param(index_is_folder, "not a pipeline index", id="model-index-is-a-folder"),
    pytest.param(too_deep, "folders deep", id="folder-too-deep"),
    pytest.param(st_empty, "too short", id="safetensors-empty"),
    pytest.param(st_short, "too short", id="safetensors-3-bytes"),
    pytest.param(st_truncated, "truncated", id="safetensors-truncated"),
    pytest.param(st_length_beyond_file, "claims 1,000,000 bytes but the file holds", id="safetensors-header-length-beyond-file"),
    pytest.param(st_length_huge, "above the .*-byte bound", id="safetensors-header-length-huge"),
    pytest.param(st_header_not_json, "header is not JSON", id="safetensors-header-corrupt"),
    pytest.param(st_header_not_object, "not a JSON object", id="safetensors-header-not-object"),
    pytest.param(st_huge_tensor, "needs .* bytes but its offsets span 16", id="safetensors-huge-tensor"),
    pytest.param(st_offsets_beyond_file, "larger than the file", id="safetensors-offsets-beyond-file"),
    pytest.param(st_overlap, "gap or an overlap", id="safetensors-overlapping-tensors"),
    pytest.param(st_wrong_dtype, "dtype 'X99'", id="safetensors-unknown-dtype"),
    pytest.param(st_float8_dtype, "dtype 'F8_E4M3'", id="safetensors-float8-dtype"),
    pytest.param(st_bad_shape, "non-negative integers", id="safetensors-negative-shape"),
    pytest.param(st_pickle_inside, "not a valid safetensors file", id="safetensors-name-on-a-pickle"),
]


@pytest.mark.parametrize("edit, match", HOSTILE)
def test_hostile_folder_is_refused_naming_the_file_and_writing_nothing(folder, tmp_path, edit, match, monkeypatch):
    culprit = edit(folder, tmp_path)
    named = Path(os.path.realpath(culprit.parent)) / culprit.name
    read: list[Path] = []
    real_read = gate.read_bounded
    monkeypatch.setattr(gate, "read_bounded", lambda p, b: (read.append(Path(p)), real_read(p, b))[1])
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=match) as info:
        check_pipeline_folder(folder)
    assert str(named) in str(info.value), f"the refusal names {named}: {info.value}"
    assert snapshot(tmp_path) == before, "the gate writes nothing"
    if "refused unread" in match:
        assert named not in read, "an oversized file is refused by its stat size, never read"
    assert not list(tmp_path.glob("pwned*"))


# --- config values out of bounds --------------------------------------------------------------

OUT_OF_BOUNDS = [
    ("tokenizer/tokenizer_config.json", "model_max_length", 10**9),
    ("scheduler/scheduler_config.json", "num_train_timesteps", 10**9),
    ("unet/config.json", "sample_size", 10**6),
    ("unet/config.json", "sample_size", 0),
    ("unet/config.json", "sample_size", 8.5),
    ("unet/config.json", "in_channels", 10_000),
    ("unet/config.json", "block_out_channels", [16, 10**7]),
    ("unet/config.json", "block_out_channels", [16] * 100),
    ("unet/config.json", "layers_per_block", 10_000),
    ("unet/config.json", "attention_head_dim", 10**6),
    ("unet/config.json", "cross_attention_dim", True),
    ("unet/config.json", "transformer_layers_per_block", [1, 10**4]),
    ("vae/config.json", "latent_channels", 10**5),
    ("vae/config.json", "sample_size", "512"),
    ("text_encoder/config.json", "hidden_size", 10**7),
    ("text_encoder/config.json", "num_hidden_layers", 10**4),
    ("text_encoder/config.json", "num_attention_heads", 10**5),
    ("text_encoder/config.json", "intermediate_size", 10**8),
    ("text_encoder/config.json", "max_position_embeddings", 10**7),
    ("text_encoder/config.json", "vocab_size", 10**9),
]


@pytest.mark.parametrize("file, key, value", OUT_OF_BOUNDS,
                         ids=[f"{f.split('/')[0]}-{k}-{json.dumps(v)[:12]}" for f, k, v in OUT_OF_BOUNDS])
def test_config_value_out_of_bounds_is_refused(folder, file, key, value):
    _edit_json(folder / file, lambda d: d.__setitem__(key, value))
    with pytest.raises(InputError, match=f"{key}.*outside the bound") as info:
        check_pipeline_folder(folder)
    assert file.split("/")[-1] in str(info.value)


def test_nested_config_values_are_bounded_too(folder):
    _edit_json(folder / "text_encoder" / "config.json",
               lambda d: d.__setitem__("text_config", {"num_hidden_layers": 10**6}))
    with pytest.raises(InputError, match="num_hidden_layers.*outside the bound"):
        check_pipeline_folder(folder)


# --- the pickle that would create a file ------------------------------------------------------

def test_the_payload_does_create_a_file_when_unpickled(tmp_path):
    """The battery's pickle is live: unpickling it creates its file (so its absence means something)."""
    target = tmp_path / "proof"
    pickle.loads(_payload(target)).close()
    assert target.exists()


@pytest.mark.parametrize("where", ["unet/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin",
                                   "unet/diffusion_pytorch_model.safetensors"])
def test_a_file_creating_pickle_is_never_unpickled(folder, tmp_path, capsys, saved_pipeline, where):
    target = tmp_path / "pwned"
    (folder / where).write_bytes(_payload(target))
    for call in (check_pipeline_folder, load_pipeline, lambda p: check_sd_pipeline(p, "suspect")):
        with pytest.raises(InputError):
            call(folder)
        assert not target.exists()
    (tmp_path / "no_keys").mkdir()  # exists (the CLI's pre-check passes), holds no key set: the suspect is refused first
    code = main(["verify", "--source", str(saved_pipeline), "--keys", str(tmp_path / "no_keys"), "--profile", "smoke",
                 "--quiet", "--out", str(tmp_path / "out"), "--suspect", str(folder)])
    assert code == 2
    assert "suspect:" in capsys.readouterr().err
    assert not target.exists(), "the pickle was never unpickled"
    assert not (tmp_path / "out").exists(), "a refused run writes nothing"


# --- what must pass -------------------------------------------------------------------------

def test_the_tiny_pipeline_passes_and_loads(saved_pipeline):
    assert check_model_folder(saved_pipeline) == saved_pipeline
    assert check_safetensors_header(saved_pipeline / UNET_WEIGHTS)


def test_inside_links_and_legitimate_shards_pass(folder):
    """Links that stay inside, and an index whose shards are safetensors beside it, are fine."""
    unet = folder / "unet"
    weights = unet / "diffusion_pytorch_model.safetensors"
    shutil.move(weights, unet / "real.safetensors")
    weights.symlink_to("real.safetensors")
    save_file({"a": torch.zeros(2)}, str(unet / "shard-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3, dtype=torch.int64)}, str(unet / "shard-00002-of-00002.safetensors"))
    _index(folder, "unet", "diffusion_pytorch_model.safetensors.index.json",
           ["shard-00001-of-00002.safetensors", "shard-00002-of-00002.safetensors"])
    assert check_pipeline_folder(folder) == folder


def _tok_config(pad: str = "<|endoftext|>") -> dict:
    def token(text: str) -> dict:
        return {"__type": "AddedToken", "content": text, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}

    return {"add_prefix_space": False, "bos_token": token("<|startoftext|>"), "do_lower_case": True,
            "eos_token": token("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
            "name_or_path": "openai/clip-vit-large-patch14", "pad_token": pad,
            "special_tokens_map_file": "./special_tokens_map.json", "tokenizer_class": "CLIPTokenizer",
            "unk_token": token("<|endoftext|>")}


def _clip_text(hidden: int, layers: int, heads: int, inter: int, proj: int, act: str, arch: str) -> dict:
    return {"architectures": [arch], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
            "hidden_act": act, "hidden_size": hidden, "initializer_factor": 1.0, "initializer_range": 0.02,
            "intermediate_size": inter, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
            "model_type": "clip_text_model", "num_attention_heads": heads, "num_hidden_layers": layers,
            "pad_token_id": 1, "projection_dim": proj, "torch_dtype": "float32", "vocab_size": 49408}


def _unet(heads, blocks, cross: int, sample: int, down: list, up: list, **extra) -> dict:
    return {"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": heads,
            "block_out_channels": blocks, "center_input_sample": False, "cross_attention_dim": cross,
            "down_block_types": down, "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
            "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
            "norm_num_groups": 32, "out_channels": 4, "sample_size": sample, "up_block_types": up, **extra}


def _vae(sample: int, **extra) -> dict:
    return {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
            "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": sample,
            "up_block_types": ["UpDecoderBlock2D"] * 4, **extra}


SCHEDULER = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
             "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None}
SD1_DOWN = ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
SD1_UP = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
SAFETY_CHECKER = {  # SD-v1.5's safety_checker/config.json (CLIP ViT-L/14), the keys the bounds look at
    "_name_or_path": "CompVis/stable-diffusion-safety-checker", "architectures": ["StableDiffusionSafetyChecker"],
    "model_type": "clip", "projection_dim": 768, "logit_scale_init_value": 2.6592,
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "max_position_embeddings": 77, "max_length": 20,
                    "num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": 49408},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                      "num_hidden_layers": 24, "patch_size": 14, "image_size": 224}}
PREPROCESSOR = {"crop_size": 224, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
                "do_resize": True, "feature_extractor_type": "CLIPFeatureExtractor",
                "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                "resample": 3, "size": 224}


def _published(name: str) -> dict[str, dict]:
    """The configs of the published checkpoints (runwayml/stable-diffusion-v1-5,
    stabilityai/stable-diffusion-2-1, stabilityai/stable-diffusion-xl-base-1.0), written by hand."""
    if name == "sd-v1.5":
        return {
            "model_index.json": {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
                                 "feature_extractor": ["transformers", "CLIPImageProcessor"],
                                 "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
                                 "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
                                 "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
                                 "vae": ["diffusers", "AutoencoderKL"]},
            "unet/config.json": _unet(8, [320, 640, 1280, 1280], 768, 64, SD1_DOWN, SD1_UP),
            "vae/config.json": _vae(512),
            "text_encoder/config.json": _clip_text(768, 12, 12, 3072, 768, "quick_gelu", "CLIPTextModel"),
            "tokenizer/tokenizer_config.json": _tok_config(),
            "scheduler/scheduler_config.json": {"_class_name": "PNDMScheduler", "skip_prk_steps": True, **SCHEDULER},
            "safety_checker/config.json": SAFETY_CHECKER,
            "feature_extractor/preprocessor_config.json": PREPROCESSOR,
        }
    if name == "sd-v2.1":
        return {
            "model_index.json": {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.10.0.dev0",
                                 "feature_extractor": ["transformers", "CLIPImageProcessor"], "requires_safety_checker": False,
                                 "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
                                 "text_encoder": ["transformers", "CLIPTextModel"],
                                 "tokenizer": ["transformers", "CLIPTokenizer"],
                                 "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]},
            "unet/config.json": _unet([5, 10, 20, 20], [320, 640, 1280, 1280], 1024, 96, SD1_DOWN, SD1_UP,
                                      dual_cross_attention=False, num_class_embeds=None, only_cross_attention=False,
                                      upcast_attention=True, use_linear_projection=True),
            "vae/config.json": _vae(768),
            "text_encoder/config.json": _clip_text(1024, 23, 16, 4096, 512, "gelu", "CLIPTextModel"),
            "tokenizer/tokenizer_config.json": _tok_config("!"),
            "scheduler/scheduler_config.json": {"_class_name": "DDIMScheduler", "prediction_type": "v_prediction", **SCHEDULER},
            "feature_extractor/preprocessor_config.json": PREPROCESSOR,
        }
    assert name == "sdxl"
    return {
        "model_index.json": {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0.dev0",
                             "force_zeros_for_empty_prompt": True, "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                             "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
                             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]},
        "unet/config.json": _unet([5, 10, 20], [320, 640, 1280], 2048, 128,
                                  ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                                  ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                                  addition_embed_type="text_time", addition_embed_type_num_heads=64,
                                  addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                                  transformer_layers_per_block=[1, 2, 10], use_linear_projection=True,
                                  num_attention_heads=None, upcast_attention=None),
        "vae/config.json": _vae(1024, scaling_factor=0.13025, force_upcast=True),
        "text_encoder/config.json": _clip_text(768, 12, 12, 3072, 768, "quick_gelu", "CLIPTextModel"),
        "text_encoder_2/config.json": _clip_text(1280, 32, 20, 5120, 1280, "gelu", "CLIPTextModelWithProjection"),
        "tokenizer/tokenizer_config.json": _tok_config(),
        "tokenizer_2/tokenizer_config.json": _tok_config("!"),
        "scheduler/scheduler_config.json": {"_class_name": "EulerDiscreteScheduler", "interpolation_type": "linear",
                                            "prediction_type": "epsilon", "timestep_spacing": "leading",
                                            "use_karras_sigmas": False, **SCHEDULER},
    }


def _build_published(root: Path, name: str) -> Path:
    """A folder with the published configs, real-sized tokenizer files, and small stand-in
    weights (the gate reads headers, not shapes against configs). SDXL's UNet is sharded, as
    large checkpoints are."""
    for relative, config in _published(name).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(json.dumps(config, indent=2))
    vocab = {f"tok{i}</w>": i for i in range(49408)}  # vocab.json's shape: about 1 MB, as CLIP's is
    for tok in [p for p in root.iterdir() if p.name.startswith("tokenizer")]:
        (tok / "vocab.json").write_text(json.dumps(vocab))
        (tok / "merges.txt").write_text("#version: 0.2\n" + "t o\n" * 48894)
        (tok / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"}))
        (tok / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab}, "padding": None}))
    for component in [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("tokenizer", "scheduler", "feature"))]:
        weights = ("model.safetensors" if component.name.startswith(("text_encoder", "safety"))
                   else "diffusion_pytorch_model.safetensors")
        tensors = {"w": torch.zeros(4, 4), "h": torch.zeros(3, dtype=torch.float16)}
        if component.name.startswith("text_encoder"):
            tensors["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
        if name == "sdxl" and component.name == "unet":
            save_file({"w": tensors["w"]}, str(component / "diffusion_pytorch_model-00001-of-00002.safetensors"))
            save_file({"h": tensors["h"]}, str(component / "diffusion_pytorch_model-00002-of-00002.safetensors"))
            _index(root, "unet", "diffusion_pytorch_model.safetensors.index.json",
                   ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"])
        else:
            save_file(tensors, str(component / weights))
        if name == "sd-v2.1" and component.name in ("unet", "vae"):
            save_file({"w": torch.zeros(4, 4, dtype=torch.float16)}, str(component / "diffusion_pytorch_model.fp16.safetensors"))
    return root


@pytest.mark.parametrize("name", ["sd-v1.5", "sd-v2.1", "sdxl"])
def test_published_sd_folders_pass_the_gate(tmp_path, name):
    folder = _build_published(tmp_path / name, name)
    assert check_pipeline_folder(folder) == folder
    assert (folder / "tokenizer" / "tokenizer.json").stat().st_size > 1_000_000


def test_bounds_admit_the_published_values_with_room():
    """Every bounded value of the three published configs lies well inside its bound."""
    for name in ("sd-v1.5", "sd-v2.1", "sdxl"):
        for config in _published(name).values():
            for key, value in gate._walk_json(config):
                if key in gate.CONFIG_BOUNDS and value is not None:
                    low, high = gate.CONFIG_BOUNDS[key]
                    for v in (value if isinstance(value, list) else [value]):
                        assert low <= v and 2 * v <= high, (name, key, v)


# --- finite or refused (issue 26.1) -------------------------------------------------------------

def _non_finite_json(file: str, key: str, text: str) -> Callable[[Path, Path], Path]:
    """An edit that writes ``"key": <text>`` into the JSON ``file`` as raw text: ``NaN``,
    ``Infinity`` and ``1e999`` are what Python's reader turns into non-finite floats."""
    def edit(folder, tmp):
        path = _edit_json(folder / file, lambda d: d.__setitem__(key, "<raw>"))
        path.write_text(path.read_text().replace('"<raw>"', text))
        return path
    return edit


NON_FINITE_CONFIGS = [
    pytest.param(_non_finite_json("vae/config.json", "scaling_factor", "NaN"), id="vae-scaling-factor-NaN"),
    pytest.param(_non_finite_json("unet/config.json", "norm_eps", "Infinity"), id="unet-norm-eps-Infinity"),
    pytest.param(_non_finite_json("scheduler/scheduler_config.json", "trained_betas", "[0.001, NaN, 0.002]"),
                 id="scheduler-trained-betas-NaN-in-a-list"),
    pytest.param(_non_finite_json("text_encoder/config.json", "layer_norm_eps", "1e999"), id="overflowing-literal"),
    pytest.param(_non_finite_json("unet/config.json", "extra", '{"nested": -Infinity}'), id="nested-minus-Infinity"),
]


@pytest.mark.parametrize("edit", NON_FINITE_CONFIGS)
def test_a_config_number_that_is_not_finite_is_refused_naming_the_file(folder, tmp_path, edit):
    culprit = edit(folder, tmp_path)
    with pytest.raises(InputError, match="not a finite number") as info:
        check_pipeline_folder(folder)
    assert str(culprit) in str(info.value)


def _poison(file: Path, value: float, dtype: torch.dtype = torch.float32) -> Path:
    """The safetensors ``file`` rewritten with one value of its largest tensor set to ``value``, in ``dtype``."""
    from safetensors.torch import load_file

    tensors = load_file(str(file))
    name = max(tensors, key=lambda k: tensors[k].numel())
    tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    tensors[name].view(-1)[tensors[name].numel() // 2] = value
    save_file(tensors, str(file))
    return file


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_the_streaming_pass_finds_a_single_non_finite_weight_in_every_float_dtype(tmp_path, dtype, value):
    good = torch.linspace(-3e4, 3e4, 5000).to(dtype)  # large finite values: exponents near, never at, the top
    save_file({"a": torch.zeros(3, dtype=torch.int64), "w": good, "z": torch.ones(7, dtype=dtype)},
              str(tmp_path / "good.safetensors"))
    gate.check_finite_weights(tmp_path / "good.safetensors")
    bad = good.clone()
    bad[4321] = value
    save_file({"a": torch.zeros(3, dtype=torch.int64), "w": bad}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(InputError, match="tensor 'w' holds values that are not finite"):
        gate.check_finite_weights(tmp_path / "bad.safetensors")


def test_the_streaming_pass_reads_in_bounded_chunks(tmp_path, monkeypatch):
    """A tensor larger than the chunk is read in pieces, and a NaN in its last piece is still found."""
    monkeypatch.setattr(gate, "FINITE_CHUNK_BYTES", 4096)
    values = torch.zeros(10_000)
    values[-1] = float("nan")
    save_file({"w": values}, str(tmp_path / "w.safetensors"))
    with pytest.raises(InputError, match="not finite"):
        gate.check_finite_weights(tmp_path / "w.safetensors")


@pytest.mark.parametrize("weights", [UNET_WEIGHTS, VAE_WEIGHTS, "text_encoder/model.safetensors"])
def test_a_model_with_a_nan_weight_is_refused_at_load_naming_the_file(folder, weights):
    _poison(folder / weights, float("nan"))
    with pytest.raises(InputError, match="not finite") as info:
        load_pipeline(folder)
    assert str(folder / weights) in str(info.value)


def test_a_nan_suspect_is_refused_by_verify_with_exit_2(folder, saved_pipeline, tmp_path, capsys):
    from conftest import verify_inputs

    _poison(folder / UNET_WEIGHTS, float("nan"))
    keys, controls = verify_inputs(tmp_path)
    code = main(["verify", "--source", str(saved_pipeline), "--keys", str(keys), "--controls", str(controls),
                 "--profile", "smoke", "--quiet", "--out", str(tmp_path / "out"), "--suspect", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and "suspect:" in err and "not finite" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists(), "a refused run leaves no --out"


def test_file_keys_naming_the_folders_own_files_and_builtin_attention_pass(folder):
    _edit_json(folder / "tokenizer" / "tokenizer_config.json",
               lambda d: d.update(special_tokens_map_file="./special_tokens_map.json", tokenizer_file="tokenizer.json"))
    _edit_json(folder / "text_encoder" / "config.json", lambda d: d.update(attn_implementation="sdpa"))
    assert check_pipeline_folder(folder) == folder


def test_a_lora_with_a_nan_factor_is_refused_at_load_naming_its_file(saved_pipeline, tmp_path):
    from genlineage.models.lora import DEFAULT_TARGETS, LoraModel, add_lora, write_lora_weights
    from genlineage.models.pipeline_io import load_lora

    unet = load_pipeline(saved_pipeline).unet
    add_lora(unet, 2, None, DEFAULT_TARGETS)
    lora = write_lora_weights(unet, tmp_path / "lora", 2, None, DEFAULT_TARGETS)
    load_lora(LoraModel(lora, saved_pipeline))  # the intact file loads
    _poison(lora, float("nan"))
    with pytest.raises(InputError, match="not finite") as info:
        load_lora(LoraModel(lora, saved_pipeline))
    assert str(lora) in str(info.value)
