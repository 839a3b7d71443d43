"""How the innocent null was made beside the suspect: same base, same fine-tuning method?

The shadow null of ``genlineage verify`` (:mod:`.null`) answers "how close does an innocent model
come to the keys?" with the owner's innocent shadows. That answer holds only for innocent models
made the way the suspect was: fine-tuned from the suspect's base, by the same method (a full
fine-tune, or a LoRA on that base). Measured on the tiny profile, innocent shadows from another
base sit systematically farther from (or closer to) every key than innocent models of the
suspect's base, so a null from another base, or from a mix of bases, gives innocent suspects
p-values that are not uniform; and LoRA shadows (which move a model less) behind a full
fine-tuned suspect called two innocent suspects infringing with no warning. So before any query,
:func:`describe_null` tells how each model was made (:func:`describe_model`) and refuses a null
whose shadows were made otherwise than the suspect, with the command that makes matching ones,
unless the owner knowingly accepts it (``allow_mismatch``; the report then says so).

How a model's make is told, from the most to the least direct evidence:

* a LoRA model is a file on the base it was trained on: that base is part of the model as given
  (``--suspect-lora`` with ``--suspect-base``, or one of genlineage's LoRA folders, whose
  ``genlineage.json`` names its ``lora_base``);
* a full pipeline folder of the *owner's* (an innocent shadow) may carry the record genlineage
  wrote when it made it: ``genlineage.json``'s ``base_dir``, the stage-03 manifest's
  ``base_path``, or the ``shadows.json`` of ``genlineage shadows`` beside it;
* a full pipeline folder of the *suspect's* is untrusted: whatever its files claim, its base is
  *measured*, as the candidate base (the shadows' bases) of the same UNet architecture whose UNet
  weights lie nearest (relative L2 distance, streamed tensor by tensor from the safetensors files
  through the gate's header parser: no weights are loaded as a model, nothing is unpickled). A
  fine-tune keeps its base's weights pattern however far it moves (their correlation stays near
  1; an unrelated model of the same architecture is near 0), so a nearest base whose weights the
  suspect's do not correlate with (r below ``BASE_MIN_CORRELATION``) is none of them;
* a callable (a remote API) cannot be told: its base and method are "unknown", and no refusal
  follows from it.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..models.gate import (VARIANT_WEIGHTS, check_safetensors_header, read_bounded, read_model_json, snapshot_repository,
                           weights_variant)
from ..models.lora import PROVENANCE, LoraModel
from ..models.pipeline_io import is_own_pruned
from ..untrusted import open_regular, parse_json
from .suspect import LOCAL, ModelSpec, check_sd_model, check_sd_pipeline, role_trust

__all__ = ["BASE_MIN_CORRELATION", "Make", "NullPopulation", "UNetComparison", "compare_unets", "describe_model",
           "describe_null", "find_mismatch", "recorded_base", "unet_distances"]

METHODS = ("full", "lora")
UNKNOWN = "unknown"
# The least correlation (Pearson's r of the UNet weights, each tensor centred) a model keeps with
# the base it was fine-tuned from. Measured on the smoke bases: two unrelated initialisations of
# one architecture, r = 0.00001 (relative distance 1.00); full fine-tunes at lr 3e-3, r = 0.95
# after 50 steps and 0.93 after 200 (distance 0.23 and 0.28), at lr 1e-3 r = 0.9997 after 2
# steps (distance 0.017). A move in random directions as large as the weights themselves still
# leaves r = 0.71, so 0.5 calls no plausible fine-tune unrelated. r, not the distance, decides:
# how far a fine-tune moves depends on its steps and learning rate (and, under Adam, on how small
# the base's weights are), how much of its base it keeps hardly does.
BASE_MIN_CORRELATION = 0.5
CHUNK_ELEMENTS = 1 << 22          # elements of one tensor compared at a time: 32 MiB as float64
STAGE_MANIFEST = "manifest.csv"   # stage 03's (experiments.suspicious_models.MANIFEST), at the data root
SHADOWS_MANIFEST = "shadows.json"  # genlineage shadows' (verify.shadows.MANIFEST), beside the shadows
MANIFEST_MAX_BYTES = 64 << 20
FLOAT_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "bf16"}


@dataclass(frozen=True)
class Make:
    """How one model was made, as far as it can be told, and on what evidence.

    ``base`` is the base's identity: the real path of its folder (links resolved, so a link and
    the folder it names are one base), or None when it cannot be told. ``method`` is "full",
    "lora" or "unknown". ``evidence`` says in words how it was told. ``apart`` is True when the
    base was *measured* to be none of the candidate bases (its UNet architecture matches none, or
    its weights do not correlate with the nearest's): unknown, but known not to be theirs."""

    role: str
    base: str | None
    method: str
    evidence: str
    apart: bool = False


@dataclass(frozen=True)
class NullPopulation:
    """The innocent null beside the suspect: each model's make, and what differs.

    ``mismatch`` names every difference in words ("" when none): shadows made from another base
    or by another method than the suspect, or shadows of more than one base or method.
    ``allowed`` records that the owner accepted a mismatch knowingly (``--allow-mismatched-null``);
    a mismatch that was not accepted is refused by :func:`describe_null` unless the suspect's make
    cannot be told (a callable), so a returned population with a mismatch has either ``allowed``
    or an unknown suspect."""

    suspect: Make
    shadows: tuple[Make, ...]
    mismatch: str
    allowed: bool

    def summary(self) -> dict:
        """What the report shows: count, bases and methods of the shadows (label -> count), what is
        known of the suspect's make, and the mismatch."""
        labels = base_labels([m.base for m in (self.suspect, *self.shadows)])
        return {"count": len(self.shadows),
                "bases": dict(Counter(labels.get(m.base, UNKNOWN) for m in self.shadows)),
                "methods": dict(Counter(m.method for m in self.shadows)),
                "suspect_base": labels.get(self.suspect.base, UNKNOWN),
                "suspect_method": self.suspect.method,
                "suspect_evidence": self.suspect.evidence,
                "mismatch": self.mismatch,
                "allowed": self.allowed}


# --- one model --------------------------------------------------------------------------------------

def describe_model(model: ModelSpec, role: str, candidate_bases: Sequence[Path] = ()) -> Make:
    """How ``model`` (in ``role``: "suspect", or an owner's role such as "innocent shadow NAME")
    was made. The model passes the gate first (a LoRA folder is read as its file on its base).
    A LoRA's base is the one it is given with; an owner's full pipeline's base is the record
    genlineage wrote, if any; anything else is measured against ``candidate_bases``."""
    if not isinstance(model, LOCAL):
        return Make(role, None, UNKNOWN, "a callable: cannot tell")
    checked = check_sd_model(model, role)
    if not isinstance(checked, LoraModel) and is_own_pruned(checked):
        return pruned_make(checked, role)
    if isinstance(checked, LoraModel):
        evidence = ("LoRA file's declared base" if isinstance(model, LoraModel)
                    else "genlineage.json of a LoRA folder genlineage made (lora_base)")
        return Make(role, base_identity(checked.base), "lora", evidence)
    if role_trust(role) is not None:  # the owner's own model: genlineage's record of it may be believed
        recorded = recorded_base(checked)
        if recorded is not None:
            return Make(role, base_identity(recorded[0]), "full", recorded[1])
    return measured_make(checked, role, candidate_bases)


def pruned_make(folder: Path, role: str) -> Make:
    """A fine-tune genlineage made and kept as its recipe (``models.keep_finetuned: none``): no
    UNet is left to measure, and genlineage wrote its record (only folders below its own data roots
    are recognised as such), so the record's base is believed for a suspect too, and said so."""
    recorded = recorded_base(folder)
    if recorded is None:
        return Make(role, None, UNKNOWN, "kept only its recipe, which names no base on this machine: cannot tell")
    return Make(role, base_identity(recorded[0]), "full",
                f"{recorded[1]} (its weights were released once its queries were cached: nothing left to measure)")


def base_identity(folder: str | Path) -> str:
    """One name per base however it is reached (a link, a relative path, the folder itself)."""
    return os.path.realpath(folder)


def measured_make(model: Path, role: str, candidate_bases: Sequence[Path]) -> Make:
    """A full pipeline's base measured: the candidate of the same UNet architecture whose UNet
    weights lie nearest, if the model's weights still correlate with it (else none of them)."""
    bases = _distinct_bases(candidate_bases)
    if not bases:
        return Make(role, None, "full", "no candidate base to measure its UNet against (no shadow's base is known)")
    compared = compare_unets(model, bases)
    near = sorted((c.distance, str(b), c) for b, c in compared.items() if c is not None)
    labels = base_labels([str(b) for b in bases])
    if not near:
        return Make(role, None, "full", f"its UNet's architecture (unet/config.json) matches none of the shadows' bases "
                                        f"({', '.join(labels.values())})", apart=True)
    (best, base, comparison), others = near[0], near[1:]
    versus = (f" vs {', '.join(f'{d:.3g} to {labels[b]}' for d, b, _ in others)}" if others
              else "; the only candidate base of its architecture")
    evidence = f"nearest base by UNet weights (relative distance {best:.3g} to {labels[base]}{versus})"
    if comparison.correlation < BASE_MIN_CORRELATION:
        return Make(role, None, "full", f"{evidence}, yet its weights do not correlate with that base's (r = "
                                        f"{comparison.correlation:.2g}; a fine-tune keeps r above "
                                        f"{BASE_MIN_CORRELATION:g}): none of the shadows' bases is its own", apart=True)
    return Make(role, str(base), "full", evidence)


def _distinct_bases(candidate_bases: Sequence[Path]) -> list[Path]:
    """Each candidate once (by real path), checked by the gate as the owner's base folder."""
    seen: dict[str, Path] = {}
    for base in candidate_bases:
        seen.setdefault(base_identity(base), Path(base_identity(base)))
    return [check_sd_pipeline(path, "base") for path in seen.values()]


def base_labels(bases: Sequence[str | None]) -> dict[str, str]:
    """A short label per base: its folder's name (a Hugging Face cache snapshot's: its
    repository's, ``models--org--name``, not the revision hash), or its path where two bases
    share a name."""
    distinct = sorted({b for b in bases if b is not None})
    names = {b: _folder_name(b) for b in distinct}
    shared = Counter(names.values())
    return {b: names[b] if shared[names[b]] == 1 else b for b in distinct}


def _folder_name(base: str) -> str:
    repository = snapshot_repository(Path(base))
    return repository.name if repository is not None else Path(base).name


# --- genlineage's records of the owner's models -----------------------------------------------------

def recorded_base(folder: Path) -> tuple[Path, str] | None:
    """The base genlineage recorded for a full pipeline folder it made, with where it found it:
    the folder's ``genlineage.json`` (``base_dir``), stage 03's manifest (``base_path``), or
    ``genlineage shadows``' ``shadows.json`` beside it (the shadow's ``base``, else the set's).
    A record naming no existing pipeline folder is ignored (the base was moved: measure instead).
    Only for the owner's folders: a suspect's files could claim any base."""
    for source, read in (("genlineage.json of a model genlineage made", _provenance_base),
                         ("the stage-03 manifest", _stage_manifest_base),
                         (SHADOWS_MANIFEST, _shadows_manifest_base)):
        base = read(folder)
        if base is not None and (base / "model_index.json").is_file():
            return base, source
    return None


def _provenance_base(folder: Path) -> Path | None:
    """``base_dir`` of the folder's ``genlineage.json``: the path ``finetune_folder`` was given
    (absolute in every stage and in ``genlineage shadows``; a relative one is read from the
    current folder, as it was written)."""
    meta = read_model_json(folder / PROVENANCE) if (folder / PROVENANCE).is_file() else None
    base = meta.get("base_dir") if isinstance(meta, dict) else None
    return Path(base) if isinstance(base, str) and base else None


def _stage_manifest_base(folder: Path) -> Path | None:
    """``base_path`` of the folder's row in stage 03's manifest (``<data root>/manifest.csv``,
    the models in ``<data root>/models/suspicious/<name>``)."""
    real = Path(os.path.realpath(folder))
    manifest = real.parent.parent.parent / STAGE_MANIFEST
    if real.parent.name != "suspicious" or not manifest.is_file():
        return None
    text = read_bounded(manifest, MANIFEST_MAX_BYTES).decode("utf-8", errors="replace")
    for row in csv.DictReader(io.StringIO(text)):
        path, base = row.get("path"), row.get("base_path")
        if path and base and os.path.realpath(path) == str(real):
            return Path(base)
    return None


def _shadows_manifest_base(folder: Path) -> Path | None:
    """The shadow's ``base`` in the ``shadows.json`` of the set it lies in (else the set's)."""
    real = Path(os.path.realpath(folder))
    manifest = real.parent / SHADOWS_MANIFEST
    if not manifest.is_file():
        return None
    data = parse_json(read_bounded(manifest, MANIFEST_MAX_BYTES), manifest, "re-run genlineage shadows")
    if not isinstance(data, dict):
        return None
    rows = [s for s in data.get("shadows", []) if isinstance(s, dict) and s.get("path") == real.name]
    base = (rows[0].get("base") if rows else None) or data.get("base")
    if not isinstance(base, str) or not base:
        return None
    return Path(base) if os.path.isabs(base) else real.parent / base


# --- measuring: UNet weights, streamed ------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpan:
    """Where one tensor's bytes lie in its safetensors file (offsets from the file's start)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def unet_config(folder: Path) -> dict:
    """The UNet's architecture: its ``config.json`` without the bookkeeping keys (``_class_name``,
    ``_diffusers_version``, ``_name_or_path``), read bounded through the gate."""
    config = read_model_json(Path(folder) / "unet" / "config.json")
    if not isinstance(config, dict):
        raise InputError(f"{folder}/unet/config.json is not a JSON object; re-save the model with save_pretrained.")
    return {k: v for k, v in config.items() if not k.startswith("_")}


def unet_tensors(folder: Path) -> dict[str, TensorSpan]:
    """Every floating-point UNet tensor of a (gate-checked) pipeline folder, located from its
    safetensors headers (parsed and checked by the gate: the tensors tile the file exactly), for
    the variant the folder holds (every shard)."""
    unet = Path(folder) / "unet"
    variant = weights_variant(unet)
    spans: dict[str, TensorSpan] = {}
    for file in sorted(unet.glob("*.safetensors")):
        match = VARIANT_WEIGHTS.fullmatch(file.name)
        if match is None or match.group("variant") != variant:
            continue
        header = check_safetensors_header(file)
        data_start = 8 + _header_length(file)
        for name, info in header.items():
            if name != "__metadata__" and info["dtype"] in FLOAT_DTYPES:
                spans[name] = TensorSpan(file, info["dtype"], tuple(info["shape"]), data_start + info["data_offsets"][0])
    return spans


def _header_length(file: Path) -> int:
    fd = open_regular(file, "re-save the weights with save_pretrained")
    try:
        head = os.pread(fd, 8, 0)
    finally:
        os.close(fd)
    return struct.unpack("<Q", head)[0]


@dataclass(frozen=True)
class UNetComparison:
    """A model's UNet beside a base's of the same architecture, over every tensor both hold with
    one name and shape. ``distance``: ||w_model - w_base|| / ||w_base|| (how far it moved).
    ``correlation``: Pearson's r of the two weight vectors, each tensor centred on its own mean
    (how much of the base it kept): a fine-tune keeps r near 1 however long it trains (a move as
    large as the weights themselves still leaves r near 0.7), an unrelated model of the same
    architecture is near 0. Tensors the base holds constant (normalisation weights, zero biases
    at initialisation) add nothing to r."""

    distance: float
    correlation: float


class _Sums:
    """Running sums of one (model, base) comparison: the distance's over everything, the
    correlation's per tensor, folded in when the tensor ends."""

    def __init__(self) -> None:
        self.diff = self.norm = self.cov = self.var_model = self.var_base = 0.0
        self._tensor = np.zeros(6)  # n, sum w, sum b, sum w^2, sum b^2, sum w*b of the current tensor

    def add(self, w: np.ndarray, b: np.ndarray) -> None:
        d = w - b
        self.diff += float(np.dot(d, d))
        self.norm += float(np.dot(b, b))
        self._tensor += (len(w), w.sum(), b.sum(), np.dot(w, w), np.dot(b, b), np.dot(w, b))

    def end_tensor(self) -> None:
        n, sw, sb, sww, sbb, swb = self._tensor
        if n:
            self.cov += swb - sw * sb / n
            self.var_model += max(sww - sw * sw / n, 0.0)
            self.var_base += max(sbb - sb * sb / n, 0.0)
        self._tensor[:] = 0

    def result(self) -> UNetComparison:
        distance = math.sqrt(self.diff / self.norm) if self.norm > 0 else (0.0 if self.diff == 0 else math.inf)
        spread = math.sqrt(self.var_model * self.var_base)
        return UNetComparison(float(distance), float(self.cov / spread) if spread > 0 else 0.0)


