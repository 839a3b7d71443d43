"""What a finished fine-tune keeps on disk: all of it, its own weights in fp16, or only its recipe.

Why: the paper profile fine-tunes 264 suspicious and shadow models of Stable-Diffusion size; kept
as fp32 UNets they need 908 GB, more than one machine has. Once a model's queries are cached, a
re-run reads them under the model's identity (its fingerprint) and never loads the weights, so most
of those bytes serve nothing. This module releases them without changing what any cached result
means. A profile chooses one policy (``models.keep_finetuned``):

- ``full``: the folder as training wrote it.
- ``fp16``: the weight files the folder owns (its UNet, and its text encoder if that was trained;
  the frozen parts are hard links to the base and cost nothing) rewritten in float16 as the
  ``fp16`` variant, which the loader reads as it is. Allowed only where the profile infers in
  float16: loading fp32 weights in float16 rounds each value exactly as this cast does, so every
  image the model draws is bit for bit the one it drew before, and the folder keeps its identity.
- ``none``: the folder pruned to its recipe and stamp (what it was trained from, with which
  settings), the two configs that give its image size, and its identity: under 32 KB. Every
  cached image stays valid; an image not in the cache cannot be drawn from it
  (:class:`CachedOnlyModel` refuses, naming the fix) until it is rebuilt from the recipe
  (:func:`ensure_weights`; :func:`genlineage.training.finetune.rebuild_from_recipe`).

Under ``none`` a released model's training set goes too (:func:`release_data_folder`): its images
are the pool's rows and the source's cached generations, drawn by a recipe its job rebuilds byte for
byte, so the folder keeps only its stamp and the content id it had (``_released_data.json``), which
``pipeline_io.data_identity`` gives in its place; the job rebuilds the images when a reader asks and
refuses them if they differ.

A released folder records its policy, identity and sizes in ``_storage.json``; each release is one
atomic step (``io.atomic_dir``), so an interruption leaves the folder as it was. The sources are
never pruned (later stages ask them new images); where fp16 is exact they are compacted
(:func:`source_policy`). :func:`model_disk` gives the dry run its figures under each policy.

Where it acts: stage 03 (``suspicious_models.answer_then_release``) releases each evaluated and
shadow model as soon as it is trained, after asking it (under ``none``) everything stages 04 and 08
will ask it; stage 02 (``source_models.finetune_source``) compacts the sources. Readers recognise a
released folder of their own: ``pipeline_io.fingerprint`` gives its recorded identity,
``pipeline_io.load_model`` a :class:`CachedOnlyModel`, and verify's gate and null
(``verify.suspect``, ``verify.population``) answer a pruned model from the cache. The dry run
(``cost_plan.finetuned_disk``) states the disk with and without the saving.

This module imports nothing of ``pipeline_io``, so that ``pipeline_io.fingerprint`` and
``load_model`` can ask it for a released folder's identity.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors.torch import load_file, save_file

from ..cache import STAMP, Result, content_id
from ..config import EXACT_FP16_DTYPE, KEEP_POLICIES, check_policy
from ..errors import InputError
from ..io import atomic_dir, write_json
from .gate import COMPONENTS, VARIANT_WEIGHTS, WEIGHTED, check_safetensors_header, read_model_json
from .lora import PROVENANCE

RECORD = "_storage.json"
DATA_RECORD = "_released_data.json"         # a released training set: the content id it had
RECIPE_FILES = (STAMP, PROVENANCE)          # what a pruned folder must keep beside its record
# kept too, when there: what reads a model's image size without loading it (pipeline_io.folder_image_size)
SIZE_CONFIGS = ("unet/config.json", "vae/config.json")
STUB_BYTES = 32 * 1024                      # a pruned folder on disk (5 small files, block-rounded): the test's bound
FP16_VARIANT = "fp16"


@dataclass(frozen=True)
class StorageRecord:
    """What a release did: the policy, the identity every cached result keys on, the bytes the
    folder owned before and after (this record's own few hundred bytes aside), and the files
    rewritten (fp16) or kept (none)."""

    policy: str
    identity: str
    bytes_before: int
    bytes_after: int
    files: tuple[str, ...] = ()

    @classmethod
    def read(cls, folder: str | Path) -> "StorageRecord | None":
        """The folder's record, or None when it was never released (or the record is not ours)."""
        path = Path(folder) / RECORD
        if not path.is_file():
            return None
        data = read_model_json(path)  # bounded, like every config the gate reads
        if not isinstance(data, dict) or data.get("policy") not in KEEP_POLICIES:
            return None
        if not isinstance(data.get("identity"), str):
            return None
        return cls(data["policy"], data["identity"], int(data.get("bytes_before", 0)), int(data.get("bytes_after", 0)),
                   tuple(data.get("files", ())))


# --- identity -----------------------------------------------------------------------------------------

def kept_identity(folder: str | Path) -> str | None:
    """The identity a released folder recorded (None: not released). Only a folder genlineage
    wrote may be believed: ``pipeline_io.fingerprint`` asks this for folders below its data roots."""
    record = StorageRecord.read(folder)
    return record.identity if record else None


def folder_identity(folder: str | Path) -> str:
    """What results made with a model folder key on: its recorded identity once released, else
    the content id of its components (``pipeline_io.fingerprint`` of a pipeline folder)."""
    return kept_identity(folder) or content_id(folder, parts=COMPONENTS)


def is_pruned(folder: str | Path) -> bool:
    """Whether the folder holds only its recipe (policy ``none``)."""
    record = StorageRecord.read(folder)
    return record is not None and record.policy == "none"


# --- sizes --------------------------------------------------------------------------------------------

def owned_bytes(folder: str | Path) -> int:
    """Bytes only this folder holds: its files with one name. A hard link (a frozen part shared
    with the base) costs the disk nothing more, so it counts nothing here."""
    return sum(s.st_size for f in Path(folder).rglob("*") if f.is_file() and not f.is_symlink()
               for s in [f.stat()] if s.st_nlink == 1)


def disk_bytes(folder: str | Path) -> int:
    """Blocks the folder's single-name files take on disk (what ``du`` counts for them)."""
    return sum(s.st_blocks * 512 for f in Path(folder).rglob("*") if f.is_file() and not f.is_symlink()
               for s in [f.stat()] if s.st_nlink == 1)


def kept_bytes(unet_fp32_bytes: float, policy: str) -> float:
    """Bytes one released fine-tune keeps: its fp32 UNet (``full``), half of it (``fp16``), or
    the recipe (``none``)."""
    check_policy(policy)
    return {"full": unet_fp32_bytes, "fp16": unet_fp32_bytes / 2, "none": float(STUB_BYTES)}[policy]


def source_policy(policy: str, inference_dtype: str) -> str:
    """How a source is kept: never pruned (later stages ask it new images), in fp16 where the
    profile's policy releases anything and fp16 is exact."""
    check_policy(policy)
    return "fp16" if policy != "full" and inference_dtype == EXACT_FP16_DTYPE else "full"


@dataclass(frozen=True)
class ModelDisk:
    """The fine-tuned models' disk in GB: every model in fp32 (``full_gb``), and under ``policy``
    at its peak (``kept_gb``: the released models, the sources as :func:`source_policy` keeps
    them, and ``in_flight`` models at full size between their training and their release)."""

    policy: str
    full_gb: float
    kept_gb: float
    in_flight: int

    def sentence(self) -> str:
        """What the dry run says of the saving."""
        if self.policy == "full":
            return f"fine-tuned models kept in full (models.keep_finetuned: full): {self.full_gb:,.1f} GB"
        what = {"fp16": "its own weights in fp16, which draw bit-identical images at float16 inference,",
                "none": "only its recipe and stamp, rebuilt on demand,"}[self.policy]
        return (f"fine-tuned models: {self.kept_gb:,.1f} GB under models.keep_finetuned: {self.policy} "
                f"(each evaluated/shadow model keeps {what} once its queries are cached; at most "
                f"{self.in_flight} at full size in flight); {self.full_gb:,.1f} GB if every model were kept in fp32")


def model_disk(*, sources: int, released: int, kept_full: int, unet_fp32_bytes: float, policy: str,
               inference_dtype: str, in_flight: int) -> ModelDisk:
    """The dry run's figures: ``sources`` (stage 02's fine-tunes), ``released`` (evaluated and
    shadow models released once queried), ``kept_full`` (fine-tunes no policy touches, e.g. the
    shared null shadows stage 08 asks new images), ``in_flight`` (parallel jobs)."""
    check_policy(policy)
    if policy == "full":
        in_flight = 0
    total = sources + released + kept_full
    kept = (sources * kept_bytes(unet_fp32_bytes, source_policy(policy, inference_dtype))
            + released * kept_bytes(unet_fp32_bytes, policy) + kept_full * unet_fp32_bytes
            + min(in_flight, released) * (unet_fp32_bytes - kept_bytes(unet_fp32_bytes, policy)))
    return ModelDisk(policy, total * unet_fp32_bytes / 1e9, kept / 1e9, min(in_flight, released))


def profile_policy(profile: Any) -> str:
    """The profile's ``models.keep_finetuned``, checked against its inference dtype. A profile
    whose schema has no such key (one older than this module) keeps every model in full, as
    before: nothing of its files, fingerprints or cache keys changes."""
    return check_policy(getattr(profile.models, "keep_finetuned", "full"), profile.run.dtype)


# --- releasing --------------------------------------------------------------------------------------

def release(folder: str | Path, policy: str, inference_dtype: str,
            needed_by: Iterable[Result] = ()) -> StorageRecord | None:
    """Release a finished fine-tune as ``policy`` says, once every result in ``needed_by`` (its
    cached queries) is fresh; None under ``full``. A result that is not fresh means something would
    still ask the weights, so nothing is released and a ValueError names it (a wiring error)."""
    check_policy(policy, inference_dtype)
    waiting = [str(r.path) for r in needed_by if not r.fresh()]
    if waiting:
        raise ValueError(f"{folder} is still needed by {', '.join(waiting)} (not cached yet): release it after them.")
    if policy == "fp16":
        return compact_fp16(folder, inference_dtype)
    if policy == "none":
        return prune_to_recipe(folder)
    return None


def compact_fp16(folder: str | Path, inference_dtype: str = EXACT_FP16_DTYPE) -> StorageRecord:
    """Rewrite the fp32 weight files the folder owns as ``*.fp16.safetensors``, keeping its
    identity; everything else stays (hard links stay links). Idempotent."""
    check_policy("fp16", inference_dtype)
    folder = Path(folder)
    record = StorageRecord.read(folder)
    if record is not None:
        if record.policy == "fp16":
            return record
        raise InputError(f"{folder} was already released as {record.policy}; it has no fp32 weights to compact.")
    identity, before = folder_identity(folder), owned_bytes(folder)
    targets = _compactable(folder)
    with atomic_dir(folder) as tmp:
        _mirror(folder, tmp, skip=set(targets))
        for source in targets:
            _write_half(source, tmp / _fp16_name(source.relative_to(folder)))
        halves = [tmp / _fp16_name(f.relative_to(folder)) for f in targets]
        after = before + sum(h.stat().st_size for h in halves) - sum(f.stat().st_size for f in targets)
        record = StorageRecord("fp16", identity, before, after,
                               tuple(str(_fp16_name(f.relative_to(folder))) for f in targets))
        write_json(tmp / RECORD, asdict(record))
    return record


def prune_to_recipe(folder: str | Path) -> StorageRecord:
    """Prune the folder to its stamp, its provenance (the recipe: base, data, training settings),
    its UNet and VAE configs (its image size, read without weights) and its record, keeping its
    identity (an fp16 folder's recorded one). Idempotent."""
    folder = Path(folder)
    record = StorageRecord.read(folder)
    if record is not None and record.policy == "none":
        return record
    missing = [name for name in RECIPE_FILES if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{folder} has no {', '.join(missing)}: without its recipe it could not be rebuilt, so it "
                         "is kept as it is.")
    identity, before = folder_identity(folder), owned_bytes(folder)
    kept = RECIPE_FILES + tuple(name for name in SIZE_CONFIGS if (folder / name).is_file())
    with atomic_dir(folder) as tmp:
        for name in kept:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(folder / name), tmp / name)  # a copy: the base's file stays the base's
        record = StorageRecord("none", identity, before, sum((tmp / name).stat().st_size for name in kept), kept)
        write_json(tmp / RECORD, asdict(record))
    return record


