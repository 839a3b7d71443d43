"""The reproduction report: every claim of the paper's section 3 beside our figure, held or not,
plus what the run cost. Generated from the cached results of stages 02-07 (notebook 08), so it
always says what the pipeline measured and nothing else.

Why one markdown file: a reader who never runs anything should see, in one place, which of the
paper's numbers this artifact reproduced at this profile and which it did not.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import REPO_ROOT, Profile
from ..experiments.attribution import load_results
from ..experiments.instance import (deltas, evaluated_confs, figure6_claims, figure6_table, figure7_claims,
                                    figure7_table, inheritance, table2, table2_claims)
from ..experiments.memorisation import memorisation_checks, memorisation_table
from ..experiments.statistical import score_models, table1, table1_claims
from ..io import write_text
from ..runner import read_timings
from .tables import markdown, tables_dir


def report_path(profile: Profile) -> Path:
    """The committed profile (one with ``figures_dir``) reports at the repository root; others beside their data."""
    return REPO_ROOT / f"REPRODUCTION_{profile.name}.md" if profile.get("figures_dir") else profile.data_root / "REPRODUCTION.md"


def all_claims(profile: Profile) -> pd.DataFrame:
    """One row per claim: the paper's section, its claim, our figure, held / not held / n/a."""
    models, per_sample = load_results(profile)
    D, _ = deltas(profile, models, per_sample)
    parts = []

    summary, _ = memorisation_table(profile)
    checks = memorisation_checks(profile, summary)
    target = next(c for c in checks.columns if c.startswith("nearest_own >="))
    low = checks.loc[checks.nearest_own.idxmin()]
    parts.append(pd.DataFrame([{
        "paper's claim": "3.1 premise: fine-tuned sources memorise their training images",
        "ours": f"nearest-own share {checks.nearest_own.min():.0%}-{checks.nearest_own.max():.0%} "
                f"(lowest {low.source}; chance {checks.chance.iloc[0]:.1%})",
        "held": "held" if checks[target].all() else "not held", "section": "3.1 memorisation"}]))

    for tag in ("paper", "calibrated"):
        f6 = figure6_table(evaluated_confs(profile, models, per_sample, D[tag]))
        parts.append(figure6_claims(f6).assign(section=f"Figure 6 (delta0 {tag} = {D[tag]:.3f})"))

    inh = inheritance(profile, models, per_sample, D["calibrated"])
    if len(inh):
        shown = inh["shown (CI excludes 0)"]
        parts.append(pd.DataFrame([{
            "paper's claim": "rho = 1 infringing models reconstruct the keys closer than innocent ones (every source)",
            "ours": f"shown (95% CI of the RD gap above 0) for {int(shown.sum())} of {len(inh)} source x lineage pairs",
            "held": "held" if shown.all() else "not held", "section": "Figure 6 / inheritance"}]))

    parts.append(table2_claims(table2(profile, models, per_sample)).assign(section="Table 2"))
    parts.append(figure7_claims(figure7_table(profile, models, per_sample, D["calibrated"])).assign(section="Figure 7"))
    saved = tables_dir(profile) / "table1_statistical.csv"  # notebook 05's table: its bootstrap is not redone here
    t1 = pd.read_csv(saved) if saved.is_file() else table1(profile, score_models(profile, models, per_sample))
    parts.append(table1_claims(t1).assign(section="Table 1"))
    pools = tables_dir(profile) / "verify_pools.csv"  # notebook 08's comparison of the tool's innocent nulls
    for r in (pd.read_csv(pools).to_dict("records") if pools.is_file() else []):
        parts.append(pd.DataFrame([{
            "paper's claim": f"(beyond the paper) `genlineage verify` at target FPR {r['target FPR']:g}, one suspect at "
                             f"a time, innocent shadows: {r['innocent pool']} ({r['innocent shadows per source']} per source)",
            "ours": f"called infringing: {r['infringing called']} infringing, {r['innocent called']} innocent; "
                    f"refused {r['refused']}",
            "held": "n/a", "section": "model owner's tool"}]))
    table = pd.concat(parts, ignore_index=True)
    return table[["section", "paper's claim", "ours", "held"]]


def timing_table(profile: Profile) -> pd.DataFrame:
    """Per stage: the longest recorded run (the one that did the work: the cold cost of the current
    data) and the latest run (a cached re-run when nothing changed since)."""
    t = read_timings(profile)
    t = t[t.status == "ok"] if len(t) else t
    if not len(t):
        return pd.DataFrame(columns=["stage", "cold (s)", "latest (s)", "note"])
    rows = []
    for stage, g in t.groupby("stage", sort=True):
        cold = g.loc[g.seconds.idxmax()]
        rows.append({"stage": stage, "cold (s)": float(cold.seconds), "latest (s)": float(g.seconds.iloc[-1]),
                     "note": "" if pd.isna(cold.get("note")) else str(cold.get("note"))})
    table = pd.DataFrame(rows)
    total = {"stage": "total", "cold (s)": table["cold (s)"].sum(), "latest (s)": table["latest (s)"].sum(), "note": ""}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def build_report(profile: Profile) -> str:
    claims = all_claims(profile)
    held = (claims.held == "held").sum()
    judged = (claims.held != "n/a").sum()
    times = timing_table(profile)
    lines = [
        f"# Reproduction report: profile `{profile.name}`",
        "",
        "Generated by notebook `09_reproduction_report` (`bash run_all.sh "
        f"{profile.name}`) from the cached results of stages 02-07. Every figure below is what the pipeline "
        "measured; nothing is tuned on the evaluated models (delta0 and the discriminator come from shadow models).",
        "",
        f"**{held} of {judged} judged claims held.** The paper's numbers are for SD-v1.5/v2.1 at 512 px; "
        f"this profile is `{profile.name}` (see `lib/genlineage/profiles/{profile.name}.yaml`).",
        "",
        "Spread: the suspicious models of this profile are trained for one seed of the shadow/evaluation "
        "split (notebook 05 says why); the spread shown is over models and keys (bootstrap 95% CIs in "
        "notebooks 04 and 05, ranges over sources here).",
        "",
        "## The paper's claims (section 3) beside ours",
        "",
        markdown(claims),
        "## Wall time on this machine",
        "",
        "Recorded by `run_all.sh` (`data/<profile>/results/run_all_timings.csv`). *cold* is the longest recorded "
        "run of the stage (the run that trained and generated), *latest* the most recent (a cached re-run "
        "when nothing changed).",
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
