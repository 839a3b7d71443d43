"""Stage 04: instance-level attribution of every suspicious model.

Per source, three key sets (Strategy 1 detection, Strategy 2 generation, Baseline 2 random) of
``max(n_keys_grid)`` keys each, stored best first so that every N of Figure 7 is a prefix. Per
suspicious model, every key prompt is queried with the profile's ``attribution.query_seeds`` and
the reconstruction distance RD = min over them of d(reference, generation) is written per (model,
strategy, key): ``per_sample.csv``, from which every figure and table is rebuilt without generating
again. The references are made with ``attribution.key_seeds``, disjoint from the query seeds.
Baseline 1 decodes the source's watermark from the suspect's generations of the random keys.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Profile
from ..data.build import load_pretrain_folder, load_split_folder
from ..generation import GenerationCache, GenerationConfig
from ..io import atomic_path, read_json, stamp_matches, write_json
from ..jobs import run_jobs
from ..keys import KeySet, detection_keys, generation_keys, profile_seeds, random_keys
from ..memorization import reconstruct
from . import layout
from .suspicious import read_manifest, source_table, source_watermark_bits

STAGE = "04_attribution"
STRATEGIES = ("detection", "generation", "random")


def _gen(profile: Profile) -> tuple[GenerationConfig, GenerationCache]:
    return GenerationConfig.from_mapping(profile["generation"]), GenerationCache(layout.generation_cache_dir(profile))


def candidates(profile: Profile, source_row) -> tuple[list[str], np.ndarray]:
    """D_S, the source's training pairs: its fine-tuning set (distinct images), or for a base as
    it is its pre-training rows of the pool's domain (``suspicious.base_candidates``)."""
    cap = int(profile["suspicious"].get("candidates_max", 10**9))
    if isinstance(source_row.domain, str):
        folder = load_split_folder(profile, source_row.domain, "source")
        rows = folder.distinct_indices()
    elif profile["suspicious"].get("base_candidates", "pretrain") == "pretrain":
        folder = load_pretrain_folder(profile, source_row.base)
        generator = read_json(profile.data_root / "splits.json")["domains"][source_row.pool_domain]["generator"]
        rows = [i for i, r in enumerate(folder.records) if str(r["id"]).startswith(f"{generator}:")]
    else:
        folder = load_split_folder(profile, source_row.pool_domain, "source")
        rows = folder.distinct_indices()
    rows = rows[:cap]
    images = folder.load_images()[rows]
    return [folder.records[i]["text"] for i in rows], images


def keys_dir(profile: Profile, source: str, strategy: str) -> Path:
    return layout.results_dir(profile, "keys") / source / strategy


def build_keys(profile: dict, source: str, progress: bool = False) -> dict[str, int]:
    """The three key sets of one source (cached on disk, with what made them in their meta)."""
    profile = Profile(profile)
    att = profile["attribution"]
    row = source_table(profile).set_index("source").loc[source]
    row["source"] = source
    prompts, images = candidates(profile, row)
    n = min(max(int(k) for k in att["n_keys_grid"]), len(prompts))
    cfg, cache = _gen(profile)
    seeds, _ = profile_seeds(profile)  # key_seeds: never the seeds suspects are queried with
    source_model = profile.load_model(row.path)
    made = {}
    for strategy in STRATEGIES:
        folder = keys_dir(profile, source, strategy)
        want = {"n": n, "candidates": len(prompts), "key_seeds": seeds, "generation": cfg.key(),
                "distance": att.get("distance", "l2"), "model": read_json(Path(row.path) / "genlineage.json").get("stage_key")}
        if (folder / "_want.json").is_file() and read_json(folder / "_want.json") == want:
            made[strategy] = n
            continue
        if strategy == "detection":
            keys = detection_keys(source_model, prompts, images, n, seeds, cfg, cache, att.get("distance", "l2"))
        elif strategy == "generation":
            base = profile.load_model(layout.base_dir(profile, row.base)) if isinstance(row.domain, str) else None
            keys = generation_keys(source_model, prompts, n, seeds, cfg, cache, att.get("distance", "l2"), base=base,
                                   relative_to_base=bool(att.get("generation_relative_to_base", True)) and base is not None)
        else:
            keys = random_keys(prompts, images, n, int(att.get("random_seed", 0)))
        keys.save(folder)
        write_json(folder / "_want.json", want)
        made[strategy] = n
    return made


