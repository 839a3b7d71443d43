"""Stage 03's first job: the suspects' world (training-set size n, fine-tune steps), chosen on
shadow models only, and two measurements of that world the claims need.

Why: the paper's suspects see 500 pairs for a few epochs of a 3,000-image source; ours saw 30
pairs for 480 epochs, and what the owner's test can see depends on that choice more than on any
statistic. So the choice is made the way every other setting here is: on shadow models, by a
rule written in the profile before the run (:data:`WORLD_RULE`), and recorded as stage 03's
output (``world.json``, read back by :func:`genlineage.config.with_chosen_world`), before any
evaluated model exists.

The two measurements:

- **coverage**: how many distinct source training images an infringer's *generated* training
  images come within delta0 of. A suspect can only bring back a key it has seen a near-copy of (or
  generalises to), so the share of keys covered bounds what conf can show over innocent models.
- **suspect memorisation**: how closely a grid shadow reproduces its own training images from
  their captions (nearest-own share and own RD), as notebook 02 measures it for the sources.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import layout
from ..cache import Result
from ..cached_job import CachedJob, content, output
from ..config import WORLD_FILE, GenerationConfig, Profile, as_profile, chosen_world, with_chosen_world
from ..data.imagefolder import read_imagefolder
from ..distances import get_distance, pairwise_l2
from ..generation import GenerationCache
from ..io import atomic_path, write_json
from ..jobs import executor_for, run_jobs
from ..keys import profile_seeds
from ..key_sets import KeySet
from ..models.pipeline_io import fingerprint, load_model
from ..reconstruction import nearest_own_per_image, reconstruct
from ..study.queries import build_keys, candidates, keys_dir
from .suspicious_models import build_suspicious_model, training_set_job
from ..study.manifest import plan_manifest, plan_null_shadows, read_manifest, suspicious_row
from ..study.sources import source_table

STAGE = "03_world"
GRID_REPLICATE = -2  # the replicate column of the grid's shadows: none of the run's replicates
MAIN_STRATEGY_KEYS = "generation"

WORLD_RULE = (
    "Written before the run that applies it (profile key suspicious.world). Each cell (n, steps) of the "
    "grid trains, for every source, `shadows` infringing shadows at rho and as many innocent ones, from "
    "the source's base on pairs of its domain's shadow pool (never an evaluated model's pool). A cell is "
    "eligible when stage 03's fine-tunes at its steps (every suspicious, shadow and null-shadow model) fit "
    "budget_steps. Among eligible cells the one with the largest gap wins: the innocent shadows' mean RD "
    "minus the infringing shadows' over the source's first n_keys Strategy-2 keys, averaged over sources; "
    "ties go to fewer steps, then to the smaller n.")


def grid_cells(profile: Profile) -> list[tuple[int, int]]:
    """The grid's (n, steps) cells in the profile's order."""
    grid = profile.suspicious.world
    return [(int(n), int(s)) for n in grid.n_samples for s in grid.steps]


def stage03_models(profile: Profile) -> int:
    """How many fine-tunes stage 03 runs at the chosen world: its count does not depend on n or steps."""
    return len(plan_manifest(profile)) + len(plan_null_shadows(profile))


def cell_steps(profile: Profile, steps: int) -> int:
    """Stage 03's fine-tune steps if every model trained ``steps``: what the budget caps."""
    return stage03_models(profile) * int(steps)


def plan_grid(profile: Profile) -> pd.DataFrame:
    """Every grid shadow: per cell and source, infringing shadows at the grid's rho and innocent ones,
    each named for its cell, its seed derived from the name (so cells draw different pairs)."""
    grid = profile.suspicious.world
    rows = []
    for n, steps in grid_cells(profile):
        tag = f"grid-n{n}-t{steps}"
        for _, src in source_table(profile).iterrows():
            plan = [(grid.rho, 300 + i) for i in range(grid.shadows)] + [(0.0, 400 + i) for i in range(grid.shadows)]
            rows += [suspicious_row(profile, src, "shadow", "same", src.base, rho, rep, GRID_REPLICATE,
                                    n_samples=n, train_steps=steps, tag=tag) for rho, rep in plan]
    return pd.DataFrame(rows)


