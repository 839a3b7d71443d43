"""The one gate every model folder passes before any loader reads a byte of it.

A suspect, a shadow, a source given to ``verify`` or a base in the paper profile is a folder that
someone else wrote. The loaders (diffusers, transformers, tokenizers) trust what they find: an
index file's shard names are joined onto the folder, a ``.bin`` goes to ``torch.load`` (which
unpickles, i.e. runs code), configs are read whole and their numbers size tensors and loops. So
:func:`check_model_folder` looks at everything first, reading only bounded amounts, and refuses
with an :class:`~genlineage.errors.InputError` naming the file and the fix. It writes nothing.

What it refuses:

- links that leave the folder, link loops, dangling links, hard links (a regular file with more
  than one name: its other name may lie outside and change under us), FIFOs, sockets and devices;
  two exceptions, by who wrote the folder (:class:`Trust`): a folder below genlineage's own data
  root may hold hard links (a fine-tune links its base's frozen files instead of copying them),
  and the owner's own folders (bases, sources, shadows) may hold hard links and may be Hugging
  Face cache snapshots, whose files link into the repository's ``blobs/`` (``Trust(owner=True)``;
  never a suspect);
- any pickle-format file (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``, ...) anywhere;
- any file above its size bound (by its stat size, so a sparse multi-GB file is refused without
  being read; files of unknown kind too, since the fingerprint hashes them), a JSON file that is
  not UTF-8 JSON, or one with a key given twice;
- a config naming remote code (``auto_map``, ``trust_remote_code``, ``custom_pipeline``), a file
  outside the folder (``fast_tokenizer_files: ["../../x.json"]`` and the other :data:`FILE_KEYS`),
  or an attention implementation that is not transformers' own (a Hub kernel);
- a ``model_index.json`` naming a pipeline class other than the Stable-Diffusion ones, or a
  component from a library other than diffusers/transformers;
- a config value outside its bound (tokenizer length, timesteps, sample size, channels, layers, heads);
- an index file whose shards are not bare ``.safetensors`` names of files in the same folder;
- a safetensors file whose header (parsed here, bounded) is truncated, corrupt, claims tensors the
  file does not hold, or uses a dtype outside the allowed set;
- a number in any JSON file that is not finite (``NaN``, ``Infinity``, or ``1e999``, which Python's
  reader turns into infinity): a NaN ``scaling_factor`` or ``trained_betas`` makes every image NaN.

:func:`check_finite_weights` is the one check that reads the weights' values: a streaming pass
over a safetensors file that refuses any NaN or infinite float. It runs when a model is loaded
(:func:`~genlineage.models.pipeline_io.load_pipeline`), not here, because it reads every byte.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .. import untrusted
from ..errors import InputError
from ..untrusted import file_kind, is_json_int, no_duplicate_keys, open_regular, parse_json

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHTED = ("unet", "vae", "text_encoder")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")
TOKENIZER_TEXT_SUFFIXES = (".txt", ".model", ".jinja")  # merges.txt, sentencepiece models, chat templates

# Stable-Diffusion pipeline classes (SD-v1.x/v2.x and SDXL, text-to-image, img2img, inpainting):
# the classes whose folders hold only the components loaded here. Anything else may need code.
SD_PIPELINE_CLASSES = frozenset({
    "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
    "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline",
})
# Libraries a model_index.json component may come from: diffusers, transformers, and the diffusers
# pipeline module SD-v1.x names for its safety checker ("stable_diffusion").
COMPONENT_LIBRARIES = frozenset({"diffusers", "transformers", "stable_diffusion", "stable_diffusion_xl"})
REMOTE_CODE_KEYS = frozenset({"auto_map", "trust_remote_code", "custom_pipeline", "_custom_pipeline"})
# Config keys whose values name files a loader opens (transformers joins ``fast_tokenizer_files``
# onto the tokenizer's folder, so "../../x.json" or an absolute name reads a file the gate never
# saw): each must be a bare name of the folder (a leading "./" allowed, as SD-v1.5's
# ``special_tokens_map_file`` has it).
FILE_KEYS = frozenset({"fast_tokenizer_files", "tokenizer_file", "vocab_file", "merges_file", "special_tokens_map_file",
                       "added_tokens_file", "tokenizer_config_file", "chat_template_file", "spm_file"})
# transformers' own attention implementations; any other value (e.g. "kernels-community/...")
# asks it to fetch and run a kernel from the Hub.
ATTENTION_KEYS = frozenset({"attn_implementation", "_attn_implementation"})
BUILTIN_ATTENTION = frozenset({"eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"})
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

# Walk bounds. A diffusers SD/SDXL folder has 20-60 entries, two levels deep.
MAX_ENTRIES = 10_000
MAX_DEPTH = 8

# File-size bounds, checked on the stat size before anything is read.
CONFIG_MAX_BYTES = 1 * MiB          # model_index.json, config.json, scheduler_config.json, genlineage.json: SDXL's are < 4 KiB
OTHER_FILE_MAX_BYTES = 16 * MiB     # any other file (README.md, .gitattributes, a model card's picture): no loader reads
                                    # it, but the fingerprint hashes every file of a component
INDEX_MAX_BYTES = 16 * MiB          # *.safetensors.index.json: SDXL UNet's (about 1,700 tensors) is < 200 KiB
TOKENIZER_MAX_BYTES = 32 * MiB      # tokenizer files: CLIP's tokenizer.json is 2.2 MB, vocab.json 0.9 MB, merges.txt 0.5 MB
WEIGHT_FILE_MAX_BYTES = 32 * GiB    # one .safetensors file: SDXL's UNet in float32 is 10.3 GB
SAFETENSORS_HEADER_MAX_BYTES = 16 * MiB  # SDXL UNet's header is < 300 KiB (safetensors itself allows 100 MB)
SAFETENSORS_MAX_TENSORS = 100_000   # SDXL UNet holds about 1,700
SAFETENSORS_MAX_RANK = 8            # SD tensors have rank 1-4
# dtypes a Stable-Diffusion checkpoint uses (weights in F16/BF16/F32/F64; CLIP's position_ids in I64),
# with their item sizes. Float8, complex and unknown strings are refused.
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "F16": 2, "BF16": 2, "I32": 4, "F32": 4,
                      "I64": 8, "F64": 8}

# Config-value bounds (inclusive), applied to these keys wherever they appear in a component's
# config (nested dicts too), as an integer or a list of integers. The comment says what the three
# published architectures use: SD-v1.5 / SD-v2.1 / SDXL.
CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "model_max_length": (1, 2048),          # tokenizer padding length: 77 / 77 / 77
    "max_position_embeddings": (1, 2048),   # CLIP text: 77 / 77 / 77
    "num_train_timesteps": (1, 10_000),     # scheduler: 1000 / 1000 / 1000
    "sample_size": (1, 4096),               # UNet latent 64 / 96 / 128; VAE pixels 512 / 768 / 1024
    "in_channels": (1, 64),                 # UNet 4 (inpainting 9); VAE 3
    "out_channels": (1, 64),                # UNet 4; VAE 3
    "latent_channels": (1, 64),             # VAE 4
    "block_out_channels": (1, 8192),        # UNet up to 1280; VAE up to 512
    "layers_per_block": (1, 32),            # UNet 2; VAE 2
    "transformer_layers_per_block": (1, 64),  # 1 / 1 / [1, 2, 10]
    "attention_head_dim": (1, 1024),        # 8 / [5, 10, 20, 20] / [5, 10, 20]; CLIP vision 64
    "num_attention_heads": (1, 1024),       # UNet null; CLIP text 12 / 16 / 12 and 20
    "cross_attention_dim": (1, 16_384),     # 768 / 1024 / 2048
    "norm_num_groups": (1, 1024),           # 32
    "hidden_size": (1, 16_384),             # CLIP text 768 / 1024 / 768 and 1280
    "intermediate_size": (1, 65_536),       # 3072 / 4096 / 3072 and 5120
    "num_hidden_layers": (1, 128),          # 12 / 23 / 12 and 32
    "vocab_size": (1, 1_048_576),           # 49408
    "projection_dim": (1, 16_384),          # 768 / 512 / 768 and 1280
    "addition_time_embed_dim": (1, 16_384),  # SDXL 256
    "projection_class_embeddings_input_dim": (1, 1_048_576),  # SDXL 2816
}
MAX_BOUNDED_LIST = 16  # a bounded key's list (one value per block): SD has 3-4 blocks


@dataclass(frozen=True)
class Trust:
    """What a folder may hold beyond the strict rules, by who wrote it.

    ``own_roots``: folders genlineage writes its models into (its data roots); a model folder below
    one may hold hard links, because its fine-tunes link the frozen files of the base they were
    made from (anyone able to change that base can change the folder itself). ``owner``: the
    model owner's own folders (bases, sources, shadows): hard links anywhere (a base whose files a
    fine-tune linked has two names for them) and Hugging Face cache snapshots
    (``models--org--name/snapshots/<rev>``, whose files link into ``models--org--name/blobs/``).
    A suspect is never the owner's."""

    own_roots: tuple[Path, ...] = ()
    owner: bool = False

    def vouches_for(self, folder: str | Path) -> bool:
        """Whether ``folder`` is known to be genlineage's or the owner's: the owner's trust, or a
        folder (by its real path) below one of genlineage's own roots."""
        real = Path(os.path.realpath(folder))
        return self.owner or any(real.is_relative_to(Path(os.path.realpath(own))) for own in self.own_roots)