def load_keys(profile: Profile, source: str) -> dict[str, KeySet]:
    return {s: KeySet.load(keys_dir(profile, source, s)) for s in STRATEGIES}


def query_model(profile: dict, row: dict) -> str:
    """RD of every key of every strategy on one suspicious model, and its watermark bits."""
    profile = Profile(profile)
    att = profile["attribution"]
    _, seeds = profile_seeds(profile)  # query_seeds: disjoint from the seeds the references were made with
    out = layout.results_dir(profile, STAGE) / "per_model" / f"{row['name']}.csv"
    key = {"model": read_json(Path(row["path"]) / "genlineage.json").get("stage_key"), "query_seeds": seeds,
           "keys": {s: read_json(keys_dir(profile, row["source"], s) / "_want.json") for s in STRATEGIES}}
    stamp = out.with_suffix(".json")
    if out.is_file() and stamp_matches(stamp, key):
        return str(out)
    model = profile.load_model(row["path"])
    cfg, cache = _gen(profile)
    frames = []
    generations = {}
    for strategy, keys in load_keys(profile, row["source"]).items():
        rec = reconstruct(model, keys.prompts, keys.references, seeds, cfg, cache, att.get("distance", "l2"))
        generations[strategy] = rec.generations
        frames.append(pd.DataFrame({"model": row["name"], "strategy": strategy, "rank": np.arange(len(keys)),
                                    "key_index": keys.indices, "prompt": keys.prompts, "rd": rec.distance,
                                    "best_seed": rec.best_seed}))
    wm = _watermark_conf(profile, row, generations["random"][:, 0])
    with atomic_path(out) as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)
    write_json(stamp, {"key": key, **wm})
    return str(out)


def _watermark_conf(profile: Profile, row: dict, images: np.ndarray) -> dict:
    """Baseline 1: share of the suspect's generations that carry the source's 32-bit key."""
    from ..watermark import bit_accuracy, decode, mode_for_size, watermark_conf

    cfg = profile["attribution"].get("watermark", {})
    images = images[: int(cfg.get("n_images", 30))]
    mode = mode_for_size(*images.shape[1:3])
    bits = source_watermark_bits(profile, row["source"])
    decoded = decode(images, mode=mode)
    return {"watermark_conf": float(watermark_conf(decoded, bits, float(cfg.get("target_fpr", 0.1)))),
            "watermark_bit_accuracy": float(bit_accuracy(decoded, bits).mean()), "watermark_mode": mode}


def run_attribution(profile: Profile, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Key sets for every source, then every model of the manifest queried; returns
    (manifest with watermark columns, per-sample RD table) and writes both beside the results."""
    parallel, threads = int(profile.get("parallel_jobs", 1)), int(profile.get("threads_per_job", 1))
    sources = list(source_table(profile).source)
    run_jobs("genlineage.experiments.attribution.build_keys",
             [{"profile": dict(profile), "source": s} for s in sources], parallel, threads,
             desc="key samples" if progress else None)
    manifest = read_manifest(profile)
    rows = manifest.to_dict("records")
    paths = run_jobs("genlineage.experiments.attribution.query_model",
                     [{"profile": dict(profile), "row": r} for r in rows], parallel, threads,
                     desc="queries" if progress else None)
    per_sample = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    wm = pd.DataFrame([read_json(Path(p).with_suffix(".json")) for p in paths]).drop(columns=["key"])
    models = pd.concat([manifest.reset_index(drop=True), wm], axis=1)
    res = layout.results_dir(profile, STAGE)
    with atomic_path(res / "per_sample.csv") as tmp:
        per_sample.to_csv(tmp, index=False)
    with atomic_path(res / "models.csv") as tmp:
        models.to_csv(tmp, index=False)
    return models, per_sample


def load_results(profile: Profile) -> tuple[pd.DataFrame, pd.DataFrame]:
    res = layout.results_dir(profile, STAGE)
    return pd.read_csv(res / "models.csv"), pd.read_csv(res / "per_sample.csv")
