"""Write every dataset a profile needs: one image folder per (domain, role), plus ``pretrain``.

Layout under ``<data_root>/datasets`` (``data_root`` = ``$GENLINEAGE_DATA/<profile>``)::

    celeba_source/  celeba_heldout/  celeba_suspicious_pool/  celeba_shadow_pool/
    cc3m_source/    ...              pretrain/
    <domain>_pool/  (real-data domains only: the converted release, cut into roles by id)

and ``<data_root>/splits.json`` records which id went where. Each folder is a cached result
(:class:`genlineage.cache.Result`) written atomically with its stamp, which records everything
that determines its content (seed, image size, the domain's config, the exact ids in order, the
generators' or converters' code, for real data the converted pool); a folder whose stamp matches
is left alone, so a second build costs nothing and an interrupted one resumes where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from tqdm import tqdm

from ..errors import InputError
from ..cache import STAMP, Result, code_id, listing_id
from ..cached_job import CachedJob, code_of, content, hashed, output
from ..config import DomainSettings, as_profile
from ..io import clean_partials, read_json, stable_hash, write_json
from . import Sample
from .convert import convert_cc3m, convert_celeba_dialog
from .faces import face_sample
from .imagefolder import ImageFolder, read_imagefolder, write_imagefolder
from .scenes import scene_sample
from .splits import REAL_KINDS, ROLES, check_disjoint, make_splits, parse_id, pretrain_subset, role_entries

# The code a folder is made by is part of its cache key (``cache.code_id``): the converters' or the
# generators' and the image-folder writer's. An edit to them rebuilds the folders by itself; no
# version is bumped by hand.
FOLDER_CODE = ("genlineage.data.imagefolder",)
POOL_CODE = ("genlineage.data.convert", *FOLDER_CODE)
GENERATOR_CODE = ("genlineage.data.faces", "genlineage.data.scenes")
GENERATORS: dict[str, Callable[[int, int, int], Sample]] = {"faces": face_sample, "scenes": scene_sample}


def splits_path(profile: Any) -> Path:
    """Where ``build_datasets`` writes the split file of ``profile``."""
    return Path(profile.data_root) / "splits.json"


def datasets_root(profile: Any, root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else Path(profile.data_root) / "datasets"


@dataclass(frozen=True)
class PoolJob(CachedJob):
    """A real-data domain's converted pool: made from the release's files (by listing, see
    ``cache.listing_id``: tens of GB are not re-hashed on every run), the converter's code and the
    conversion settings."""

    folder = True

    out: Path = output()
    code: tuple[str, ...] = code_of()
    kind: str
    release: Path = content(listing_id)
    images: Path | None = content(listing_id)
    size: int
    limit: int | None


def pool_result(name: str, cfg: DomainSettings, out_root: Path, size: int) -> Result:
    return PoolJob(out_root / f"{name}_pool", POOL_CODE, cfg.kind, Path(cfg.root).expanduser(),
                   Path(cfg.images).expanduser() if cfg.images else None, size, cfg.limit).result()


@dataclass(frozen=True)
class ImageFolderJob(CachedJob):
    """One (domain, role) image folder, or ``pretrain``: made from its ids in order, the seed and
    size, its domain's config, the writer's code, and what it is drawn from: the generators' code,
    or the converted pool it is cut from (named by the pool's stamp: the pool is this stage's own
    result, written atomically, and its stamp records the release it was converted from)."""

    folder = True

    out: Path = output()
    made_from: str
    code: tuple[str, ...] = code_of()
    seed: int
    image_size: int
    config: dict
    entries: tuple[str, ...] = hashed(32)
    n: int


def _build_pool(name: str, cfg: DomainSettings, out_root: Path, size: int, progress: bool) -> ImageFolder:
    """Convert a real-data domain's release once into ``<name>_pool`` (cached like the roles)."""
    if not cfg.root:
        raise InputError(
            f"data.domains.{name} (kind {cfg.kind}) has no 'root'; set it to the local copy of the "
            f"dataset (see genlineage.data.convert for the layouts accepted)."
        )
    src_path = Path(cfg.root).expanduser()
    limit, images = cfg.limit, cfg.images
    result = pool_result(name, cfg, out_root, size)
    folder = result.path
    if not result.fresh():
        if progress:
            tqdm.write(f"converting {cfg.kind} from {src_path} into {folder}")
        stamp = {STAMP: result.stamp_record(root=str(src_path))}
        if cfg.kind == "celeba_dialog":
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