STRICT = Trust()


def snapshot_repository(folder: Path) -> Path | None:
    """The cache repository folder of a Hugging Face snapshot (``.../models--x/snapshots/<rev>``
    beside ``.../models--x/blobs``), or None for any other folder."""
    folder = Path(os.path.realpath(folder))
    repo = folder.parent.parent
    if folder.parent.name == "snapshots" and (repo / "blobs").is_dir():
        return repo
    return None


@dataclass(frozen=True)
class Entry:
    """One file of the folder as the walk saw it: where it is, and its (link-followed) stat."""

    path: Path
    st: os.stat_result


def check_model_folder(path: str | Path, trust: Trust = STRICT) -> Path:
    """Refuse anything that is not a safe Stable-Diffusion pipeline folder; the folder if it is.

    Runs before any loader touches the folder, reads only bounded amounts and writes nothing.
    """
    path = Path(path)
    _check_is_pipeline_folder(path)
    root = Path(os.path.realpath(path))
    links_within = (snapshot_repository(root) if trust.owner else None) or root
    hard_links = trust.vouches_for(root)
    files = _walk(root, links_within, hard_links)
    for entry in files:
        _check_file(entry, root)
    texts = {e.path: read_model_json(e.path, _size_bound(e.path, root)) for e in files if e.path.name.endswith(".json")}
    for file, data in texts.items():
        _check_no_remote_code(file, data)
        _check_no_reach_elsewhere(file, data)
        _check_finite_numbers(file, data)
    index = texts.get(root / "model_index.json")
    _check_model_index(path / "model_index.json", index)
    _check_components(path, root, index)
    for file, data in texts.items():
        if file.parent != root and file.name.endswith("config.json"):
            _check_config_bounds(file, data)
        if file.name.endswith(".index.json"):
            _check_shard_index(file, data)
    for entry in files:
        if entry.path.name.endswith(".safetensors"):
            check_safetensors_header(entry.path)
    return path