def _keys(profile: Profile, source: str) -> KeySet:
    return KeySet.load(keys_dir(profile, source, MAIN_STRATEGY_KEYS))


@dataclass(frozen=True)
class GridShadowJob(CachedJob):
    """One grid shadow's measurements: made from its weights, its training set, the source's keys,
    the key count, the seeds, the sampler and the distance."""

    out: Path = output()
    model: Path = content(fingerprint)
    data: Path = content()
    keys: Path = content()
    n_keys: int
    query_seeds: tuple[int, ...]
    memorisation_seeds: tuple[int, ...]
    generation: GenerationConfig
    distance: str


def measure_result(profile: Profile, row: dict) -> Result:
    """One grid shadow's measurements: made from its weights, its training set, the source's keys,
    the seeds, the sampler and the distance."""
    _, query_seeds = profile_seeds(profile)
    return GridShadowJob(layout.results_dir(profile, STAGE) / f"{row['name']}.json", Path(row["path"]),
                         training_set_job(profile, row).out, keys_dir(profile, row["source"], MAIN_STRATEGY_KEYS),
                         profile.attribution.n_keys, tuple(query_seeds), tuple(profile.memorisation.seeds),
                         profile.generation, profile.attribution.distance).result()


def measure_grid_shadow(profile: dict, row: dict) -> dict:
    """Train the grid shadow (cached), then its mean RD over the source's first n_keys keys and how
    closely it reproduces its own training images (returned; kept in the result's stamp)."""
    profile = as_profile(profile)
    build_suspicious_model(profile, row)
    result = measure_result(profile, row)
    if result.fresh():
        return result.extra()
    model = load_model(profile, row["path"])
    cfg, cache = profile.generation, GenerationCache(layout.generation_cache_dir(profile))
    _, query_seeds = profile_seeds(profile)
    keys = _keys(profile, row["source"])
    n = min(profile.attribution.n_keys, len(keys))
    rd = reconstruct(model, keys.prompts[:n], keys.references[:n], query_seeds, cfg, cache, profile.attribution.distance)
    folder = read_imagefolder(training_set_job(profile, row).out, size=profile.data.image_size)
    own_images = folder.load_images()
    own = reconstruct(model, folder.captions, own_images, list(profile.memorisation.seeds), cfg, cache,
                      profile.memorisation.distance)
    nearest = nearest_own_per_image(own.generations, own_images, np.arange(len(own_images)))
    summary = {"name": row["name"], "mean_rd": float(rd.distance.mean()), "own_rd": float(own.distance.mean()),
               "nearest_own": float(nearest.mean()), "chance": 1.0 / len(own_images)}
    result.write(lambda tmp: write_json(tmp, summary), **summary)
    return summary


def ensure_keys(profile: Profile, progress: bool = False) -> None:
    """Every source's key sets (stage 04's, cached): the grid and the coverage need them in stage 03."""
    run = profile.run
    run_jobs(build_keys,
             [{"profile": profile, "source": s} for s in source_table(profile).source], run.parallel_jobs,
             run.threads_per_job, desc="key samples" if progress else None, executor=executor_for(run))


def grid_table(profile: Profile, progress: bool = True) -> pd.DataFrame:
    """Every grid shadow with its measurements (trained and measured as parallel jobs; cached)."""
    run = profile.run
    ensure_keys(profile, progress)
    rows = plan_grid(profile)
    answers = run_jobs(measure_grid_shadow,
                       [{"profile": profile, "row": r} for r in rows.to_dict("records")], run.parallel_jobs,
                       run.threads_per_job, desc="world grid" if progress else None, executor=executor_for(run))
    measured = pd.DataFrame(answers).drop(columns="name")
    return pd.concat([rows.reset_index(drop=True), measured], axis=1)


