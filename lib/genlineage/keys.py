"""Key samples K = {(p_k, x_k)}: which prompts the owner queries a suspicious model with, and the
reference image each generation is compared to (docs/method.md#key-samples).

Three strategies, each a named reading recorded in the key set's ``meta``:

* ``detection`` (Strategy 1): candidates are S's training pairs; keep the N with the lowest
  RD(S, p_i, x_i), i.e. what S memorised; the reference is the real training image.
* ``generation`` (Strategy 2): candidates are prompts; generate n images per prompt with S; keep
  the N most self-consistent prompts (lowest mean pairwise distance), optionally *relative to the
  base model* (consistency_S − consistency_base), because a tiny source draws almost every
  caption consistently and the plain reading then picks prompts every model draws alike; the
  reference is S's medoid generation.
* ``random`` (Baseline 2): N random training pairs, real images as references.

Keys are stored best first, so the first N of a selection are the selection for N: the key sets
of Figure 7 (N = 20, 30, 50, 100) nest, and :meth:`KeySet.subset` cuts them.

The selection rules are pure functions on arrays (unit-testable without a model); the strategy
functions add generation with the source model.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .distances import Distance, get_distance
from .config import check_seeds_apart  # noqa: F401  (re-exported: the tool checks key sets with it)
from .errors import InputError, NotFiniteError
from .generation import GenerationCache, GenerationConfig, generate_cached
from .reconstruction import reconstruct
from .untrusted import is_json_int

KEYS_FILE = "_keys.json"
KEYS_FORMAT = 1
STRATEGIES = ("detection", "generation", "random")
DEFAULT_CHUNK = 256  # candidate prompts generated and scored at a time (bounds memory at large N)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 as is; float [0, 1] (what read_imagefolder returns) rounded to uint8. Values that are
    not finite are refused: rounding would make NaN a black pixel that a distance then judges."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind in "fc" and not np.isfinite(images).all():
        raise NotFiniteError(f"{int((~np.isfinite(images)).sum())} of the {images.size} pixel values are not finite "
                             "numbers (NaN or infinity)")
    return np.clip(np.rint(images.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python, so meta survives JSON and compares equal after a reload."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _strict(value: Any) -> Any:
    """A float NaN as None (JSON null); anything else unchanged."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _json_float(x: float) -> float | None:
    """NaN (no score, e.g. random keys) as JSON null: metadata.jsonl must stay strict JSON for
    the Hugging Face readers of image folders."""
    x = float(x)
    return None if math.isnan(x) else x


