"""Stage 02b: memorisation of each fine-tuned source, shown rather than assumed.

For each source (a base fine-tuned on a domain) and, as the control, each base as it is: the
reconstruction distance of the source's own training pairs against held-out pairs of the same
domain, and the share of its generations whose nearest training image is their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..cached_job import CachedJob, code_of, content, output
from ..config import GenerationConfig, MemorisationSettings, Profile, as_profile
from ..data.imagefolder import read_imagefolder
from ..generation import GenerationCache, release_cached
from ..cache import Result
from ..models.pipeline_io import fingerprint, load_model
from ..jobs import executor_for, run_jobs
from ..intervals import paired_greater_p
from ..reconstruction import nearest_own_per_image, query_pairs, reconstruct, summarize
from .. import layout

STAGE = "02_source_models"


def _stem(base: str, domain: str, finetuned: bool) -> str:
    return f"rd_{base}_{domain}_{'source' if finetuned else 'base'}"


MEASURE_CODE = (__name__, "genlineage.reconstruction", "genlineage.distances", "genlineage.intervals")


@dataclass(frozen=True)
class MemorisationJob(CachedJob):
    """One model's RD table on a domain: made from the model's weights, the content of the domain's
    source and held-out sets, the sampler, the memorisation settings and the code that measures."""

    out: Path = output()
    model: Path = content(fingerprint)
    own: Path = content()
    heldout: Path = content()
    generation: GenerationConfig
    memorisation: MemorisationSettings
    code: tuple[str, ...] = code_of()


@dataclass(frozen=True)
class MemorisationSummaryJob(CachedJob):
    """The memorisation summary: made from every model's RD table (by content, named by stem)."""

    made_by = "notebook 02_source_models"

    out: Path = output()
    tables: dict[str, Path] = content()

    def inputs(self) -> dict:
        return super().inputs()["tables"]  # one input per RD table, as the summary's stamp names them


def measure_result(profile: Profile, base: str, domain: str, finetuned: bool) -> Result:
    data = layout.datasets_dir(profile)
    return MemorisationJob(layout.results_dir(profile, STAGE) / f"{_stem(base, domain, finetuned)}.csv",
                           layout.source_dir(profile, base, domain if finetuned else None),
                           data / f"{domain}_source", data / f"{domain}_heldout", profile.generation,
                           profile.memorisation, MEASURE_CODE).result()


def measure_model(profile: dict, base: str, domain: str, finetuned: bool, progress: bool = False) -> dict:
    """RD rows and nearest-own share of one model on ``domain``'s source and held-out sets; returns
    the summary (kept in the RD table's stamp)."""
    profile = as_profile(profile)
    name = f"{base}-{domain}" if finetuned else f"{base} (base) on {domain}"
    result = measure_result(profile, base, domain, finetuned)
    if result.fresh():
        return result.extra()
    components = load_model(profile, layout.source_dir(profile, base, domain if finetuned else None))
    size = profile.data.image_size
    cfg, mem = profile.generation, profile.memorisation
    cache = GenerationCache(layout.generation_cache_dir(profile))
    frames, results, asked = [], {}, []
    for split, role in (("own", "source"), ("heldout", "heldout")):
        folder = read_imagefolder(layout.datasets_dir(profile) / f"{domain}_{role}", size=size)
        keep = folder.distinct_indices()
        images = folder.load_images(rows=keep)
        captions = [folder.records[i]["text"] for i in keep]
        rec = reconstruct(components, captions, images, list(mem.seeds), cfg, cache, mem.distance, progress)
        results[split] = (rec, images)
        asked += captions
        frames.append(pd.DataFrame({"model": name, "base": base, "domain": domain, "finetuned": finetuned,
                                    "split": split, "id": [folder.records[i].get("id") for i in keep],
                                    "caption": captions, "rd": rec.distance, "best_seed": rec.best_seed}))
    rows = pd.concat(frames, ignore_index=True)
    own_rec, own_images = results["own"]
    per_image = nearest_own_per_image(own_rec.generations, own_images, np.arange(len(own_images)))
    rows["nearest_own"] = np.r_[per_image, np.full(len(rows) - len(per_image), np.nan)]
    summary = {"model": name, "base": base, "domain": domain, "finetuned": finetuned,
               "n_train": len(own_images), "chance": 1.0 / len(own_images),
               "nearest_own": float(per_image.mean()), **summarize(rows)}
    result.write(lambda tmp: rows.to_csv(tmp, index=False), **summary)
    if not profile.models.keep_memorisation_images:  # the paper profile: the table is all that is read
        release_cached(cache, components.content_id, *query_pairs(asked, list(mem.seeds)), cfg)
    return result.extra()  # what a cached run returns (read back from the stamp): cold and cached tables match


def memorisation_jobs(profile: Profile) -> list[tuple[str, str, bool]]:
    return [(b, d, ft) for b in sorted(profile.models.bases) for d in sorted(profile.data.domains)
            for ft in (True, False)]


