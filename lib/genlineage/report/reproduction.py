"""The reproduction report: every claim of the paper's section 3 beside our figure, held or not,
plus what the run cost. Generated from the cached results of stages 02-08 (notebook 09), so it
always says what the pipeline measured and nothing else: every table it reads must carry a stamp
that matches its current inputs (``cache.Result.require``), and a missing or stale one stops the
report with the notebook to re-run, rather than giving a shorter or older report.

Why one markdown file: a reader who never runs anything should see, in one place, which of the
paper's numbers this artifact reproduced at this profile and which it did not.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import REPO_ROOT, Profile
from ..experiments.instance_attribution import load_results
from ..experiments.claims import (COLUMNS, figure6_claims, figure7_claims, inheritance_claims, memorisation_claims,
                                  table1_claims, table2_claims, verdict_tally)
from ..experiments.instance_tables import deltas, evaluated_confs, figure7_per_model, inheritance, table2_per_model
from ..experiments.memorisation import load_memorisation, memorisation_checks
from ..experiments.statistical_attribution import load_table1
from ..experiments.suspicious_models import replicates
from ..experiments.model_owner_verify import load_pools
from ..io import write_text
from ..runner import read_timings
from .tables import markdown


def report_path(profile: Profile) -> Path:
    """The committed profile (one with ``figures_dir``) reports at the repository root; others beside their data."""
    return REPO_ROOT / f"REPRODUCTION_{profile.name}.md" if profile.get("figures_dir") else profile.data_root / "REPRODUCTION.md"


def all_claims(profile: Profile) -> pd.DataFrame:
    """One row per claim: the paper's section, its claim, our figure with its interval over
    models, and held / not held / inconclusive / n/a (``experiments.claims`` says how each is judged)."""
    models, per_sample = load_results(profile)
    D, _ = deltas(profile, models, per_sample)
    summary, per_image = load_memorisation(profile)
    parts = [memorisation_claims(memorisation_checks(summary, per_image))]
    for tag in ("paper", "calibrated"):
        parts.append(figure6_claims(evaluated_confs(profile, models, per_sample, D[tag]), tag))
    parts.append(inheritance_claims(inheritance(profile, models, per_sample, D["calibrated"]),
                                    sorted(models[models.role == "evaluated"].source.unique())))
    parts.append(table2_claims(table2_per_model(profile, models, per_sample, D["calibrated"])))
    parts.append(figure7_claims(figure7_per_model(profile, models, per_sample, D["calibrated"])))
    parts.append(table1_claims(load_table1(profile)))  # notebook 05's table, refused if stale: never recomputed here
    rows = []
    for r in load_pools(profile).to_dict("records"):  # notebook 08's comparison of the tool's innocent nulls
        rows.append({
            "section": "model owner's tool",
            "paper's claim": f"(beyond the paper) `genlineage verify` at target FPR {r['target FPR']:g}, one suspect at "
                             f"a time, innocent shadows: {r['innocent pool']} ({r['innocent shadows per source']} per source)",
            "ours": f"called infringing: {r['infringing called']} infringing (TPR {r['TPR']:.2f} [{r['TPR_low']:.2f}, "
                    f"{r['TPR_high']:.2f}]), {r['innocent called']} innocent (FPR {r['FPR']:.2f} [{r['FPR_low']:.2f}, "
                    f"{r['FPR_high']:.2f}]); refused {r['refused']}",
            "held": "n/a"})
    parts.append(pd.DataFrame(rows, columns=COLUMNS))
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def spread_text(profile: Profile) -> str:
    """What the intervals resample and how many seeds stand behind them."""
    seeds = replicates(profile)
    return (f"Spread: stages 03-08 ran for {len(seeds)} master seeds ({', '.join(map(str, seeds))}), each its own draw "
            "of the suspicious models' training pairs, model seeds and shadow set; the sources of stage 02 and their "
            "key sets are shared. Every interval is a 95% interval over **models** (Student-t over per-model values; "
            "Welch for a difference of two groups; exact permutation tests over models for inheritance; bootstrap "
            "resampling models for Table 1; Clopper-Pearson for the tool's rates). A claim is *held* when its whole "
            "interval lies on the paper's side, *not held* when none of it does, *inconclusive* when it straddles.")


def timing_table(profile: Profile) -> pd.DataFrame:
    """Per stage: *cold (s)*, its time in the latest complete cold run (one uninterrupted run of
    every stage from no cached work, every stage ok: what a fresh clone costs), and *latest (s)*,
    its most recent successful run (a cached re-run when nothing changed). Cold times all come
    from one run, never from the slowest run of each stage; with no complete cold run the column
    holds "-" and ``attrs["cold_run"]`` (the sentence the report prints) says so."""
    from .. import runner  # the record's rules (what is cold, what is complete) live beside its writer

    t = read_timings(profile)
    cold_id = runner.latest_cold_run(t)
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
        table.attrs["cold_run"] = f"*cold* is {runner.describe_run(t, cold_id)}, the latest complete cold run."
    else:
        running = runner.unfinished_cold_run(t)
        table.attrs["cold_run"] = "**No complete cold run is recorded**, so no cold time is shown" + (
            f"; this run (`{running}`) is cold but still running (this report is one of its stages): "
            f"once it has finished, `bash run_all.sh {profile.name} --only 09` rewrites the report with it."
            if running else ".")
    return table


def build_report(profile: Profile) -> str:
    claims = all_claims(profile)
    tally = verdict_tally(claims)
    judged = sum(tally.values())
    times = timing_table(profile)
    lines = [
        f"# Reproduction report: profile `{profile.name}`",
        "",
        "Generated by notebook `09_reproduction_report` (`bash run_all.sh "
        f"{profile.name}`) from the cached results of stages 02-08. Every figure below is what the pipeline "
        "measured; nothing is tuned on the evaluated models (delta0 and the discriminator come from shadow models).",
        "",
        f"**Of {judged} judged claims: {tally['held']} held, {tally['not held']} not held, {tally['inconclusive']} "
        f"inconclusive.** The paper's numbers are for SD-v1.5/v2.1 at 512 px; "
        f"this profile is `{profile.name}` (see `lib/genlineage/profiles/{profile.name}.yaml`).",
        "",
        spread_text(profile),
        "",
        "## The paper's claims (section 3) beside ours",
        "",
        markdown(claims),
        "## Wall time",
        "",
        "Recorded by `run_all.sh` per stage and run (`data/<profile>/results/run_all_timings.csv`, with the "
        "machine and commit). *cold (s)*: the stage's time in one uninterrupted `bash run_all.sh "
        f"{profile.name}` of every stage that started with no cached work (nothing under `data/<profile>/` "
        "but that record: a fresh clone) and ran every stage ok; all from the same run. *latest (s)*: the "
        "stage's most recent successful run (a cached re-run when nothing changed). "
        + times.attrs.get("cold_run", ""),
        "",
        markdown(times, digits=0) if len(times) else "(no timings recorded yet)\n",
        "## Where to look",
        "",
        "Figures 6-7 and the ROC curves: `figures/` (PNG and PDF). Tables 1-2: `tables/` (CSV and markdown). "
        "Per-sample distances: `data/<profile>/results/04_attribution/per_sample.csv`. Executed notebooks: "
        "`outputs/<profile>/` (committed copies of the tiny run: `notebooks/`).",
        "",
    ]
    return "\n".join(lines)


def write_report(profile: Profile) -> Path:
    path = report_path(profile)
    write_text(path, build_report(profile))
    return path
