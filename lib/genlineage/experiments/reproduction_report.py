"""Stage 09: what the reproduction report says, from the cached results of stages 02-08.

Every table read here must carry a stamp that matches its current inputs
(``cache.Result.require``): a missing or stale one stops the stage with the notebook to re-run,
rather than giving a shorter or older report. Nothing is recomputed but the claims' judgements.
``report.reproduction`` writes the markdown from what this returns.
"""
from __future__ import annotations

import pandas as pd

from .. import timings
from ..config import Profile
from .claims import (COLUMNS, PRIMARY_DELTA0, as_sensitivity, figure6_claims, figure7_claims, inheritance_claims,
                     memorisation_claims, table1_claims, table2_claims)
from .instance_attribution import load_results
from .instance_tables import deltas, evaluated_confs, figure7_per_model, inheritance, table2_per_model
from .memorisation import load_memorisation, memorisation_checks
from .model_owner_verify import false_positive_rates, load_pools, load_verdicts, true_positive_rates
from .statistical_attribution import load_table1
from .world_grid import coverage_summary, load_coverage, source_key_indices


def key_coverage(profile: Profile, delta0: dict[str, float]) -> pd.DataFrame | None:
    """Per evaluated infringing model: the share of its source's Strategy-2 keys that the images
    the source generated into its training set come within ``delta0`` (per source) of; None when
    stage 03 measured no coverage (a profile without the table)."""
    coverage = load_coverage(profile)
    if coverage.empty:
        return None
    summary = coverage_summary(coverage, delta0, source_key_indices(profile))
    return summary[summary.role == "evaluated"]


def all_claims(profile: Profile) -> pd.DataFrame:
    """One row per claim: the paper's section, its claim, our figure with its interval over
    models, and held / not held / inconclusive / n/a (``experiments.claims`` says how each is judged)."""
    models, per_sample = load_results(profile)
    D, _ = deltas(profile, models, per_sample)
    summary, per_image = load_memorisation(profile)
    parts = [memorisation_claims(memorisation_checks(summary, per_image))]
    accuracy = watermark_accuracy(models)
    parts.append(figure6_claims(evaluated_confs(profile, models, per_sample, D[PRIMARY_DELTA0]), PRIMARY_DELTA0, accuracy,
                                key_coverage(profile, D[PRIMARY_DELTA0])))
    parts.append(inheritance_claims(inheritance(profile, models, per_sample, D["calibrated"]),
                                    sorted(models[models.role == "evaluated"].source.unique())))
    parts.append(table2_claims(table2_per_model(profile, models, per_sample, D["calibrated"])))
    parts.append(figure7_claims(figure7_per_model(profile, models, per_sample, D["calibrated"])))
    parts.append(table1_claims(load_table1(profile)))  # notebook 05's table, refused if stale: never recomputed here
    parts.append(as_sensitivity(figure6_claims(evaluated_confs(profile, models, per_sample, D["paper"]), "paper", accuracy,
                                               key_coverage(profile, D["paper"])),
                                "the paper's delta0 = 0.15"))
    rows = []
    for r in load_pools(profile).to_dict("records"):  # notebook 08's comparison of the tool's innocent nulls
        rows.append({
            "section": "model owner's tool",
            "paper's claim": f"(beyond the paper) `genlineage verify` at target FPR {r['target FPR']:g}, one suspect at "
                             f"a time, null: {r['innocent pool']} ({r['innocent shadows per suspect']} innocent shadows "
                             f"per suspect; statistic {r['statistic']})",
            "ours": f"called infringing: {r['infringing called']} infringing (TPR {r['TPR']:.2f} [{r['TPR_low']:.2f}, "
                    f"{r['TPR_high']:.2f}]), {r['innocent called']} innocent (FPR {r['FPR']:.2f} [{r['FPR_low']:.2f}, "
                    f"{r['FPR_high']:.2f}]); refused {r['refused']}",
            "held": "n/a"})
    rows += owner_test_rows(load_verdicts(profile, "population"))
    parts.append(pd.DataFrame(rows, columns=COLUMNS))
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def watermark_accuracy(models: pd.DataFrame) -> float | None:
    """Baseline 1's mean bit accuracy over the evaluated infringing models (None: not measured)."""
    column = "watermark_bit_accuracy"
    inf = models[(models.role == "evaluated") & (models.label == 1)] if column in models else models.iloc[0:0]
    return float(inf[column].mean()) if len(inf) and inf[column].notna().any() else None


def owner_test_rows(table: pd.DataFrame) -> list[dict]:
    """The owner's test on evaluated models it never saw: the realised false-positive rate at each
    target and the true-positive rate per rho at 5%, each with its exact interval over models."""
    rows = []
    for r in false_positive_rates(table).to_dict("records"):
        rows.append({"section": "model owner's tool",
                     "paper's claim": "(beyond the paper) false-positive rate on evaluated innocents at target "
                                      f"{r['target FPR']:g}",
                     "ours": f"{r['innocent called']} called: {r['FPR']:.3f} [{r['FPR_low']:.3f}, {r['FPR_high']:.3f}]"
                             f"{'' if r['target within interval'] else ' (the target lies outside this interval)'}",
                     "held": "n/a"})
    tpr = true_positive_rates(table, "rho")
    for r in tpr[tpr["target FPR"] == 0.05].to_dict("records"):
        rows.append({"section": "model owner's tool",
                     "paper's claim": f"(beyond the paper) infringing models called at target 0.05, rho = {r['rho']:g}",
                     "ours": f"{r['infringing called']}: {r['TPR']:.2f} [{r['TPR_low']:.2f}, {r['TPR_high']:.2f}]",
                     "held": "n/a"})
    return rows


def timing_table(profile: Profile) -> pd.DataFrame:
    """Per stage: *cold (s)*, its time in the latest complete cold run (one uninterrupted run of
    every stage from no cached work, every stage ok: what a fresh clone costs), and *latest (s)*,
    its most recent successful run (a cached re-run when nothing changed). Cold times all come
    from one run, never from the slowest run of each stage; with no complete cold run the column
    holds "-" and ``attrs["cold_run"]`` (the sentence the report prints) says so."""
    t = timings.read_timings(profile)  # the record's rules (what is cold, what is complete) live beside its writer
    cold_id = timings.latest_cold_run(t)
    cold = t[t.run == cold_id].set_index("stage").seconds if cold_id else pd.Series(dtype=float)
    latest = t[t.status == "ok"].groupby("stage", sort=True).seconds.last()
    rows = [{"stage": stage, "cold (s)": float(cold[stage]) if stage in cold.index else "-",
             "latest (s)": float(latest[stage]) if stage in latest.index else "-"}
            for stage in sorted(set(latest.index) | set(cold.index))]
    if rows:
        rows.append({"stage": "total", "cold (s)": float(cold.sum()) if cold_id else "-",
                     "latest (s)": float(latest.sum())})
    table = pd.DataFrame(rows, columns=["stage", "cold (s)", "latest (s)"])
    if cold_id:
        table.attrs["cold_run"] = f"*cold* is {timings.describe_run(t, cold_id)}, the latest complete cold run."
    else:
        running = timings.unfinished_cold_run(t)
        table.attrs["cold_run"] = "**No complete cold run is recorded**, so no cold time is shown" + (
            f"; this run (`{running}`) is cold but still running (this report is one of its stages): "
            f"once it has finished, `bash run_all.sh {profile.name} --only 09` rewrites the report with it."
            if running else ".")
    return table