def release_data_folder(folder: str | Path) -> str:
    """Release an image folder genlineage made from a recipe (a training set): keep its stamp and
    the content id it had, drop its images, in one atomic step; the id. Idempotent."""
    folder = Path(folder)
    recorded = released_data_identity(folder)
    if recorded is not None:
        return recorded
    if not (folder / STAMP).is_file():
        raise InputError(f"{folder} has no {STAMP}: without the record of its recipe it could not be rebuilt, so it "
                         "is kept as it is.")
    identity = content_id(folder)
    with atomic_dir(folder) as tmp:
        shutil.copy2(folder / STAMP, tmp / STAMP)
        write_json(tmp / DATA_RECORD, {"content_id": identity})
    return identity


def released_data_identity(folder: str | Path) -> str | None:
    """The content id a released image folder recorded, or None for a folder that holds its images
    (or whose record cannot be read: then it is judged by what it holds)."""
    record = Path(folder) / DATA_RECORD
    if not record.is_file():
        return None
    try:
        data = read_model_json(record)
    except InputError:
        return None
    identity = data.get("content_id") if isinstance(data, dict) else None
    return identity if isinstance(identity, str) else None


def _compactable(folder: Path) -> list[Path]:
    """The weight files this folder alone holds whose floats are all fp32: one name (not a
    base's hard link), plain (not a variant), not a shard."""
    files = []
    for name in WEIGHTED:
        component = folder / name
        if any(component.glob("*.index.json")):
            continue  # sharded weights stay as they are (SD's components are single files)
        for file in sorted(component.glob("*.safetensors")):
            match = VARIANT_WEIGHTS.fullmatch(file.name)
            if match and match.group("variant") is None and not file.is_symlink() and file.stat().st_nlink == 1 \
                    and _all_floats_fp32(file):
                files.append(file)
    return files


