"""A key set on disk: the format this tool writes (an image folder with ``metadata.jsonl`` and a
``_keys.json`` stamp) and its strict reader.

Why apart from the strategies (:mod:`genlineage.keys`): a key set the owner passes to
``genlineage verify --keys`` may have been written by anyone, so reading one is the work of an
untrusted reader (bounded, strict JSON, no unlisted file, reference sizes read from headers before
any pixel is decoded), like the image-folder and model-folder readers it builds on; choosing keys
is maths on a source's generations.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.imagefolder import IMAGE_SUFFIXES, image_header_size, load_image, read_imagefolder, read_small_json, write_imagefolder
from .errors import InputError, NotFiniteError
from .untrusted import is_json_int


KEYS_FILE = "_keys.json"


KEYS_FORMAT = 1


STRATEGIES = ("detection", "generation", "random")


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


KEYS_MAX_BYTES = 1 << 20  # a _keys.json is < 2 KiB (strategy, n, seeds, generation settings)


KEY_REBUILD = "rebuild the key set with KeySet.save (genlineage verify --key-data ... --out writes one)"


SEED_FIELDS = ("reference_seed", "best_seed")  # per-key seeds check_key_seeds reads (ints or null)


def _read_keys_stamp(folder: Path) -> dict:
    """``_keys.json``, read under :data:`KEYS_MAX_BYTES` (by its stat size: refused unread) as
    strict UTF-8 JSON with no key twice, and checked field by field: the format this code writes,
    a known strategy, n >= 1, the per-key column names, ``meta`` an object whose seeds are ints."""
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
    return np.stack([to_uint8(load_image(p)) for p in paths])