def _role_results(profile: Any, out_root: Path, pools: Mapping[str, ImageFolder], splits: Mapping) -> list[tuple]:
    """(result, domain, ids) of every role folder and of ``pretrain``. A folder is made from its ids
    in order, the seed and size, its domain's config, and either the generators' code or the
    converted pool it is cut from (named by the pool's stamp: the pool is this stage's own result,
    written atomically, and its stamp records the release it was converted from)."""
    data = profile.data
    size, seed = data.image_size, profile.run.seed
    jobs: list[tuple[str, str, list[str], dict]] = []
    for name, cfg in sorted(data.domains.items()):
        for role in ROLES:
            jobs.append((f"{name}_{role}", name, role_entries(splits, name, role), cfg.as_dict()))
    if splits["pretrain"]["n"]:
        jobs.append(("pretrain", "pretrain", role_entries(splits, "pretrain"), data.pretrain.as_dict()))
    out = []
    for folder_name, domain, entries, cfg in jobs:
        made_from = (stable_hash(read_json(pools[domain].root / STAMP)["inputs"]) if domain in pools
                     else code_id(*GENERATOR_CODE))
        result = ImageFolderJob(out_root / folder_name, made_from, FOLDER_CODE, seed, size, cfg, tuple(entries),
                                len(entries)).result()
        out.append((result, domain, entries))
    return out


def _pools_and_splits(profile: Any, out_root: Path, progress: bool) -> tuple[dict[str, ImageFolder], dict]:
    pools = {name: _build_pool(name, cfg, out_root, profile.data.image_size, progress)
             for name, cfg in sorted(profile.data.domains.items()) if cfg.kind in REAL_KINDS}
    splits = make_splits(profile, {name: [str(r["id"]) for r in pool.records] for name, pool in pools.items()})
    check_disjoint(splits)
    return pools, splits


def stage_results(profile: Any, root: str | Path | None = None) -> list[Result]:
    """Every image folder of the profile as a build would judge it now (the invalidation tests
    compare these); the real-data pools must already be converted."""
    profile = as_profile(profile)
    out_root = datasets_root(profile, root)
    pools, splits = _pools_and_splits(profile, out_root, progress=False)
    return [r for r, _, _ in _role_results(profile, out_root, pools, splits)]


def build_datasets(profile: Any, root: str | Path | None = None, progress: bool = True) -> dict[str, Path]:
    """Write all of ``profile``'s image folders and ``splits.json``; return ``{folder name: path}``.

    Generated domains are drawn at ``data.image_size`` with the profile seed; real-data
    domains (``kind: celeba_dialog`` / ``cc3m``, with ``root: <local path>``) are converted
    once into ``<domain>_pool`` and cut into the same roles by a seeded permutation of ids.
    """
    profile = as_profile(profile)
    size, seed = profile.data.image_size, profile.run.seed
    out_root = datasets_root(profile, root)
    out_root.mkdir(parents=True, exist_ok=True)
    clean_partials(out_root)
    pools, splits = _pools_and_splits(profile, out_root, progress)
    write_json(splits_path(profile), splits)
    folders: dict[str, Path] = {}
    for result, domain, entries in _role_results(profile, out_root, pools, splits):
        folders[result.path.name] = result.path
        if result.fresh():
            continue
        if domain in pools:
            items = _real_items(entries, domain, pools[domain])
        else:
            items = _generated_items(entries, domain, size, seed)
        bar = tqdm(items, total=len(entries), desc=result.path.name, unit="image", disable=not progress, leave=False)
        stamp = result.stamp_record(folder=result.path.name, n=len(entries), profile=profile.name)
        write_imagefolder(result.path, bar, extra_files={STAMP: stamp})
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
            f"{profile.name!r} first (domains: {sorted(profile.data.domains)}, roles: {list(ROLES)})."
        )
    return read_imagefolder(folder, size=profile.data.image_size, check_images=check_images)


def load_pretrain_folder(profile: Any, base: str | None = None, root: str | Path | None = None,
                         check_images: bool = False) -> ImageFolder:
    """The pre-training corpus, or only the rows ``base`` is pre-trained on."""
    folder = datasets_root(profile, root) / "pretrain"
    if not folder.is_dir():
        raise InputError(f"{folder} does not exist; run genlineage.data.build_datasets(profile) first.")
    corpus = read_imagefolder(folder, size=profile.data.image_size, check_images=check_images)
    if base is None:
        return corpus
    start, end = pretrain_subset(read_json(splits_path(profile)), base)
    return corpus.subset(start, end)