def _all_floats_fp32(file: Path) -> bool:
    header = check_safetensors_header(file)
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    return "F32" in dtypes and not dtypes & {"F16", "BF16", "F64"}


def _fp16_name(relative: Path) -> Path:
    """``unet/diffusion_pytorch_model.safetensors`` -> ``unet/diffusion_pytorch_model.fp16.safetensors``."""
    return relative.with_name(relative.name.removesuffix(".safetensors") + f".{FP16_VARIANT}.safetensors")


def _write_half(source: Path, target: Path) -> None:
    """One weights file in float16, its metadata kept; a value beyond float16's range is refused
    (it would become infinite), so such a model is never compacted."""
    metadata = check_safetensors_header(source).get("__metadata__")
    tensors = {}
    for name, tensor in load_file(source).items():
        half = tensor.to(torch.float16) if tensor.dtype == torch.float32 else tensor.clone()
        if half.is_floating_point() and not bool(torch.isfinite(half).all()):
            raise InputError(f"{source}: tensor {name} holds values beyond float16's range; keep this model in full.")
        tensors[name] = half.contiguous()
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata=metadata)


def _mirror(source: Path, target: Path, skip: set[Path]) -> None:
    """Give ``target`` every file of ``source`` but ``skip``, as hard links (no bytes copied; a
    file that cannot be linked is copied). Hidden leftovers of interrupted writes are left out."""
    for file in sorted(f for f in source.rglob("*") if f.is_file() and f not in skip):
        relative = file.relative_to(source)
        if any(part.startswith(".") for part in relative.parts):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        real = os.path.realpath(file)
        try:
            os.link(real, target / relative)
        except OSError:
            shutil.copy2(real, target / relative)