def _check_is_pipeline_folder(path: Path) -> None:
    """The cheap refusals first: no folder, a file, no model_index.json."""
    if not os.path.lexists(path):
        raise InputError(f"model folder {path} does not exist; pass the folder that "
                         "StableDiffusionPipeline.save_pretrained wrote (it holds model_index.json).")
    if not path.is_dir():
        raise InputError(f"model path {path} is a file, not a folder; pass a diffusers pipeline folder.")
    if not os.path.lexists(path / "model_index.json"):
        raise InputError(f"{path} is not a diffusers pipeline folder: it has no model_index.json. "
                         "Save the model with StableDiffusionPipeline.save_pretrained(folder).")


# --- the walk: links, special files, hard links ---------------------------------------------------

def _walk(root: Path, links_within: Path, hard_links: bool = False) -> list[Entry]:
    """Every file below ``root`` (links followed only after they are shown to stay inside
    ``links_within``: the folder, or its snapshot's repository), or a refusal for the first entry
    that is not a plain file, a folder or an inside link."""
    files: list[Entry] = []
    stack: list[tuple[Path, int]] = [(root, 0)]
    seen = 0
    while stack:
        folder, depth = stack.pop()
        try:
            names = sorted(os.listdir(folder))
        except OSError as err:
            raise InputError(f"{folder} cannot be listed ({err.strerror}); make the model folder readable.") from None
        for name in names:
            seen += 1
            if seen > MAX_ENTRIES:
                raise InputError(f"{root} holds more than {MAX_ENTRIES} files and folders; a pipeline folder holds "
                                 "a few dozen. Pass the pipeline folder itself, without unrelated files.")
            item = folder / name
            st = _entry_stat(item, links_within, hard_links)
            if stat.S_ISDIR(st.st_mode):
                if item.is_symlink():
                    if not Path(os.path.realpath(item)).is_relative_to(root):  # a snapshot links files, not folders
                        raise InputError(f"{item} links to the folder {os.path.realpath(item)}, outside the model "
                                         f"folder {root}; copy the real files into the folder instead.")
                    continue  # an inside link to a folder: that folder is walked where it really lies
                if depth + 1 > MAX_DEPTH:
                    raise InputError(f"{item} lies more than {MAX_DEPTH} folders deep; a pipeline folder is two deep. "
                                     "Remove the nested folders.")
                stack.append((item, depth + 1))
            else:
                files.append(Entry(item, st))
    return files


