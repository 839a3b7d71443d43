"""Write every dataset a profile needs: one image folder per (domain, role), plus ``pretrain``.

Layout under ``<data_root>/datasets`` (``data_root`` = ``$GENLINEAGE_DATA/<profile>``)::

    celeba_source/  celeba_heldout/  celeba_suspicious_pool/  celeba_shadow_pool/
    cc3m_source/    ...              pretrain/
    <domain>_pool/  (real-data domains only: the converted release, cut into roles by id)

and ``<data_root>/splits.json`` records which id went where. Each folder is written atomically
with a ``_build.json`` stamp whose key hashes everything that determines its content (seed,
image size, the domain's config, the exact ids in order, the generator version); a folder whose
stamp matches is left alone, so a second build costs nothing and an interrupted one resumes
where it stopped.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping

from tqdm import tqdm

from ..errors import InputError
from ..io import clean_partials, read_json, stable_hash, stamp_matches, write_json
from . import Sample, convert, faces, scenes
from .convert import convert_cc3m, convert_celeba_dialog
from .faces import face_sample
from .imagefolder import BUILD_STAMP, ImageFolder, read_imagefolder, write_imagefolder
from .scenes import scene_sample
from .splits import REAL_KINDS, ROLES, check_disjoint, make_splits, parse_id, pretrain_subset, role_entries

# Bump when the folder format changes, so cached folders are rebuilt. Changes to the generators'
# or converters' code rebuild by themselves: their source text is part of the cache key.
BUILD_VERSION = 1
GENERATORS: dict[str, Callable[[int, int, int], Sample]] = {"faces": face_sample, "scenes": scene_sample}


def _code_fingerprint(*modules: ModuleType) -> str:
    return stable_hash([Path(m.__file__).read_text() for m in modules if m.__file__])


def splits_path(profile: Any) -> Path:
    """Where ``build_datasets`` writes the split file of ``profile``."""
    return Path(profile.data_root) / "splits.json"


def datasets_root(profile: Any, root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else Path(profile.data_root) / "datasets"


def _stamp_matches(folder: Path, key: str) -> bool:
    return (folder / "metadata.jsonl").is_file() and stamp_matches(folder / BUILD_STAMP, key)


def _build_pool(name: str, cfg: Mapping, out_root: Path, size: int, progress: bool) -> ImageFolder:
    """Convert a real-data domain's release once into ``<name>_pool`` (cached like the roles)."""
    src = cfg.get("root")
    if not src:
        raise InputError(
            f"data.domains.{name} (kind {cfg['kind']}) has no 'root'; set it to the local copy of the "
            f"dataset (see genlineage.data.convert for the layouts accepted)."
        )
    src_path = Path(src).expanduser()
    limit = cfg.get("limit")
    images = cfg.get("images")
    folder = out_root / f"{name}_pool"
    key = stable_hash({"version": BUILD_VERSION, "code": _code_fingerprint(convert),
                       "kind": cfg["kind"], "root": str(src_path.resolve()),
                       "images": str(images) if images else None, "size": size, "limit": limit})
    if not _stamp_matches(folder, key):
        if progress:
            tqdm.write(f"converting {cfg['kind']} from {src_path} into {folder}")
        stamp = {BUILD_STAMP: {"key": key, "folder": folder.name, "kind": cfg["kind"], "root": str(src_path)}}
        if cfg["kind"] == "celeba_dialog":
            convert_celeba_dialog(src_path, folder, size, limit=limit, extra_files=stamp)
        else:
            convert_cc3m(src_path, folder, size, limit=limit, images_dir=images, extra_files=stamp)
    pool = read_imagefolder(folder, size=None, check_images=False)
    if any(r.get("id") is None for r in pool.records):
        raise InputError(f"{folder}/metadata.jsonl has rows without 'id'; delete {folder} and rebuild.")
    return pool


def _generated_items(entries: list[str], domain: str, size: int, seed: int) -> Iterator[tuple]:
    cache: dict[str, Sample] = {}
    for item in entries:
        generator, key = parse_id(item)
        if item not in cache:
            cache = {item: GENERATORS[generator](int(key), size, seed)}  # keep one: copies are adjacent
        sample = cache[item]
        yield sample.image, sample.caption, {
            "id": item, "domain": domain, "generator": generator, "index": int(key), "attributes": sample.attributes,
        }


