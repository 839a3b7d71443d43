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

from ..config import GenerationConfig, Profile, as_profile
from ..data.build import load_pretrain_folder, load_split_folder
from ..generation import GenerationCache
from ..cache import Result, array_id, content_id
from ..io import read_json
from ..jobs import executor_for, run_jobs
from ..keys import STRATEGIES, KeySet, detection_keys, generation_keys, profile_seeds, random_keys
from ..reconstruction import reconstruct
from .. import layout
from ..models.pipeline_io import fingerprint, load_model
from .suspicious_models import MANIFEST, read_manifest, source_table, source_watermark_bits

STAGE = "04_attribution"


def _gen(profile: Profile) -> tuple[GenerationConfig, GenerationCache]:
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


def key_results(profile: Profile, row, prompts: list[str], images: np.ndarray) -> dict[str, Result]:
    """The three key sets of one source as cached results: each made from the candidates' content,
    the key count, the key seeds, the sampler and distance, and the source's weights; Strategy 2 also
    from the base it is judged against, Baseline 2 from its own seed and nothing the source draws."""
    att = profile.attribution
    n = min(max(att.n_keys_grid), len(prompts))
    seeds, _ = profile_seeds(profile)
    common = {"candidates": array_id(prompts, images), "n": n}
    drawn = {"key_seeds": seeds, "generation": profile.generation.key(), "distance": att.distance,
             "source": fingerprint(row.path)}
    base = _base_of(profile, row)
    inputs = {"detection": {**common, **drawn},
              "generation": {**common, **drawn, "base": fingerprint(base) if base else None,
                             "relative_to_base": _relative_to_base(profile, row)},
              "random": {**common, "random_seed": att.random_seed}}
    return {s: Result(keys_dir(profile, row.source, s), {"strategy": s, **inputs[s]}, folder=True) for s in STRATEGIES}


def _source_row(profile: Profile, source: str):
    row = source_table(profile).set_index("source").loc[source]
    row["source"] = source
    return row


def build_keys(profile: dict, source: str, progress: bool = False) -> dict[str, int]:
    """The three key sets of one source (each a cached result: see ``key_results``)."""
    profile = as_profile(profile)
    row = _source_row(profile, source)
    prompts, images = candidates(profile, row)
    results = key_results(profile, row, prompts, images)
    cfg, cache = _gen(profile)
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


def query_result(profile: Profile, row: dict) -> Result:
    """One suspicious model's RD table: made from the model's weights, the query seeds, the content
    of its source's key sets, the sampler and distance, and what Baseline 1 decodes (the source's
    watermark bits and the watermark settings)."""
    _, seeds = profile_seeds(profile)
    return Result(layout.results_dir(profile, STAGE) / "per_model" / f"{row['name']}.csv", {
        "model": fingerprint(row["path"]), "query_seeds": seeds,
        "keys": {s: content_id(keys_dir(profile, row["source"], s)) for s in STRATEGIES},
        "generation": profile.generation.key(), "distance": profile.attribution.distance,
        "watermark": {**_watermark_settings(profile), "bits": source_watermark_bits(profile, row["source"]).tolist()}})


def query_model(profile: dict, row: dict) -> dict:
    """RD of every key of every strategy on one suspicious model, and its watermark bits; returns
    the RD table's path and the watermark figures (kept in its stamp)."""
    profile = as_profile(profile)
    _, seeds = profile_seeds(profile)  # query_seeds: disjoint from the seeds the references were made with
    result = query_result(profile, row)
    if result.fresh():
        return {"per_model": str(result.path), **result.extra()}
    model = load_model(profile, row["path"])
    cfg, cache = _gen(profile)
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
    from ..watermark import bit_accuracy, decode, mode_for_size, watermark_conf

    cfg = _watermark_settings(profile)
    images = images[: cfg["n_images"]]
    mode = mode_for_size(*images.shape[1:3])
    bits = source_watermark_bits(profile, row["source"])
    decoded = decode(images, mode=mode)
    return {"watermark_conf": float(watermark_conf(decoded, bits, cfg["target_fpr"])),
            "watermark_bit_accuracy": float(bit_accuracy(decoded, bits).mean()), "watermark_mode": mode}