def _entry_stat(item: Path, root: Path, hard_links: bool = False) -> os.stat_result:
    """The stat of what ``item`` names, once shown to be a folder, or a regular file (with one name
    unless ``hard_links``), inside ``root``."""
    st = os.lstat(item)
    if stat.S_ISLNK(st.st_mode):
        st = _link_target_stat(item, root)
    if stat.S_ISDIR(st.st_mode):
        return st
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{item} is a {file_kind(st.st_mode)}, not a file; a model folder holds only files and "
                         "folders (reading a FIFO blocks, a device never ends). Remove it.")
    if st.st_nlink > 1 and not hard_links:
        raise InputError(f"{item} is a hard link ({st.st_nlink} names for one file), so it may be changed through a "
                         "name outside the model folder; replace it by a copy (cp, not cp -l or ln). (genlineage's own "
                         "fine-tunes link their base's frozen files: for one of those, set GENLINEAGE_DATA to the data "
                         "root it lies below.)")
    return st


def _link_target_stat(item: Path, root: Path) -> os.stat_result:
    """Follow a link only if it resolves, without a loop, to a place inside ``root``."""
    try:
        st = os.stat(item)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(f"{item} is a link loop (it leads back to itself); remove the link and copy the real "
                             "file into the model folder.") from None
        raise InputError(f"{item} is a link to nothing ({err.strerror}); remove it or copy the real file in its "
                         "place.") from None
    target = Path(os.path.realpath(item))
    if not target.is_relative_to(root):
        hint = (" It looks like a Hugging Face cache snapshot (its files link into blobs/): that is accepted for your "
                "own base folders only; for a suspect, download with `huggingface-cli download REPO --local-dir DIR` "
                "(real files)." if target.parent.name == "blobs" else "")
        raise InputError(f"{item} is a link that leads outside the model folder {root} (to {target}); "
                         f"copy the real files into the folder instead.{hint}")
    return st


# --- per-file rules: pickles and sizes --------------------------------------------------------

def _check_file(entry: Entry, root: Path) -> None:
    """Refuse pickle-format files by name, and files above their size bound by their stat size."""
    name = entry.path.name.lower()
    if name.endswith(PICKLE_SUFFIXES):
        raise InputError(f"{entry.path} holds pickle weights, which genlineage never loads (unpickling runs code "
                         "the file carries): delete it, or convert it to .safetensors in a trusted environment "
                         "first (a pickle anywhere in the folder is refused, even beside safetensors weights).")
    bound = _size_bound(entry.path, root)
    if entry.st.st_size > bound:
        raise InputError(f"{entry.path} is {entry.st.st_size:,} bytes, above the {bound:,}-byte bound for this kind of "
                         "file (it is refused unread); a Stable-Diffusion folder's are far smaller. Replace it "
                         "with the file save_pretrained writes.")


def _size_bound(path: Path, root: Path) -> int:
    """The most bytes a file of this name may hold: every file has one, since even a file no
    loader reads is hashed into the model's fingerprint (a 64 GB sparse ``notes.md`` would be read whole)."""
    name = path.name.lower()
    in_tokenizer = any(part.startswith("tokenizer") for part in path.relative_to(root).parts[:-1])
    if name.endswith(".safetensors"):
        return WEIGHT_FILE_MAX_BYTES
    if name.endswith(".index.json"):
        return INDEX_MAX_BYTES
    if in_tokenizer or name.endswith(TOKENIZER_TEXT_SUFFIXES):
        return TOKENIZER_MAX_BYTES
    if name.endswith(".json"):
        return CONFIG_MAX_BYTES
    return OTHER_FILE_MAX_BYTES