@dataclass
class KeySet:
    """N key samples, best first: prompt, uint8 reference [N, H, W, 3], the candidate index each
    came from, its selection score (lower = better; NaN for random keys) and how it was chosen.

    ``meta["per_key"]`` (optional) maps names to per-key lists (e.g. the seed of a reference); they
    are sliced with the keys and saved as columns of the image folder.
    """

    strategy: str
    prompts: list[str]
    references: np.ndarray  # uint8 [N, H, W, 3]
    indices: list[int]
    scores: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prompts = [str(p) for p in self.prompts]
        self.references = to_uint8(self.references)
        self.indices = [int(i) for i in self.indices]
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.prompts)
        lengths = {"references": len(self.references), "indices": len(self.indices), "scores": len(self.scores)}
        lengths.update({f"meta.per_key.{k}": len(v) for k, v in self.meta.get("per_key", {}).items()})
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"KeySet: {n} prompts but {bad}; every per-key field needs one entry per key")
        if self.references.ndim != 4 or self.references.shape[-1] != 3:
            raise ValueError(f"KeySet: references must be [N, H, W, 3]; got {self.references.shape}")

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, n: int) -> "KeySet":
        """The first n keys, i.e. the selection for N = n (keys are stored best first)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"subset({n}): this {self.strategy} key set has {len(self)} keys; ask for 1..{len(self)}")
        meta = dict(self.meta)
        if "per_key" in meta:
            meta["per_key"] = {k: list(v)[:n] for k, v in meta["per_key"].items()}
        meta["n"] = n
        meta["subset_of"] = len(self)
        return KeySet(self.strategy, self.prompts[:n], self.references[:n], self.indices[:n], self.scores[:n], meta)

    def save(self, folder: str | Path) -> Path:
        """Write as an image folder (reference PNG, prompt as ``text``, plus ``strategy``, ``index``,
        ``score`` and the per-key extras per row) and the rest of ``meta`` in ``_keys.json``, with
        the reference size (``image_size``: [height, width]) so that :meth:`load` can tell a swapped
        image. Atomic: a reader never sees half a key set."""
        from .data.imagefolder import write_imagefolder

        per_key = {k: list(v) for k, v in self.meta.get("per_key", {}).items()}
        rows = []
        for k in range(len(self)):
            extra = {"strategy": self.strategy, "index": self.indices[k], "score": _json_float(self.scores[k])}
            extra.update({name: _strict(_jsonable(values[k])) for name, values in per_key.items()})
            rows.append((self.references[k], self.prompts[k], extra))
        meta = {k: v for k, v in self.meta.items() if k != "per_key"}
        stamp = {"format": KEYS_FORMAT, "strategy": self.strategy, "n": len(self),
                 "image_size": [int(self.references.shape[1]), int(self.references.shape[2])],
                 "per_key_fields": sorted(per_key), "meta": _jsonable(meta)}
        write_imagefolder(folder, rows, extra_files={KEYS_FILE: stamp})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "KeySet":
        """Read a key set written by :meth:`save`, or refuse it with an :class:`InputError` naming
        the file and the fix. ``verify --keys`` reads key sets that anyone may have written or
        edited, so everything is checked against ``_keys.json`` before a key is used: the folder
        as an image folder (:func:`~genlineage.data.imagefolder.read_imagefolder`), a bounded
        ``_keys.json``, one bare-named reference per key and no unlisted image, one reference
        size, and the per-key columns (``index``, ``score``, seeds). Nothing is written."""
        from .data.imagefolder import read_imagefolder

        folder = Path(folder)
        try:  # the rows first, the images only once their sizes are known to be the key set's
            data = read_imagefolder(folder, check_images=False)
        except InputError as exc:
            raise InputError(f"key set {folder}: {exc}") from None
        stamp = _read_keys_stamp(folder)
        strategy, n = stamp["strategy"], stamp["n"]
        _check_key_files(folder, data.records, n)
        indices, scores, per_key = _key_columns(folder / "metadata.jsonl", data.records, stamp)
        _check_reference_sizes(folder, data.paths, stamp.get("image_size"))
        try:
            read_imagefolder(folder)  # now every reference decoded once: a truncated file is refused here
        except InputError as exc:
            raise InputError(f"key set {folder}: {exc}") from None
        references = _key_references(data.paths)
        meta = dict(stamp["meta"])
        if stamp["per_key_fields"]:
            meta["per_key"] = per_key
        try:
            return cls(strategy, data.captions, references, indices, scores, meta)
        except ValueError as exc:  # a disagreement the checks above missed: still the key set's fault
            raise InputError(f"key set {folder} does not hold together ({exc}); rebuild it with KeySet.save.") from None


# ----------------------------------------------------------------------------------------------
# Loading a key set someone else wrote: _keys.json and its images must agree

KEYS_MAX_BYTES = 1 << 20  # a _keys.json is < 2 KiB (strategy, n, seeds, generation settings)
KEY_REBUILD = "rebuild the key set with KeySet.save (genlineage verify --key-data ... --out writes one)"
SEED_FIELDS = ("reference_seed", "best_seed")  # per-key seeds check_key_seeds reads (ints or null)


def _read_keys_stamp(folder: Path) -> dict:
    """``_keys.json``, read under :data:`KEYS_MAX_BYTES` (by its stat size: refused unread) as
    strict UTF-8 JSON with no key twice, and checked field by field: the format this code writes,
    a known strategy, n >= 1, the per-key column names, ``meta`` an object whose seeds are ints."""
    from .data.imagefolder import read_small_json

    path = folder / KEYS_FILE
    if not os.path.lexists(path):
        raise InputError(f"{folder} is an image folder but not a key set (no {KEYS_FILE}); "
                         f"build keys with genlineage.keys and KeySet.save.")
    stamp = read_small_json(path, folder, KEYS_MAX_BYTES, KEY_REBUILD)

    def refuse(what: str) -> InputError:
        return InputError(f"{path}: {what}; {KEY_REBUILD}.")

    if not isinstance(stamp, dict):
        raise refuse(f"it holds a JSON {type(stamp).__name__}, not the object KeySet.save writes")
    if stamp.get("format") != KEYS_FORMAT:
        raise refuse(f"format {stamp.get('format')!r} is not {KEYS_FORMAT}, the format this genlineage reads")
    if stamp.get("strategy") not in STRATEGIES:
        raise refuse(f"strategy {stamp.get('strategy')!r} is not one of {', '.join(STRATEGIES)}")
    if not is_json_int(stamp.get("n")) or stamp["n"] < 1:
        raise refuse(f"n {stamp.get('n')!r} is not a number of keys (an integer >= 1)")
    fields_ = stamp.setdefault("per_key_fields", [])
    if not isinstance(fields_, list) or not all(isinstance(f, str) for f in fields_) or len(set(fields_)) != len(fields_):
        raise refuse(f"per_key_fields {str(fields_)[:80]} is not a list of distinct column names")
    meta = stamp.setdefault("meta", {})
    if not isinstance(meta, dict):
        raise refuse(f"meta is a JSON {type(meta).__name__}, not an object")
    if "per_key" in meta:
        raise refuse("meta holds 'per_key', which KeySet.save writes as columns of metadata.jsonl, never here")
    seeds = meta.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and all(is_json_int(s) for s in seeds)):
        raise refuse(f"meta.seeds {str(seeds)[:80]} is not a list of integer seeds")
    size = stamp.get("image_size")  # absent from key sets saved before it was recorded
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(is_json_int(v) and v > 0 for v in size)):
        raise refuse(f"image_size {str(size)[:80]} is not [height, width] in pixels")
    return stamp


def _check_key_files(folder: Path, records: list[dict], n: int) -> None:
    """One reference per key, each a bare file name in the folder (KeySet.save writes
    ``{k:06d}.png``), and no image file that no row lists: a key set with more or fewer images
    than ``_keys.json`` says has been edited, and which keys it means is anyone's guess."""
    from .data.imagefolder import IMAGE_SUFFIXES

    meta = folder / "metadata.jsonl"
    if len(records) != n:
        raise InputError(f"{meta} lists {len(records)} keys but {folder / KEYS_FILE} records n = {n}: images or rows "
                         f"were added or removed; {KEY_REBUILD}.")
    listed = set()
    for row_no, row in enumerate(records, start=1):
        name = row["file_name"]
        if "/" in name or name in (".", ".."):
            raise InputError(f"{meta} row {row_no}: reference {name!r} is not a bare file name (a key set keeps its "
                             f"references beside metadata.jsonl); {KEY_REBUILD}.")
        listed.add(name)
    unlisted = sorted(p for p in os.listdir(folder) if p.lower().endswith(IMAGE_SUFFIXES) and p not in listed)
    if unlisted:
        raise InputError(f"{folder / unlisted[0]} is an image that {meta} does not list ({len(unlisted)} such): the key "
                         f"set holds more images than its {n} keys. Delete what you added, or {KEY_REBUILD}.")


