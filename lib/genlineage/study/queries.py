"""The key sets of each source and the queries every suspicious model is asked: stage 04's work,
here because stage 03 asks a model them before it releases its weights (``models.keep_finetuned``)
and the world grid asks its shadows them too.

Per source, three key sets (Strategy 1 detection, Strategy 2 generation, Baseline 2 random) of
``max(n_keys_grid)`` keys each, stored best first so that every N of Figure 7 is a prefix. Per
suspicious model, every key prompt is queried with the profile's ``attribution.query_seeds`` and
the reconstruction distance RD = min over them of d(reference, generation) is written per (model,
strategy, key). The references are made with ``attribution.key_seeds``, disjoint from the query
seeds. Baseline 1 decodes the source's watermark from the suspect's generations of the random keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import layout
from ..cache import Result
from ..cached_job import CachedJob, content, in_memory, output
from ..config import GenerationConfig, Profile, as_profile
from ..data.build import load_pretrain_folder, load_split_folder
from ..generation import GenerationCache
from ..io import read_json
from ..keys import detection_keys, generation_keys, profile_seeds, random_keys
from ..key_sets import KeySet, STRATEGIES
from ..models.pipeline_io import fingerprint, load_model
from ..reconstruction import reconstruct
from ..watermark import bit_accuracy, decode, mode_for_size, watermark_conf
from .sources import source_table, source_watermark_bits

ATTRIBUTION_STAGE = "04_attribution"  # the results folder of the RD tables (notebook 04 gathers them)


def generation_setup(profile: Profile) -> tuple[GenerationConfig, GenerationCache]:
    return profile.generation, GenerationCache(layout.generation_cache_dir(profile))


def candidates(profile: Profile, source_row) -> tuple[list[str], np.ndarray]:
    """D_S, the source's training pairs: its fine-tuning set (distinct images), or for a base as
    it is its pre-training rows of the pool's domain (``suspicious.base_candidates``)."""
    cap = profile.suspicious.candidates_max
    if isinstance(source_row.domain, str):
        folder = load_split_folder(profile, source_row.domain, "source")
        rows = folder.distinct_indices()
    elif profile.suspicious.base_candidates == "pretrain":
        folder = load_pretrain_folder(profile, source_row.base)
        generator = read_json(profile.data_root / "splits.json")["domains"][source_row.pool_domain]["generator"]
        rows = [i for i, r in enumerate(folder.records) if str(r["id"]).startswith(f"{generator}:")]
    else:
        folder = load_split_folder(profile, source_row.pool_domain, "source")
        rows = folder.distinct_indices()
    rows = rows[:cap]
    images = folder.load_images(rows=rows)
    return [folder.records[i]["text"] for i in rows], images


def keys_dir(profile: Profile, source: str, strategy: str) -> Path:
    return layout.results_dir(profile, "keys") / source / strategy


def _base_of(profile: Profile, row) -> Path | None:
    """The base a fine-tuned source was tuned from (Strategy 2 measures it beside the source, and
    with ``generation_relative_to_base`` keeps the keys the source draws and its base does not);
    None for a base as it is."""
    return layout.base_dir(profile, row.base) if isinstance(row.domain, str) else None


def _relative_to_base(profile: Profile, row) -> bool:
    return profile.attribution.generation_relative_to_base and _base_of(profile, row) is not None


@dataclass(frozen=True)
class KeySetJob(CachedJob):
    """One source's key set of one strategy: made from the candidates' content and the key count;
    Strategies 1 and 2 also from the key seeds, the sampler, the distance and the source's weights,
    Strategy 2 also from the base it is judged against; Baseline 2 from its own seed and nothing the
    source draws (the inputs a strategy does not read are None)."""

    folder = True

    out: Path = output()
    strategy: str
    candidates: tuple = in_memory()
    n: int
    key_seeds: tuple[int, ...] | None = None
    generation: GenerationConfig | None = None
    distance: str | None = None
    source: Path | None = content(fingerprint, default=None)
    base: Path | None = content(fingerprint, default=None)
    relative_to_base: bool | None = None
    random_seed: int | None = None


def key_results(profile: Profile, row, prompts: list[str], images: np.ndarray) -> dict[str, Result]:
    """The three key sets of one source as cached results (:class:`KeySetJob`)."""
    att = profile.attribution
    common = {"candidates": (prompts, images), "n": min(max(att.n_keys_grid), len(prompts))}
    drawn = {"key_seeds": tuple(profile_seeds(profile)[0]), "generation": profile.generation,
             "distance": att.distance, "source": Path(row.path)}
    jobs = {"detection": KeySetJob(keys_dir(profile, row.source, "detection"), "detection", **common, **drawn),
            "generation": KeySetJob(keys_dir(profile, row.source, "generation"), "generation", **common, **drawn,
                                    base=_base_of(profile, row), relative_to_base=_relative_to_base(profile, row)),
            "random": KeySetJob(keys_dir(profile, row.source, "random"), "random", **common,
                                random_seed=att.random_seed)}
    return {s: jobs[s].result() for s in STRATEGIES}