REFETCH = "replace it with the file save_pretrained writes"


def _open_regular(path: Path) -> int:
    return open_regular(path, "remove it", unreadable_fix="make the model folder readable")


def read_bounded(path: str | Path, bound: int) -> bytes:
    """At most ``bound`` bytes of one of a model folder's files, or a refusal (``untrusted.read_bounded``)."""
    return untrusted.read_bounded(path, bound, REFETCH, unreadable_fix="make the model folder readable")


def read_model_json(path: str | Path, bound: int | None = CONFIG_MAX_BYTES) -> Any:
    """A JSON file of a model folder someone else made, read under a size bound, refused if it is
    not UTF-8 JSON or gives a key twice (two readers could then see two different configs). Not
    :func:`genlineage.io.read_json`, which reads the files this tool wrote itself."""
    blob = read_bounded(path, CONFIG_MAX_BYTES if bound is None else bound)
    return parse_json(blob, path, "re-save the model with save_pretrained (it writes valid JSON, each key once)")


# --- what the JSON says ---------------------------------------------------------------------

def _walk_json(data: Any) -> Iterable[tuple[str, Any]]:
    """Every (key, value) pair of every object nested in ``data``."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _check_no_remote_code(file: Path, data: Any) -> None:
    """Refuse configs asking for code shipped with the model (transformers' auto_map, diffusers'
    custom pipelines), wherever in the file they sit."""
    for key, value in _walk_json(data):
        if key in REMOTE_CODE_KEYS or (isinstance(value, str) and value == "trust_remote_code"):
            raise InputError(f"{file} asks for remote or custom code ('{key}'); genlineage never runs code shipped "
                             "with a model. Remove the auto_map/custom_pipeline/trust_remote_code entries.")


def _check_no_reach_elsewhere(file: Path, data: Any) -> None:
    """Refuse config values that make a loader read beyond the checked folder: a file key naming
    anything but a bare file name (it would be read unbounded, unchecked and unfingerprinted, and
    could be swapped after the gate ran), or an attention implementation that is not built in."""
    for key, value in _walk_json(data):
        if key in FILE_KEYS and value is not None:
            for name in value if isinstance(value, list) else [value]:
                bare = name[2:] if isinstance(name, str) and name.startswith("./") else name
                if not (isinstance(bare, str) and bare not in ("", ".", "..") and not any(c in bare for c in "/\\\0")):
                    raise InputError(f"{file}: '{key}' names {json.dumps(name)[:120]}, not a file of {file.parent}; a "
                                     "loader would read it from outside the checked folder. Remove the entry (the "
                                     "loader finds the folder's own files), or re-save the tokenizer with save_pretrained.")
        if key in ATTENTION_KEYS and value is not None and value not in BUILTIN_ATTENTION:
            raise InputError(f"{file}: '{key}' is {json.dumps(value)[:120]}, not one of transformers' own attention "
                             f"implementations ({', '.join(sorted(BUILTIN_ATTENTION))}); another value fetches and runs "
                             "a kernel from the Hub. Remove the entry.")


def _check_finite_numbers(file: Path, data: Any) -> None:
    """Refuse a number that is not finite anywhere in a config: Python's JSON reader accepts
    ``NaN`` and ``Infinity`` (and reads ``1e999`` as infinity), and one such ``scaling_factor``,
    ``norm_eps`` or ``trained_betas`` entry turns every image the model draws into NaN, which
    pixels would hide as black."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise InputError(f"{file}: '{key or '(top level)'}' is {item}, not a finite number; a model whose configs "
                             "hold NaN or infinity draws NaN images. Fix the config, or re-save the model with "
                             "save_pretrained.")
        if isinstance(item, dict):
            stack.extend(item.items())
        elif isinstance(item, list):
            stack.extend((key, value) for value in item)


def _check_model_index(file: Path, index: Any) -> None:
    """A Stable-Diffusion pipeline class, and components from diffusers/transformers only."""
    if not isinstance(index, dict):
        raise InputError(f"{file} is not a pipeline index (a JSON object naming the components); re-save the pipeline.")
    cls = index.get("_class_name")
    if cls not in SD_PIPELINE_CLASSES:
        raise InputError(f"{file} names the pipeline class {cls!r}, not a Stable-Diffusion pipeline "
                         f"({', '.join(sorted(SD_PIPELINE_CLASSES))}); a custom class may need code genlineage "
                         "never runs. Export the model with StableDiffusionPipeline.save_pretrained.")
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list):
            continue
        if not IDENTIFIER.fullmatch(name):
            raise InputError(f"{file} names a component {name!r} that is not a plain folder name; re-save the pipeline.")
        _check_component_entry(file, name, value)