def _real_items(entries: list[str], domain: str, pool: ImageFolder) -> Iterator[tuple]:
    from PIL import Image

    by_id = {f"{domain}:{r['id']}": r for r in pool.records}
    for item in entries:
        row = by_id[item]
        with Image.open(pool.root / row["file_name"]) as im:
            image = im.convert("RGB")
        yield image, row["text"], {"id": item, "domain": domain, "attributes": row.get("attributes", {})}


def build_datasets(profile: Any, root: str | Path | None = None, progress: bool = True) -> dict[str, Path]:
    """Write all of ``profile``'s image folders and ``splits.json``; return ``{folder name: path}``.

    Generated domains are drawn at ``data.image_size`` with ``profile["seed"]``; real-data
    domains (``kind: celeba_dialog`` / ``cc3m``, with ``root: <local path>``) are converted
    once into ``<domain>_pool`` and cut into the same roles by a seeded permutation of ids.
    """
    data = profile["data"]
    size = int(data["image_size"])
    seed = int(profile.get("seed", 0))
    out_root = datasets_root(profile, root)
    out_root.mkdir(parents=True, exist_ok=True)
    clean_partials(out_root)

    pools: dict[str, ImageFolder] = {}
    pools_key: dict[str, str] = {}  # a role folder of real data is rebuilt when its pool was
    for name, cfg in sorted((data.get("domains") or {}).items()):
        if cfg.get("kind") in REAL_KINDS:
            pools[name] = _build_pool(name, cfg, out_root, size, progress)
            pools_key[name] = json.loads((pools[name].root / BUILD_STAMP).read_text())["key"]
    splits = make_splits(profile, {name: [str(r["id"]) for r in pool.records] for name, pool in pools.items()})
    check_disjoint(splits)
    write_json(splits_path(profile), splits)

    jobs: list[tuple[str, str, list[str], Mapping]] = []
    for name, cfg in sorted((data.get("domains") or {}).items()):
        for role in ROLES:
            jobs.append((f"{name}_{role}", name, role_entries(splits, name, role), cfg))
    if splits["pretrain"]["n"]:
        jobs.append(("pretrain", "pretrain", role_entries(splits, "pretrain"), data.get("pretrain") or {}))

    folders: dict[str, Path] = {}
    for folder_name, domain, entries, cfg in jobs:
        folder = out_root / folder_name
        folders[folder_name] = folder
        code = _code_fingerprint(faces, scenes) if domain not in pools else pools_key[domain]
        key = stable_hash({"version": BUILD_VERSION, "code": code, "seed": seed, "image_size": size, "config": cfg,
                           "entries": stable_hash(entries, 32), "n": len(entries)})
        if _stamp_matches(folder, key):
            continue
        if domain in pools:
            items = _real_items(entries, domain, pools[domain])
        else:
            items = _generated_items(entries, domain, size, seed)
        bar = tqdm(items, total=len(entries), desc=folder_name, disable=not progress, leave=False)
        stamp = {"key": key, "folder": folder_name, "n": len(entries), "image_size": size, "seed": seed,
                 "profile": str(profile.get("name", ""))}
        write_imagefolder(folder, bar, extra_files={BUILD_STAMP: stamp})
    return folders


def load_split_folder(profile: Any, domain: str, role: str, root: str | Path | None = None,
                      check_images: bool = False) -> ImageFolder:
    """The image folder of one (domain, role); every image must be at the profile's image size.

    ``check_images`` also decodes every image (slower; the build already wrote them whole).
    """
    folder = datasets_root(profile, root) / f"{domain}_{role}"
    if not folder.is_dir():
        raise InputError(
            f"{folder} does not exist; run genlineage.data.build_datasets(profile) for profile "
            f"{profile.get('name')!r} first (domains: {sorted(profile['data'].get('domains') or {})}, roles: {list(ROLES)})."
        )
    return read_imagefolder(folder, size=int(profile["data"]["image_size"]), check_images=check_images)


def load_pretrain_folder(profile: Any, base: str | None = None, root: str | Path | None = None,
                         check_images: bool = False) -> ImageFolder:
    """The pre-training corpus, or only the rows ``base`` is pre-trained on."""
    folder = datasets_root(profile, root) / "pretrain"
    if not folder.is_dir():
        raise InputError(f"{folder} does not exist; run genlineage.data.build_datasets(profile) first.")
    corpus = read_imagefolder(folder, size=int(profile["data"]["image_size"]), check_images=check_images)
    if base is None:
        return corpus
    start, end = pretrain_subset(read_json(splits_path(profile)), base)
    return corpus.subset(start, end)