# --- using a pruned folder --------------------------------------------------------------------------

def pruned_message(folder: str | Path, what: str = "its weights") -> str:
    """The refusal for a pruned folder asked for what only weights give, with the fix."""
    return (f"{folder} keeps only its recipe and stamp (models.keep_finetuned: none: its queries were cached) and "
            f"{what} is needed, e.g. for an image not in the cache. Rebuild it from its recipe "
            "(genlineage.models.storage.ensure_weights; the stage that made it rebuilds it the same way), or set "
            "models.keep_finetuned: full and re-run the stage that made it.")


@dataclass(frozen=True)
class CachedOnlyModel:
    """A pruned model as a stage's loader gives it: its identity, under which every cached image
    reads as before (``generation.generate_cached`` asks nothing else when nothing is missing), and
    no weights: anything that would draw an image raises :func:`pruned_message`. No image is ever
    drawn from other weights than the ones its identity names."""

    path: Path
    identity: str

    @property
    def content_id(self) -> str:
        return self.identity

    @property
    def name(self) -> str:
        return str(self.path)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise InputError(pruned_message(self.path, f"its {attribute}"))


def cached_only_model(folder: str | Path) -> CachedOnlyModel:
    """The stand-in ``pipeline_io.load_model`` returns for a pruned folder of its own."""
    identity = kept_identity(folder)
    if identity is None or not is_pruned(folder):
        raise ValueError(f"{folder} is not a pruned model folder")
    return CachedOnlyModel(Path(folder), identity)