def source_row_of(profile: Profile, source: str):
    row = source_table(profile).set_index("source").loc[source]
    row["source"] = source
    return row


def build_keys(profile: dict, source: str, progress: bool = False) -> dict[str, int]:
    """The three key sets of one source (each a cached result: see ``key_results``)."""
    profile = as_profile(profile)
    row = source_row_of(profile, source)
    prompts, images = candidates(profile, row)
    results = key_results(profile, row, prompts, images)
    cfg, cache = generation_setup(profile)
    seeds, _ = profile_seeds(profile)  # key_seeds: never the seeds suspects are queried with
    distance = profile.attribution.distance
    made = {}
    for strategy, result in results.items():
        n = int(result.inputs["n"])
        made[strategy] = n
        if result.fresh():
            continue
        if strategy == "detection":
            keys = detection_keys(load_model(profile, row.path), prompts, images, n, seeds, cfg, cache, distance)
        elif strategy == "generation":
            base = _base_of(profile, row)
            keys = generation_keys(load_model(profile, row.path), prompts, n, seeds, cfg, cache, distance,
                                   base=load_model(profile, base) if base else None,
                                   relative_to_base=_relative_to_base(profile, row))
        else:
            keys = random_keys(prompts, images, n, profile.attribution.random_seed)
        with result.building() as tmp:
            keys.save(tmp)
    return made


def load_keys(profile: Profile, source: str) -> dict[str, KeySet]:
    return {s: KeySet.load(keys_dir(profile, source, s)) for s in STRATEGIES}


def _watermark_settings(profile: Profile) -> dict:
    return profile.attribution.watermark.as_dict()


@dataclass(frozen=True)
class QueryTableJob(CachedJob):
    """One suspicious model's RD table: made from the model's weights, the query seeds, the content
    of its source's key sets, the sampler and distance, and what Baseline 1 decodes (the source's
    watermark bits and the watermark settings)."""

    out: Path = output()
    model: Path = content(fingerprint)
    query_seeds: tuple[int, ...]
    keys: dict[str, Path] = content()
    generation: GenerationConfig
    distance: str
    watermark: dict


def query_result(profile: Profile, row: dict) -> Result:
    """One suspicious model's RD table as a cached result (:class:`QueryTableJob`)."""
    _, seeds = profile_seeds(profile)
    watermark = {**_watermark_settings(profile), "bits": source_watermark_bits(profile, row["source"]).tolist()}
    return QueryTableJob(layout.results_dir(profile, ATTRIBUTION_STAGE) / "per_model" / f"{row['name']}.csv",
                         Path(row["path"]), tuple(seeds), {s: keys_dir(profile, row["source"], s) for s in STRATEGIES},
                         profile.generation, profile.attribution.distance, watermark).result()


def query_model(profile: dict, row: dict) -> dict:
    """RD of every key of every strategy on one suspicious model, and its watermark bits; returns
    the RD table's path and the watermark figures (kept in its stamp)."""
    profile = as_profile(profile)
    _, seeds = profile_seeds(profile)  # query_seeds: disjoint from the seeds the references were made with
    result = query_result(profile, row)
    if result.fresh():
        return {"per_model": str(result.path), **result.extra()}
    model = load_model(profile, row["path"])
    cfg, cache = generation_setup(profile)
    frames = []
    generations = {}
    for strategy, keys in load_keys(profile, row["source"]).items():
        rec = reconstruct(model, keys.prompts, keys.references, seeds, cfg, cache, profile.attribution.distance)
        generations[strategy] = rec.generations
        frames.append(pd.DataFrame({"model": row["name"], "strategy": strategy, "rank": np.arange(len(keys)),
                                    "key_index": keys.indices, "prompt": keys.prompts, "rd": rec.distance,
                                    "best_seed": rec.best_seed}))
    wm = _watermark_conf(profile, row, generations["random"][:, 0])
    result.write(lambda tmp: pd.concat(frames, ignore_index=True).to_csv(tmp, index=False), **wm)
    return {"per_model": str(result.path), **result.extra()}


def _watermark_conf(profile: Profile, row: dict, images: np.ndarray) -> dict:
    """Baseline 1: share of the suspect's generations that carry the source's 32-bit key."""
    cfg = _watermark_settings(profile)
    images = images[: cfg["n_images"]]
    mode = mode_for_size(*images.shape[1:3])
    bits = source_watermark_bits(profile, row["source"])
    decoded = decode(images, mode=mode)
    return {"watermark_conf": float(watermark_conf(decoded, bits, cfg["target_fpr"])),
            "watermark_bit_accuracy": float(bit_accuracy(decoded, bits).mean()), "watermark_mode": mode}