def compare_unets(model: Path, bases: Sequence[Path]) -> dict[Path, UNetComparison | None]:
    """Per base: how ``model``'s UNet weights lie beside the base's (:class:`UNetComparison`);
    None for a base whose UNet architecture (``unet/config.json``) differs. Streamed: one chunk of
    one tensor of the model and of each base in memory at a time, the model's read once for all."""
    architecture = unet_config(model)
    same = [b for b in bases if unet_config(b) == architecture]
    out: dict[Path, UNetComparison | None] = {b: None for b in bases}
    if not same:
        return out
    mine = unet_tensors(model)
    theirs = {b: unet_tensors(b) for b in same}
    sums = {b: _Sums() for b in same}
    with _Reader() as read:
        for name in sorted(mine):
            span = mine[name]
            peers = [b for b in same if name in theirs[b] and theirs[b][name].shape == span.shape]
            for first in range(0, span.numel if peers else 0, CHUNK_ELEMENTS):
                count = min(CHUNK_ELEMENTS, span.numel - first)
                w = read(span, first, count)
                for b in peers:
                    sums[b].add(w, read(theirs[b][name], first, count))
            for b in peers:
                sums[b].end_tensor()
    out.update({b: sums[b].result() for b in same})
    return out


def unet_distances(model: Path, bases: Sequence[Path]) -> dict[Path, float | None]:
    """Per base: the relative L2 distance of ``model``'s UNet weights from the base's (None: another
    architecture); see :func:`compare_unets`."""
    return {b: None if c is None else c.distance for b, c in compare_unets(model, bases).items()}