def _key_columns(meta: Path, records: list[dict], stamp: dict) -> tuple[list[int], list[float], dict[str, list]]:
    """The per-row columns KeySet.save writes, checked: ``strategy`` the stamp's, ``index`` a
    distinct candidate index (an int >= 0), ``score`` a number or null, every per-key column
    present, and the seed columns ints or null (they decide which seeds a suspect may be queried at)."""
    indices: list[int] = []
    scores: list[float] = []
    per_key: dict[str, list] = {name: [] for name in stamp["per_key_fields"]}
    first_row: dict[int, int] = {}
    for row_no, row in enumerate(records, start=1):
        def refuse(what: str) -> InputError:
            return InputError(f"{meta} row {row_no} ({row['file_name']}): {what}; {KEY_REBUILD}.")

        if row.get("strategy") != stamp["strategy"]:
            raise refuse(f"strategy {row.get('strategy')!r} disagrees with {KEYS_FILE}'s {stamp['strategy']!r}")
        index = row.get("index")
        if not is_json_int(index) or index < 0:
            raise refuse(f"'index' {index!r} is not a candidate index (an integer >= 0)")
        if index in first_row:
            raise refuse(f"'index' {index} repeats row {first_row[index]}'s: one candidate would be two keys")
        first_row[index] = row_no
        if "score" not in row:
            raise refuse("there is no 'score' (null for random keys)")
        score = row["score"]
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise refuse(f"'score' {score!r} is not a number or null")
        for name in per_key:
            if name not in row:
                raise refuse(f"the per-key column {name!r} that {KEYS_FILE} lists is missing")
            if name in SEED_FIELDS and row[name] is not None and not is_json_int(row[name]):
                raise refuse(f"{name!r} {row[name]!r} is not an integer seed or null")
            per_key[name].append(row[name])
        indices.append(index)
        scores.append(np.nan if score is None else float(score))
    return indices, scores, per_key