def discard_recipe_folder(folder: str | Path) -> bool:
    """Remove a pruned folder (stamp and all), so that its cached builder trains it again; whether
    there was one. Renamed away first: a reader never sees a half-removed folder."""
    folder = Path(folder)
    if not is_pruned(folder):
        return False
    gone = folder.with_name(f".{folder.name}.pruned.part")  # what io.clean_partials sweeps if we stop here
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(folder, gone)
    shutil.rmtree(gone, ignore_errors=True)
    return True


def ensure_weights(folder: str | Path, rebuild: Callable[[], object]) -> Path:
    """The folder with its weights: as it is, or, when pruned, rebuilt by ``rebuild()`` (the stage's
    own cached builder, e.g. ``build_suspicious_model(profile, row)``). A rebuild that trains to
    other bytes (a GPU's kernels need not repeat exactly) has another identity, so every result keyed
    on the old one reads as stale and is redone: never mixed."""
    folder = Path(folder)
    if not is_pruned(folder):
        return folder
    discard_recipe_folder(folder)
    rebuild()
    if is_pruned(folder) or not (folder / "model_index.json").is_file():
        raise RuntimeError(f"rebuilding {folder} left no pipeline folder there")
    return folder


__all__ = ["CachedOnlyModel", "DATA_RECORD", "ModelDisk", "RECORD", "STUB_BYTES", "StorageRecord",
           "cached_only_model", "compact_fp16", "discard_recipe_folder", "disk_bytes", "ensure_weights",
           "folder_identity", "is_pruned", "kept_bytes", "kept_identity", "model_disk", "owned_bytes",
           "profile_policy", "prune_to_recipe", "pruned_message", "release", "release_data_folder",
           "released_data_identity", "source_policy"]