def run_attribution(profile: Profile, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Key sets for every source, then every model of the manifest queried; returns
    (manifest with watermark columns, per-sample RD table) and writes both beside the results."""
    parallel, threads = profile.run.parallel_jobs, profile.run.threads_per_job
    sources = list(source_table(profile).source)
    run_jobs("genlineage.experiments.instance_attribution.build_keys",
             [{"profile": profile, "source": s} for s in sources], parallel, threads,
             desc="key samples" if progress else None, executor=executor_for(profile.run))
    manifest = read_manifest(profile)
    rows = manifest.to_dict("records")
    answers = run_jobs("genlineage.experiments.instance_attribution.query_model",
                       [{"profile": profile, "row": r} for r in rows], parallel, threads,
                       desc="queries" if progress else None, executor=executor_for(profile.run))
    per_sample = pd.concat([pd.read_csv(a["per_model"]) for a in answers], ignore_index=True)
    wm = pd.DataFrame([{k: v for k, v in a.items() if k != "per_model"} for a in answers])
    models = pd.concat([manifest.reset_index(drop=True), wm], axis=1)
    tables = results_tables(profile)
    tables["per_sample"].write(lambda tmp: per_sample.to_csv(tmp, index=False))
    tables["models"].write(lambda tmp: models.to_csv(tmp, index=False))
    return load_results(profile)


def results_tables(profile: Profile) -> dict[str, Result]:
    """Stage 04's two tables, made from the manifest and every model's RD table (by content): what
    stages 05-09 read. Checking them costs a hash of small CSVs, not of the models."""
    manifest = read_manifest(profile)
    inputs = {"manifest": content_id(profile.data_root / MANIFEST),
              "per_model": {name: content_id(layout.results_dir(profile, STAGE) / "per_model" / f"{name}.csv")
                            for name in manifest.name}}
    res = layout.results_dir(profile, STAGE)
    return {t: Result(res / f"{t}.csv", inputs, made_by="notebook 04_instance_attribution") for t in ("models", "per_sample")}


def stage_results(profile: Profile) -> list[Result]:
    """Every cached result of stage 04 as a run would judge it now: three key sets per source, one
    RD table per model of the manifest, and the two tables (the invalidation tests compare these)."""
    results = []
    for source in source_table(profile).source:
        row = _source_row(profile, source)
        results += list(key_results(profile, row, *candidates(profile, row)).values())
    results += [query_result(profile, r) for r in read_manifest(profile).to_dict("records")]
    return results + list(results_tables(profile).values())


def load_results(profile: Profile) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(models, per-sample RD) of stage 04; refused (``cache.StaleResult``, naming notebook 04) when
    either is missing or was made from another manifest or other RD tables."""
    tables = results_tables(profile)
    return pd.read_csv(tables["models"].require()), pd.read_csv(tables["per_sample"].require())


def reconstruction_examples(profile: Profile, models: pd.DataFrame, source: str, strategy: str,
                            n: int = 6) -> dict:
    """What notebook 04 shows beside Figure 6 for one source: the first ``n`` key references, and
    for the source, a rho = 1 infringing model and an innocent one (own lineage) the best
    reconstruction of each key at the query seeds and its RD (read from the generation cache)."""
    keys = load_keys(profile, source)[strategy]
    keys = keys.subset(min(n, len(keys)))
    ev = models[(models.role == "evaluated") & (models.source == source) & (models.lineage == "same")]
    paths = {"source": ev.source_path.iloc[0], "infringing rho=1": ev[ev.rho == 1.0].path.iloc[0],
             "innocent": ev[ev.rho == 0.0].path.iloc[0]}
    cfg, cache = _gen(profile)
    _, seeds = profile_seeds(profile)  # query_seeds: what this stage asked every model with
    out = {"source": source, "strategy": strategy, "reference": keys.references, "rows": {}}
    for label, path in paths.items():
        rec = reconstruct(load_model(profile, path), keys.prompts, keys.references, seeds, cfg, cache,
                          profile.attribution.distance)
        best = rec.generations[np.arange(len(keys)), [seeds.index(int(s)) for s in rec.best_seed]]
        out["rows"][label] = (best, rec.distance)
    return out
