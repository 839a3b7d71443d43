"""Stage 04: instance-level attribution of every suspicious model (the jobs themselves, key sets
and queries, are :mod:`genlineage.study.queries`).

Per source, three key sets (Strategy 1 detection, Strategy 2 generation, Baseline 2 random) of
``max(n_keys_grid)`` keys each, stored best first so that every N of Figure 7 is a prefix. Per
suspicious model, every key prompt is queried with the profile's ``attribution.query_seeds`` and
the reconstruction distance RD = min over them of d(reference, generation) is written per (model,
strategy, key): ``per_sample.csv``, from which every figure and table is rebuilt without generating
again. The references are made with ``attribution.key_seeds``, disjoint from the query seeds.
Baseline 1 decodes the source's watermark from the suspect's generations of the random keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import layout
from ..cache import Result
from ..cached_job import CachedJob, content, output
from ..config import Profile
from ..jobs import executor_for, run_jobs
from ..keys import profile_seeds
from ..models.pipeline_io import load_model
from ..reconstruction import reconstruct
from ..study.manifest import MANIFEST, read_manifest
from ..study.queries import (ATTRIBUTION_STAGE, build_keys, candidates, generation_setup, key_results, load_keys,
                             query_model, query_result, source_row_of)
from ..study.sources import source_table

STAGE = ATTRIBUTION_STAGE


def run_attribution(profile: Profile, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Key sets for every source, then every model of the manifest queried; returns
    (manifest with watermark columns, per-sample RD table) and writes both beside the results."""
    parallel, threads = profile.run.parallel_jobs, profile.run.threads_per_job
    sources = list(source_table(profile).source)
    run_jobs(build_keys,
             [{"profile": profile, "source": s} for s in sources], parallel, threads,
             desc="key samples" if progress else None, executor=executor_for(profile.run))
    manifest = read_manifest(profile)
    rows = manifest.to_dict("records")
    answers = run_jobs(query_model,
                       [{"profile": profile, "row": r} for r in rows], parallel, threads,
                       desc="queries" if progress else None, executor=executor_for(profile.run))
    per_sample = pd.concat([pd.read_csv(a["per_model"]) for a in answers], ignore_index=True)
    wm = pd.DataFrame([{k: v for k, v in a.items() if k != "per_model"} for a in answers])
    models = pd.concat([manifest.reset_index(drop=True), wm], axis=1)
    tables = results_tables(profile)
    tables["per_sample"].write(lambda tmp: per_sample.to_csv(tmp, index=False))
    tables["models"].write(lambda tmp: models.to_csv(tmp, index=False))
    return load_results(profile)


@dataclass(frozen=True)
class AttributionTableJob(CachedJob):
    """One of stage 04's two tables: made from the manifest and every model's RD table (by content)."""

    made_by = "notebook 04_instance_attribution"

    out: Path = output()
    manifest: Path = content()
    per_model: dict[str, Path] = content()


def results_tables(profile: Profile) -> dict[str, Result]:
    """Stage 04's two tables, made from the manifest and every model's RD table (by content): what
    stages 05-09 read. Checking them costs a hash of small CSVs, not of the models."""
    res = layout.results_dir(profile, STAGE)
    per_model = {name: res / "per_model" / f"{name}.csv" for name in read_manifest(profile).name}
    return {t: AttributionTableJob(res / f"{t}.csv", profile.data_root / MANIFEST, per_model).result()
            for t in ("models", "per_sample")}


def stage_results(profile: Profile) -> list[Result]:
    """Every cached result of stage 04 as a run would judge it now: three key sets per source, one
    RD table per model of the manifest, and the two tables (the invalidation tests compare these)."""
    results = []
    for source in source_table(profile).source:
        row = source_row_of(profile, source)
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
    cfg, cache = generation_setup(profile)
    _, seeds = profile_seeds(profile)  # query_seeds: what this stage asked every model with
    out = {"source": source, "strategy": strategy, "reference": keys.references, "rows": {}}
    for label, path in paths.items():
        rec = reconstruct(load_model(profile, path), keys.prompts, keys.references, seeds, cfg, cache,
                          profile.attribution.distance)
        best = rec.generations[np.arange(len(keys)), [seeds.index(int(s)) for s in rec.best_seed]]
        out["rows"][label] = (best, rec.distance)
    return out