def cell_gaps(table: pd.DataFrame) -> pd.DataFrame:
    """Per cell and source: innocent minus infringing mean RD of the grid's shadows."""
    means = table.groupby(["n_samples", "train_steps", "source", "label"]).mean_rd.mean().unstack("label")
    return (means[0] - means[1]).rename("gap").reset_index()


def choose_cell(table: pd.DataFrame, budget_steps: int, models: int) -> tuple[pd.DataFrame, tuple[int, int]]:
    """The rule of :data:`WORLD_RULE` on a measured grid table: one row per cell (its gap averaged
    over sources, its worst source, its memorisation, its stage-03 steps, whether it fits the
    budget, whether chosen) and the chosen (n, steps). Refuses a grid where no cell fits."""
    gaps = cell_gaps(table)
    cells = gaps.groupby(["n_samples", "train_steps"]).gap.agg(gap="mean", min_gap="min", sources="count").reset_index()
    memory = (table.groupby(["n_samples", "train_steps"])[["nearest_own", "own_rd", "chance"]].mean().reset_index())
    cells = cells.merge(memory, on=["n_samples", "train_steps"])
    cells["stage03_steps"] = cells.train_steps * int(models)
    cells["fits_budget"] = (cells.stage03_steps <= budget_steps) if budget_steps else True
    eligible = cells[cells.fits_budget]
    if eligible.empty:
        raise ValueError(f"no cell of the world grid fits budget_steps {budget_steps} ({models} models); "
                         "raise the budget or add cheaper cells to suspicious.world.")
    best = eligible.sort_values(["gap", "train_steps", "n_samples"], ascending=[False, True, True]).iloc[0]
    chosen = (int(best.n_samples), int(best.train_steps))
    cells["chosen"] = [(int(n), int(s)) == chosen for n, s in zip(cells.n_samples, cells.train_steps)]
    return cells, chosen


def choose_world(profile: Profile, progress: bool = True) -> tuple[Profile, pd.DataFrame, pd.DataFrame]:
    """Run the grid (cached), apply the rule, write ``world.json`` and the grid tables, and return
    the profile with the chosen world, the per-shadow table and the per-cell table. A profile
    without a grid returns itself and empty tables."""
    grid = profile.suspicious.world
    if not grid.enabled:
        return profile, pd.DataFrame(), pd.DataFrame()
    table = grid_table(profile, progress)
    cells, (n, steps) = choose_cell(table, grid.budget_steps, stage03_models(profile))
    out = layout.results_dir(profile, STAGE)
    for name, frame in (("grid_shadows.csv", table), ("grid_cells.csv", cells)):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    record = {"n_samples": n, "steps": steps, "grid": grid.as_dict(), "rule": WORLD_RULE}
    if chosen_world(profile) != record:
        with atomic_path(profile.data_root / WORLD_FILE) as tmp:
            write_json(tmp, record)
    return with_chosen_world(profile), table, cells


# --- coverage -------------------------------------------------------------------------------------

def _nearest_distance(candidate_images: np.ndarray, generated: np.ndarray, distance: str) -> np.ndarray:
    """Per source training image: its distance to the nearest generated image (inf when none)."""
    if len(generated) == 0:
        return np.full(len(candidate_images), np.inf)
    if distance == "l2":
        return pairwise_l2(candidate_images, generated).min(axis=1)
    return get_distance(distance)(candidate_images[:, None], generated[None]).min(axis=1)


def generated_images(profile: Profile, row: dict) -> np.ndarray:
    """The source-generated images of one model's training set (float [0, 1]), its set released or not."""
    return training_set_job(profile, row).generated_images()