def _check_component_entry(file: Path, name: str, value: list) -> None:
    """``[library, class]`` with the library diffusers or transformers, or ``[null, null]``."""
    if value == [None, None]:
        return
    ok = (len(value) == 2 and value[0] in COMPONENT_LIBRARIES and isinstance(value[1], str)
          and IDENTIFIER.fullmatch(value[1]) is not None)
    if not ok:
        raise InputError(f"{file} gives component '{name}' as {json.dumps(value)[:200]}; a Stable-Diffusion pipeline's "
                         f"components come from {', '.join(sorted(COMPONENT_LIBRARIES))} as [library, class]. "
                         "A component from another library needs code genlineage never runs; re-save the pipeline.")


def _check_components(path: Path, root: Path, index: dict) -> None:
    """Each component folder is there, and each weighted one holds safetensors weights."""
    for name in COMPONENTS:
        if not (root / name).is_dir():
            listed = sorted(k for k in index if not k.startswith("_"))
            raise InputError(f"{path} has no '{name}/' folder; a Stable-Diffusion pipeline folder needs "
                             f"{', '.join(COMPONENTS)} (model_index.json lists {listed}).")
    for name in WEIGHTED:
        if not list((root / name).glob("*.safetensors")):
            raise InputError(f"{path / name} has no .safetensors weights; save the model with "
                             "save_pretrained(..., safe_serialization=True).")


def _check_config_bounds(file: Path, data: Any) -> None:
    """Refuse numbers that size tensors, loops or padding beyond what any SD/SDXL model uses."""
    for key, value in _walk_json(data):
        if key in CONFIG_BOUNDS and value is not None:
            _check_bounded_value(file, key, value, *CONFIG_BOUNDS[key])


def _check_bounded_value(file: Path, key: str, value: Any, low: int, high: int) -> None:
    values = value if isinstance(value, list) else [value]
    if len(values) > MAX_BOUNDED_LIST or not all(is_json_int(v) and low <= v <= high for v in values):
        raise InputError(f"{file}: '{key}' is {json.dumps(value)[:100]}, outside the bound [{low}, {high}] (an integer, "
                         f"or a list of at most {MAX_BOUNDED_LIST}) that admits SD-v1.5, SD-v2.1 and SDXL; "
                         "fix the config, or re-save the model with save_pretrained.")


# --- sharded weights --------------------------------------------------------------------------

def _check_shard_index(file: Path, data: Any) -> None:
    """Each shard an index names is a bare ``.safetensors`` name of a file beside the index: the
    loader joins the name onto the folder, so ``../`` or an absolute name would leave it."""
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{file} is an index of sharded weights without a 'weight_map'; re-save the model.")
    for shard in sorted({v if isinstance(v, str) else "" for v in weight_map.values()}):  # a non-name is refused
        _check_shard_name(file, shard)


def _check_shard_name(file: Path, shard: str) -> None:
    bare = shard not in ("", ".", "..") and not any(c in shard for c in "/\\\0") and not os.path.isabs(shard)
    if not bare:
        raise InputError(f"{file} names the shard {shard!r}, which is not a file name in {file.parent} (a path would "
                         "lead the loader elsewhere); re-save the model so that its shards lie beside the index.")
    if not shard.lower().endswith(".safetensors"):
        raise InputError(f"{file} names the shard {shard!r}, which is not .safetensors (the loader would unpickle it); "
                         "convert the shards to safetensors in a trusted environment first.")
    if not (file.parent / shard).is_file():
        raise InputError(f"{file} names the shard {shard!r}, which is not in {file.parent}; copy the missing shard "
                         "or re-save the model.")


# --- weight variants ------------------------------------------------------------------------------

VARIANT_WEIGHTS = re.compile(r"(?:diffusion_pytorch_model|model)(?:\.(?P<variant>[A-Za-z0-9_]+))?"
                             r"(?:-\d+-of-\d+)?\.safetensors")