def _check_reference_sizes(folder: Path, paths: list[Path], image_size: list[int] | None) -> None:
    """Every reference of the size ``_keys.json`` records (or, for a key set saved before it was
    recorded, of the first reference's), read from the headers before any pixel is decoded: a
    swapped or resized image would be compared with generations at another resolution, and three
    200 KB PNGs claiming 8192 x 8192 px would take gigabytes to decode before a later check."""
    from .data.imagefolder import image_header_size

    fix = f"restore the key's reference, or {KEY_REBUILD}"
    sizes = [image_header_size(p, folder, fix) for p in paths]  # (width, height)
    want = (image_size[1], image_size[0]) if image_size is not None else sizes[0]
    said = f"{folder / KEYS_FILE} records" if image_size is not None else f"the first reference ({paths[0].name}) is"
    for path, (width, height) in zip(paths, sizes):
        if (width, height) != tuple(want):
            raise InputError(f"key reference {path} is {width}x{height} px but {said} "
                             f"{want[0]}x{want[1]}: every reference of a key set has one size; {KEY_REBUILD}.")


def _key_references(paths: list[Path]) -> np.ndarray:
    """The references as uint8 [N, H, W, 3] (their sizes checked by :func:`_check_reference_sizes`)."""
    from .data.imagefolder import load_image

    return np.stack([to_uint8(load_image(p)) for p in paths])


# ----------------------------------------------------------------------------------------------
# Seeds: the ones that make references and the ones that query suspects never meet


def profile_seeds(profile: Any) -> tuple[list[int], list[int]]:
    """(key_seeds, query_seeds) of a profile, checked when its ``attribution`` section was parsed
    (``config.AttributionSettings``: at least 2 key seeds, at least 1 query seed, none in both)."""
    att = profile.attribution
    return list(att.key_seeds), list(att.query_seeds)


def reference_seeds(key_set: "KeySet") -> list[int] | None:
    """Every seed a key set's references or selection came from, as its meta records them
    (``seeds`` and per-key ``reference_seed``/``best_seed``); None when nothing is recorded."""
    found: set[int] = set()
    recorded = False
    if key_set.meta.get("seeds") is not None:
        found.update(int(s) for s in key_set.meta["seeds"])
        recorded = True
    for name in ("reference_seed", "best_seed"):
        values = key_set.meta.get("per_key", {}).get(name)
        if values is not None:
            found.update(int(s) for s in values if s is not None)
            recorded = True
    return sorted(found) if recorded else None


# ----------------------------------------------------------------------------------------------
# Pure selection rules


def _resolve(distance: str | Distance) -> Distance:
    return get_distance(distance) if isinstance(distance, str) else distance


def _check_n(n: int, n_candidates: int) -> None:
    if not 1 <= int(n) <= n_candidates:
        raise ValueError(f"asked for {n} keys from {n_candidates} candidates; n must be in 1..{n_candidates}")