def coverage_table(profile: Profile, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """For every infringing model of the manifest (evaluated and shadow) and every source training
    image (stage 04's candidates, in their order: a key's ``key_index`` points here), the distance
    to the nearest image the source generated into the model's training set. The coverage at a
    delta0 is the share of rows below it; notebook 03 shows it at the paper's delta0, the claims at
    each source's calibrated one."""
    manifest = read_manifest(profile) if manifest is None else manifest
    frames = []
    for source, models in manifest[manifest.rho > 0].groupby("source"):
        src = source_table(profile).set_index("source").loc[source]
        src["source"] = source
        _, images = candidates(profile, src)
        for row in models.to_dict("records"):
            near = _nearest_distance(images, generated_images(profile, row), profile.attribution.distance)
            frames.append(pd.DataFrame({"name": row["name"], "source": source, "role": row["role"],
                                        "replicate": row["replicate"], "rho": row["rho"],
                                        "candidate_index": np.arange(len(images)), "nearest_generated": near}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def coverage_summary(coverage: pd.DataFrame, delta0: float | dict[str, float], keys: dict[str, list[int]] | None = None
                     ) -> pd.DataFrame:
    """Per model: how many distinct source training images (and, given each source's key indices,
    what share of its keys) its generated training images come within delta0 of; ``delta0`` one
    number or one per source."""
    def threshold(source: str) -> float:
        return float(delta0[source]) if isinstance(delta0, dict) else float(delta0)

    rows = []
    for (name, source), group in coverage.groupby(["name", "source"], sort=False):
        covered = group.nearest_generated.to_numpy() < threshold(source)
        row = {"name": name, "source": source, "role": group.role.iloc[0], "replicate": group.replicate.iloc[0],
               "rho": group.rho.iloc[0], "delta0": threshold(source), "covered_images": int(covered.sum()),
               "source_images": len(group)}
        if keys is not None:
            index = group.set_index("candidate_index").nearest_generated
            row["covered_keys"] = float((index.loc[keys[source]].to_numpy() < threshold(source)).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def save_coverage(profile: Profile, coverage: pd.DataFrame) -> Path:
    """Write the coverage table beside the grid's (stage 03's output; stage 09's claims read it)."""
    path = layout.results_dir(profile, STAGE) / "coverage.csv"
    with atomic_path(path) as tmp:
        coverage.to_csv(tmp, index=False)
    return path


def load_coverage(profile: Profile) -> pd.DataFrame:
    path = layout.results_dir(profile, STAGE) / "coverage.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def source_key_indices(profile: Profile) -> dict[str, list[int]]:
    """Each source's first n_keys Strategy-2 keys, as indices into its candidates (stage 04's keys,
    built here when stage 03 ran no grid that built them)."""
    ensure_keys(profile)
    n = profile.attribution.n_keys
    return {s: [int(i) for i in _keys(profile, s).indices[:n]] for s in source_table(profile).source}


def coverage_by_rho(summary: pd.DataFrame) -> pd.DataFrame:
    """Per source and rho, over the infringing models: the mean number of distinct source images
    their generated training images come within delta0 of, its range, and the mean share of keys."""
    agg = {"covered_images": ["mean", "min", "max"], "source_images": "first"}
    if "covered_keys" in summary:
        agg["covered_keys"] = "mean"
    out = summary.groupby(["source", "rho"]).agg(agg)
    out.columns = ["covered images (mean)", "fewest", "most", "source images"] + (
        ["share of keys covered"] if "covered_keys" in summary else [])
    return out.reset_index()


def cell_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The per-cell table as notebook 03 and ``tables/world_grid`` show it: words for headers, and
    figures at the precision that tells cells apart."""
    if cells.empty:
        return cells
    out = pd.DataFrame({
        "pairs (n)": cells.n_samples, "steps": cells.train_steps,
        "gap, mean over sources": cells.gap.round(4), "gap, smallest source": cells.min_gap.round(4),
        "nearest-own share (own set)": cells.nearest_own.round(3), "chance (1/n)": cells.chance.round(3),
        "own RD": cells.own_rd.round(4), "stage-03 steps": cells.stage03_steps,
        "fits budget": cells.fits_budget.map({True: "yes", False: "no"}),
        "chosen": cells.chosen.map({True: "chosen", False: ""})})
    return out