def table_result(profile: Profile) -> Result:
    """The memorisation summary as a cached result (:class:`MemorisationSummaryJob`)."""
    res = layout.results_dir(profile, STAGE)
    stems = (_stem(*job) for job in memorisation_jobs(profile))
    return MemorisationSummaryJob(res / "memorisation.csv", {stem: res / f"{stem}.csv" for stem in stems}).result()


def memorisation_table(profile: Profile, progress: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per model, RD per sample) for every fine-tuned source and its base as control."""
    jobs = [{"profile": profile, "base": b, "domain": d, "finetuned": ft, "progress": progress}
            for b, d, ft in memorisation_jobs(profile)]
    summaries = run_jobs(measure_model, jobs, profile.run.parallel_jobs,
                         profile.run.threads_per_job, desc="memorisation", executor=executor_for(profile.run))
    table = pd.DataFrame(summaries)
    table_result(profile).write(lambda tmp: table.to_csv(tmp, index=False))
    return load_memorisation(profile)


def load_memorisation(profile: Profile) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What stage 02b measured, for readers that must not measure again (the report): refused
    (``cache.StaleResult``) when the summary is missing or no longer matches the RD tables."""
    table = pd.read_csv(table_result(profile).require())
    res = layout.results_dir(profile, STAGE)
    per_sample = pd.concat([pd.read_csv(res / f"{_stem(*job)}.csv") for job in memorisation_jobs(profile)], ignore_index=True)
    return table, per_sample


def stage_results(profile: Profile) -> list[Result]:
    """Every cached result of stage 02b as a run would judge it now (the invalidation tests compare these)."""
    return [measure_result(profile, *job) for job in memorisation_jobs(profile)] + [table_result(profile)]


def reconstruction_examples(profile: Profile, base: str, domain: str, n: int = 6) -> dict[str, np.ndarray]:
    """For the source's ``n`` most memorised training pairs: the reference image, the source's
    best reconstruction and the base's best one (read from the generation cache)."""
    size = profile.data.image_size
    res = layout.results_dir(profile, STAGE)
    rows = pd.read_csv(res / f"rd_{base}_{domain}_source.csv")
    own = rows[rows.split == "own"].nsmallest(n, "rd")
    folder = read_imagefolder(layout.datasets_dir(profile) / f"{domain}_source", size=size)
    index = {r.get("id"): i for i, r in reversed(list(enumerate(folder.records)))}
    images = folder.load_images()
    cfg, mem = profile.generation, profile.memorisation
    cache = GenerationCache(layout.generation_cache_dir(profile))
    out = {"reference": np.stack([images[index[i]] for i in own.id]), "caption": list(own.caption)}
    for label, finetuned in (("source", True), ("base", False)):
        comp = load_model(profile, layout.source_dir(profile, base, domain if finetuned else None))
        rec = reconstruct(comp, list(own.caption), out["reference"], list(mem.seeds), cfg, cache, mem.distance)
        best = rec.generations[np.arange(len(own)), [list(mem.seeds).index(s) for s in rec.best_seed]]
        out[label], out[f"{label}_rd"] = best, rec.distance
    return out


def memorisation_checks(summary: pd.DataFrame, per_sample: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per fine-tuned source: its nearest-own share beside its base's on the same captions and
    seeds, and a one-sided paired test over the training images that the source's per-image share
    is above the base's (what memorisation means whatever the scale; a fixed target would not)."""
    own = per_sample[per_sample.split == "own"]
    rows = []
    for _, r in summary[summary.finetuned].iterrows():
        base = summary[(~summary.finetuned) & (summary.base == r.base) & (summary.domain == r.domain)]
        src_images = own[own.model == r.model].reset_index(drop=True).nearest_own  # same captions, same order
        base_images = (own[own.model == base.model.iloc[0]].reset_index(drop=True).nearest_own if len(base)
                       else src_images * np.nan)
        if len(base_images) != len(src_images):
            base_images = src_images * np.nan
        paired = pd.concat([src_images.rename("source"), base_images.rename("base")], axis=1).dropna()
        p = paired_greater_p(paired.source, paired.base) if len(paired) else float("nan")
        p_reverse = paired_greater_p(paired.base, paired.source) if len(paired) else float("nan")
        rows.append({
            "source": r.model,
            "nearest_own": round(r.nearest_own, 3),
            "base_nearest_own": round(float(base.nearest_own.iloc[0]), 3) if len(base) else float("nan"),
            "chance": round(r.chance, 3),
            "images": len(paired),
            "p_source_above_base": p,
            "p_base_above_source": p_reverse,
            f"source above base (p < {alpha:g})": bool(p < alpha),
            "rd own median": round(r.rd_own_median, 4),
            "rd heldout median": round(r.rd_heldout_median, 4),
            f"own < heldout (p < {alpha:g})": bool(r.own_below_heldout_p < alpha),
        })
    return pd.DataFrame(rows)