def select_lowest(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n lowest scores, lowest first; ties go to the lower index (stable), NaN last.

    Stable ties make a key set a function of the scores alone, not of sort internals."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    _check_n(n, len(scores))
    return np.argsort(scores, kind="stable")[: int(n)]


def select_random(n_candidates: int, n: int, seed: int) -> np.ndarray:
    """n distinct candidate indices drawn uniformly with ``seed``, in draw order (so any prefix is
    itself a uniform draw and the N = 20/30/50/100 sets nest)."""
    _check_n(n, n_candidates)
    # a prefix of one permutation (not rng.choice, whose algorithm depends on n) so that the draw
    # for n = 20 is exactly the first 20 of the draw for n = 30
    return np.random.default_rng(seed).permutation(n_candidates)[: int(n)]


def self_consistency(images: np.ndarray, distance: str | Distance = "l2") -> np.ndarray:
    """Mean pairwise distance among the S generations of each prompt: images [P, S, H, W, 3] -> [P].

    0 when a prompt always yields the same picture, whatever the seed: what a model emits that
    consistently is what a model trained on its outputs inherits."""
    images = np.asarray(images)
    if images.ndim != 5 or images.shape[1] < 2:
        raise ValueError(f"self_consistency needs images [P, S>=2, H, W, 3]; got {images.shape}")
    d = _resolve(distance)
    first, second = np.triu_indices(images.shape[1], k=1)
    per_image = int(np.prod(images.shape[2:]))
    chunk = max(1, (1 << 22) // (len(first) * per_image))  # bounds the pair copies to ~16 M values
    out = np.empty(len(images), dtype=np.float64)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk]
        out[start:start + chunk] = np.asarray(d(block[:, first], block[:, second])).mean(axis=1)
    return out


def medoid(images: np.ndarray, distance: str | Distance = "l2") -> int:
    """Index of the generation [S, H, W, 3] with the least total distance to the others (ties: the
    lower index): a real output of S that stands for what S typically draws for the prompt."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) < 1:
        raise ValueError(f"medoid needs images [S>=1, H, W, 3]; got {images.shape}")
    matrix = np.asarray(_resolve(distance)(images[:, None], images[None, :]))
    return int(np.argmin(matrix.sum(axis=1)))


def generation_scores(source_images: np.ndarray, distance: str | Distance = "l2",
                      base_images: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Strategy 2's score per prompt (lower = better) and its parts: (score, consistency_S,
    consistency_base). With ``base_images`` the score is consistency_S − consistency_base, so a
    prompt that the base model (hence every model) draws alike scores ~0, and only prompts that S
    draws *more* consistently than the base come first."""
    d = _resolve(distance)
    cons_source = self_consistency(source_images, d)
    if base_images is None:
        return cons_source, cons_source, None
    cons_base = self_consistency(base_images, d)
    if cons_base.shape != cons_source.shape:
        raise ValueError(f"source and base images cover {len(cons_source)} and {len(cons_base)} prompts")
    return cons_source - cons_base, cons_source, cons_base


# ----------------------------------------------------------------------------------------------
# Strategies with a source model


def _model_name(components: Any) -> str | None:
    path = getattr(components, "path", None)
    return str(path) if path is not None else None


def _common_meta(strategy: str, n: int, n_candidates: int, seeds: Sequence[int] | None, distance: str | None,
                 cfg: GenerationConfig | None, reading: str) -> dict:
    return {"strategy": strategy, "n": int(n), "n_candidates": int(n_candidates),
            "seeds": None if seeds is None else [int(s) for s in seeds], "distance": distance,
            "generation": None if cfg is None else cfg.key(), "reading": reading, "order": "best first"}


def _check_pairs(prompts: Sequence[str], images: np.ndarray) -> None:
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images; pass one image per prompt")


def detection_keys(source: Any, prompts: Sequence[str], images: np.ndarray, n: int, seeds: Sequence[int],
                   cfg: GenerationConfig, cache: GenerationCache | None, distance: str = "l2",
                   progress: bool = False, chunk: int = DEFAULT_CHUNK) -> KeySet:
    """Strategy 1: the n training pairs S reproduces best, RD(S, p_i, x_i) = min over ``seeds``.

    ``images`` are S's training images (uint8 or float [0, 1]) at the generation resolution; they
    are the references, because that is what an infringer inherits a copy of.
    """
    prompts = list(prompts)
    _check_pairs(prompts, images)
    _check_n(n, len(prompts))
    if not len(seeds):
        raise ValueError("detection_keys needs at least one seed")
    rd = np.empty(len(prompts), dtype=np.float64)
    best_seed = np.empty(len(prompts), dtype=np.int64)
    for start in range(0, len(prompts), chunk):
        rec = reconstruct(source, prompts[start:start + chunk], np.asarray(images[start:start + chunk]), seeds,
                          cfg, cache, distance=distance, progress=progress)
        rd[start:start + chunk] = rec.distance
        best_seed[start:start + chunk] = rec.best_seed
    chosen = select_lowest(rd, n)
    meta = _common_meta("detection", n, len(prompts), seeds, distance, cfg,
                        "RD(S, p, x) = min over seeds of d(x, G(S, p, s)) on S's training pairs; "
                        "n lowest kept; reference = the real training image")
    meta["source"] = _model_name(source)
    meta["per_key"] = {"best_seed": best_seed[chosen].tolist()}
    return KeySet("detection", [prompts[i] for i in chosen], to_uint8(np.asarray(images)[chosen]),
                  chosen.tolist(), rd[chosen], meta)


def generation_keys(source: Any, prompts: Sequence[str], n: int, seeds: Sequence[int], cfg: GenerationConfig,
                    cache: GenerationCache | None, distance: str = "l2", base: Any | None = None,
                    relative_to_base: bool | None = None, progress: bool = False,
                    chunk: int = DEFAULT_CHUNK) -> KeySet:
    """Strategy 2: the n prompts S draws most self-consistently over ``seeds``; reference = S's
    medoid generation.

    ``relative_to_base`` (a [reading], recorded in meta): score = consistency_S −
    consistency_base instead of consistency_S. ``None`` means "True exactly when ``base`` is
    given"; True without a base is an error. With a base and False, the base's consistency is
    still measured and recorded per key (to show what the relative reading would change).
    """
    prompts = list(prompts)
    seeds = [int(s) for s in seeds]
    _check_n(n, len(prompts))
    if len(seeds) < 2:
        raise ValueError(f"generation_keys needs at least 2 seeds to measure self-consistency; got {seeds}")
    if relative_to_base is None:
        relative_to_base = base is not None
    if relative_to_base and base is None:
        raise ValueError("relative_to_base=True needs base= (the components of the base model S was tuned from)")
    d = get_distance(distance)
    s = len(seeds)

    # best n so far, merged chunk by chunk: exact (ties keep the lower index because earlier
    # chunks hold lower indices and the sort is stable) and O(n) images in memory at any N.
    best_idx = np.zeros(0, dtype=np.int64)
    best_score = np.zeros(0)
    best_ref: np.ndarray | None = None
    cons_s_all = np.empty(len(prompts))
    cons_b_all = np.full(len(prompts), np.nan)
    medoid_seed = np.empty(len(prompts), dtype=np.int64)
    for start in range(0, len(prompts), chunk):
        block = prompts[start:start + chunk]
        flat_prompts = [p for p in block for _ in seeds]
        flat_seeds = seeds * len(block)
        gen_s = generate_cached(source, flat_prompts, flat_seeds, cfg, cache, progress=progress)
        gen_s = gen_s.reshape(len(block), s, *gen_s.shape[1:])
        gen_b = None
        if base is not None:
            gen_b = generate_cached(base, flat_prompts, flat_seeds, cfg, cache, progress=progress)
            gen_b = gen_b.reshape(len(block), s, *gen_b.shape[1:])
        _, cons_s, cons_b = generation_scores(gen_s, d, gen_b)
        score = cons_s - cons_b if relative_to_base else cons_s
        cons_s_all[start:start + len(block)] = cons_s
        if cons_b is not None:
            cons_b_all[start:start + len(block)] = cons_b
        medoids = np.array([medoid(g, d) for g in gen_s])
        medoid_seed[start:start + len(block)] = np.asarray(seeds)[medoids]
        refs = gen_s[np.arange(len(block)), medoids]
        idx = np.concatenate([best_idx, np.arange(start, start + len(block))])
        sc = np.concatenate([best_score, score])
        rf = refs if best_ref is None else np.concatenate([best_ref, refs])
        keep = np.argsort(sc, kind="stable")[:n]
        best_idx, best_score, best_ref = idx[keep], sc[keep], rf[keep]

    meta = _common_meta("generation", n, len(prompts), seeds, distance, cfg,
                        "self-consistency = mean pairwise d among S's generations over the seeds"
                        + (" minus the base model's" if relative_to_base else "")
                        + "; n lowest kept; reference = S's medoid generation")
    meta.update(relative_to_base=bool(relative_to_base), source=_model_name(source),
                base=_model_name(base) if base is not None else None)
    meta["per_key"] = {"reference_seed": medoid_seed[best_idx].tolist(),
                       "consistency_source": cons_s_all[best_idx].tolist()}
    if base is not None:
        meta["per_key"]["consistency_base"] = cons_b_all[best_idx].tolist()
    return KeySet("generation", [prompts[i] for i in best_idx], best_ref, best_idx.tolist(), best_score, meta)


def random_keys(prompts: Sequence[str], images: np.ndarray, n: int, seed: int) -> KeySet:
    """Baseline 2: n training pairs drawn at random (seeded), real images as references. The score
    is NaN: the order is the draw order, which keeps subsets uniform draws."""
    prompts = list(prompts)
    _check_pairs(prompts, images)
    chosen = select_random(len(prompts), n, seed)
    meta = _common_meta("random", n, len(prompts), None, None, None,
                        "n training pairs drawn uniformly without replacement; reference = the real image")
    meta["seed"] = int(seed)
    return KeySet("random", [prompts[i] for i in chosen], to_uint8(np.asarray(images)[chosen]),
                  chosen.tolist(), np.full(len(chosen), np.nan), meta)