class _Reader(contextlib.AbstractContextManager):
    """Reads chunks of tensors as float64, each file opened once (as a regular file, through the
    gate's opener) and checked to still hold the bytes its checked header describes."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def __exit__(self, *exc) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _fd(self, file: Path) -> int:
        if file not in self._fds:
            self._fds[file] = open_regular(file, "re-save the weights with save_pretrained")
        return self._fds[file]

    def __call__(self, span: TensorSpan, first: int, count: int) -> np.ndarray:
        code = FLOAT_DTYPES[span.dtype]
        size = 2 if code == "bf16" else np.dtype(code).itemsize
        blob = os.pread(self._fd(span.file), count * size, span.start + first * size)
        if len(blob) != count * size:
            raise InputError(f"{span.file} changed while it was being read (a tensor ends past the file's end); "
                             "pass a model nobody writes meanwhile.")
        if code == "bf16":  # bfloat16 is the top half of a float32
            return (np.frombuffer(blob, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return np.frombuffer(blob, code).astype(np.float64)


# --- the null beside the suspect --------------------------------------------------------------------

def describe_null(suspect: ModelSpec, innocent_shadows: Sequence[ModelSpec], allow_mismatch: bool, *,
                  candidate_bases: Sequence[str | Path] = ()) -> NullPopulation:
    """Each innocent shadow's make and the suspect's, and what differs; refused (InputError naming
    the mismatch and the ``genlineage shadows`` command that makes matching shadows) unless
    ``allow_mismatch`` or the suspect's make cannot be told (a callable).

    The shadows' bases are the candidates the suspect's UNet is measured against, with
    ``candidate_bases`` (other bases the suspect may come from, e.g. the source's base): a suspect
    from a base that is none of them is told as such, and is a mismatch too. An owner's full
    shadow without a record is measured against the same candidates."""
    roles = [f"innocent shadow {model_name(s)}" for s in innocent_shadows]
    shadows = [describe_model(s, role) for s, role in zip(innocent_shadows, roles)]
    known = [m.base for m in shadows if m.base is not None]
    suspect_make = describe_model(suspect, "suspect", [Path(b) for b in known] + [Path(b) for b in candidate_bases])
    candidates = known + [str(b) for b in candidate_bases] + ([suspect_make.base] if suspect_make.base else [])
    shadows = [describe_model(s, role, [Path(b) for b in candidates]) if _unrecorded(m) else m
               for s, role, m in zip(innocent_shadows, roles, shadows)]
    mismatch = find_mismatch(suspect_make, shadows)
    population = NullPopulation(suspect_make, tuple(shadows), mismatch, bool(allow_mismatch))
    if mismatch and not allow_mismatch and suspect_make.method != UNKNOWN:
        raise InputError(refusal(population))
    return population


def _unrecorded(make: Make) -> bool:
    """A full pipeline shadow whose base no record named and nothing was measured against yet."""
    return make.method == "full" and make.base is None and not make.apart


def model_name(model: ModelSpec) -> str:
    """A model as messages name it: a folder's name, a LoRA file's folder, a callable's name."""
    if isinstance(model, LoraModel):
        return Path(model.weights).parent.name
    if isinstance(model, (str, Path)):
        return Path(model).name
    return getattr(model, "__qualname__", type(model).__name__)


def find_mismatch(suspect: Make, shadows: Sequence[Make]) -> str:
    """Every way the shadows were made otherwise than the suspect, in words ("" when none): other
    bases or methods than the suspect's (where both are known), a suspect whose base is none of
    the shadows', shadows of more than one base or method."""
    labels = base_labels([m.base for m in (suspect, *shadows)])
    parts: list[str] = []
    bases = Counter(labels[m.base] for m in shadows if m.base is not None)
    methods = Counter(m.method for m in shadows if m.method in METHODS)
    if len(bases) > 1:
        parts.append(f"the innocent shadows were made from {len(bases)} bases ({_counts(bases)})")
    if len(methods) > 1:
        parts.append(f"the innocent shadows were made by {len(methods)} methods ({_counts(methods)})")
    if suspect.apart:
        parts.append(f"the suspect's base is none of the innocent shadows' bases ({suspect.evidence})")
    elif suspect.base is not None:
        other = [m for m in shadows if m.base is not None and m.base != suspect.base]
        if other:
            parts.append(f"{_shadow_list(other)} made from {_named(Counter(labels[m.base] for m in other))}, the "
                         f"suspect from {labels[suspect.base]} ({suspect.evidence})")
    if suspect.method in METHODS:
        other = [m for m in shadows if m.method in METHODS and m.method != suspect.method]
        if other:
            parts.append(f"{_shadow_list(other)} made by {_named(Counter(m.method for m in other))} fine-tuning, "
                         f"the suspect by {suspect.method} fine-tuning")
    return "; ".join(parts)


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {n}" for key, n in sorted(counter.items()))


def _named(counter: Mapping[str, int]) -> str:
    """The one key, or every key with its count."""
    return next(iter(counter)) if len(counter) == 1 else _counts(counter)


def _shadow_list(makes: Sequence[Make], shown: int = 4) -> str:
    names = [m.role.removeprefix("innocent shadow ") for m in makes]
    listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
    return f"{len(names)} innocent shadow{'s' if len(names) > 1 else ''} ({listed}) {'were' if len(names) > 1 else 'was'}"


def refusal(population: NullPopulation) -> str:
    """The refusal's message: the mismatch, why it matters, how to make matching shadows, and
    the flag for an owner who wants the mismatched null knowingly."""
    suspect = population.suspect
    base = suspect.base or "SUSPECT_BASE_DIR"
    method = suspect.method if suspect.method in METHODS else "full"
    return (f"the innocent shadows were not made the way the suspect was: {population.mismatch}. The null holds only "
            "for innocent models made like the suspect (from its base, by its fine-tuning method); shadows from another "
            "base or method come systematically closer to or farther from the keys, and innocent suspects would be "
            "called infringing more or less often than the target rate says. Make matching innocent shadows with "
            f"`genlineage shadows --base {base} --finetune {method} --data OWNER_DOMAIN_PAIRS --source-data "
            "SOURCE_TRAINING_PAIRS --innocent 19 --out SHADOWS_DIR` (pairs of the source's domain it never trained on) "
            "and pass them as --innocent-shadow; or, to use these shadows knowingly, pass --allow-mismatched-null "
            "(the report then says so).")