def weights_variant(folder: str | Path) -> str | None:
    """The weights variant a component folder holds: None when it has the plain files
    (``diffusion_pytorch_model.safetensors``), else the one variant it has (a download of only
    ``*.fp16.safetensors`` gives ``fp16``); more than one variant and no plain file is refused."""
    found = {m.group("variant") for f in Path(folder).glob("*.safetensors")
             if (m := VARIANT_WEIGHTS.fullmatch(f.name))}
    if None in found or not found:
        return None
    if len(found) > 1:
        raise InputError(f"{folder} holds the weight variants {sorted(found)} and no plain weights; keep one variant "
                         "(e.g. only the *.fp16.safetensors files) or add the plain ones.")
    return found.pop()


# --- safetensors headers ----------------------------------------------------------------------

def check_safetensors_header(path: str | Path) -> dict:
    """Parse a safetensors header here, bounded, and refuse it unless it describes exactly the
    bytes the file holds: 8 bytes of little-endian length, that many bytes of JSON, then tensors
    tiling the rest with no gap and no overlap, each of an allowed dtype. The parsed header."""
    return _checked_header(Path(path))[0]


def _checked_header(path: Path) -> tuple[dict, int]:
    """:func:`check_safetensors_header`'s header and the byte offset where the tensors' data begins."""
    fd = _open_regular(path)
    size = os.fstat(fd).st_size
    with os.fdopen(fd, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise _bad_safetensors(path, f"it is {size} bytes, too short for the 8-byte header length (truncated)")
        (length,) = struct.unpack("<Q", head)
        if length > SAFETENSORS_HEADER_MAX_BYTES:
            raise _bad_safetensors(path, f"its header claims {length:,} bytes, above the "
                                         f"{SAFETENSORS_HEADER_MAX_BYTES:,}-byte bound")
        if 8 + length > size:
            raise _bad_safetensors(path, f"its header claims {length:,} bytes but the file holds {size:,} (truncated)")
        blob = fh.read(length)
    try:
        header = json.loads(blob.decode("utf-8"), object_pairs_hook=no_duplicate_keys)
    except (ValueError, RecursionError) as err:
        raise _bad_safetensors(path, f"its header is not JSON ({str(err)[:100]})") from None
    if not isinstance(header, dict):
        raise _bad_safetensors(path, "its header is not a JSON object")
    _check_tensor_table(path, header, size - 8 - length)
    return header, 8 + length


def _check_tensor_table(path: Path, header: dict, data_bytes: int) -> None:
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad_safetensors(path, "its __metadata__ is not a map of strings")
    if len(tensors) > SAFETENSORS_MAX_TENSORS:
        raise _bad_safetensors(path, f"it lists {len(tensors):,} tensors, above the bound of {SAFETENSORS_MAX_TENSORS:,}")
    spans = sorted(_tensor_span(path, name, info) for name, info in tensors.items())
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise _bad_safetensors(path, f"tensor {name!r} starts at byte {begin:,}, not {end:,} (a gap or an overlap)")
        end = stop
    if end != data_bytes:
        raise _bad_safetensors(path, f"its tensors claim {end:,} bytes of data but the file holds {data_bytes:,} "
                                     "(a tensor larger than the file, or a truncated file)")


def _tensor_span(path: Path, name: str, info: Any) -> tuple[int, int, str]:
    """(begin, end, name) of one tensor, checked against its dtype and shape."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _bad_safetensors(path, f"tensor {name!r} is not {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise _bad_safetensors(path, f"tensor {name!r} has dtype {str(dtype)[:40]!r}, not one of "
                                     f"{', '.join(SAFETENSORS_DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > SAFETENSORS_MAX_RANK
            or not all(is_json_int(d) and d >= 0 for d in shape)):
        raise _bad_safetensors(path, f"tensor {name!r} has shape {str(shape)[:60]}, not a list of at most "
                                     f"{SAFETENSORS_MAX_RANK} non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(is_json_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise _bad_safetensors(path, f"tensor {name!r} has data_offsets {str(offsets)[:60]}, not [begin, end]")
    if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[dtype]:
        raise _bad_safetensors(path, f"tensor {name!r} of shape {shape} and dtype {dtype} needs "
                                     f"{math.prod(shape) * SAFETENSORS_DTYPES[dtype]:,} bytes but its offsets span "
                                     f"{offsets[1] - offsets[0]:,}")
    return offsets[0], offsets[1], name


def _bad_safetensors(path: Path, why: str) -> InputError:
    return InputError(f"{path} is not a valid safetensors file: {why}. Re-save the weights with "
                      "safetensors.torch.save_file (or save_pretrained) from a trusted copy.")


# --- weight values ----------------------------------------------------------------------------

# How the streaming pass reads each float dtype: float32/64 as numpy floats (np.isfinite), the
# 16-bit ones as their bits (numpy has no bfloat16, and its float16 arithmetic is slow): a value
# is NaN or infinite exactly when all its exponent bits are set.
FLOAT_VIEWS: dict[str, tuple[type, int | None]] = {"F32": (np.float32, None), "F64": (np.float64, None),
                                                   "F16": (np.uint16, 0x7C00), "BF16": (np.uint16, 0x7F80)}
FINITE_CHUNK_BYTES = 64 * MiB  # what the streaming pass holds in memory at once


def files_signature(path: str | Path) -> tuple:
    """What every file at or below ``path`` is on disk now: (relative name, device, inode, size,
    mtime, ctime), links followed (a broken one: its name alone).

    Why: a folder checked by the gate and then loaded could be changed in between (a file rewritten,
    another renamed into place). Any write to a file moves its ctime, which no one can set back, and
    a file renamed into place has another inode; so two equal signatures taken before the check and
    after the load mean that the loaders read the bytes the gate checked and the fingerprint names."""
    root = Path(path)
    if not root.is_dir():
        return (_stat_row(root, root.name),)
    rows = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        linked_dirs = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        for name in sorted(files + linked_dirs):
            item = Path(folder, name)
            rows.append(_stat_row(item, item.relative_to(root).as_posix()))
    return tuple(rows)


def _stat_row(item: Path, name: str) -> tuple:
    try:
        st = os.stat(item)
    except OSError:
        return (name,)
    return (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def check_unchanged(before: tuple, path: str | Path, role: str = "") -> None:
    """Refuse a folder (or file) whose :func:`files_signature` is not ``before`` any more."""
    if files_signature(path) != before:
        raise InputError(f"{role + ': ' if role else ''}{path} changed while it was checked and loaded (a file was "
                         "written, added, removed or replaced); pass a model folder nobody writes to, and run again.")


def loaded_weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files a pipeline's loaders may read: every one at the top of a weighted
    component (a variant's, a shard an index names), so that none escapes the values check."""
    return sorted(f for name in WEIGHTED for f in (Path(folder) / name).glob("*.safetensors"))


def check_finite_weights(path: str | Path) -> None:
    """Refuse a safetensors file holding any float that is not finite (NaN or infinity), reading
    it once in bounded chunks: a model with NaN weights draws NaN images, which pixels would turn
    into black ones and a verdict would then judge. The header is checked first (the gate's
    parser), so the pass reads exactly the tensors the header describes."""
    path = Path(path)
    header, start = _checked_header(path)
    spans = sorted((info["data_offsets"][0], info["data_offsets"][1], name, info["dtype"])
                   for name, info in header.items() if name != "__metadata__" and info["dtype"] in FLOAT_VIEWS)
    buffer = bytearray(FINITE_CHUNK_BYTES)
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        for begin, end, name, dtype in spans:
            fh.seek(start + begin)
            if not _span_is_finite(path, fh, end - begin, buffer, dtype):
                raise InputError(f"{path}: tensor {name!r} holds values that are not finite numbers (NaN or infinity); "
                                 "a model with such weights draws NaN images and is never judged. Use an intact copy "
                                 "of the model.")


def _span_is_finite(path: Path, fh: Any, size: int, buffer: bytearray, dtype: str) -> bool:
    """Whether the next ``size`` bytes of ``fh``, floats of the safetensors ``dtype``, are all finite."""
    (view, exponent), itemsize = FLOAT_VIEWS[dtype], SAFETENSORS_DTYPES[dtype]
    step = len(buffer) - len(buffer) % itemsize
    while size > 0:
        got = fh.readinto(memoryview(buffer)[:min(step, size)])
        if not got or got % itemsize:
            raise InputError(f"{path} ended while its tensors were read (it changed after it was checked); "
                             "pass a model folder nobody writes to.")
        values = np.frombuffer(buffer, dtype=view, count=got // itemsize)
        if exponent is None:
            finite = np.isfinite(values).all()
        else:
            finite = not (np.bitwise_and(values, view(exponent)) == view(exponent)).any()
        if not finite:
            return False
        size -= got
    return True
