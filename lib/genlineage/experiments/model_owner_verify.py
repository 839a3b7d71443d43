"""Stage 08: the model owner's tool (``genlineage verify``) on every evaluated suspicious model.

Why: the paper reports figures over many models; an owner has one suspect. Running the tool on
each evaluated model, with shadow models as the null and the stored key samples, shows how often
its verdict is right at a stated false-positive rate. The generation cache of the pipeline is
shared, so only the shadows' control pairs and the shared null shadows cost new queries.

The null (``population``): every innocent shadow made the way the suspect was made: fine-tuned
from the suspect's base, by the profile's method, on real pairs of the source's domain (each
replicate's innocent shadows of that base and domain, and the shared ``null_shadows`` of stage 03).
Measured on the tiny profile before this rule: innocent shadows of the *other* base sat farther
from the keys for two sources and closer for the other two, so a pool of both bases gave innocent
p-values far from uniform. ``controls`` uses no shadow at all: the domain's held-out pairs, asked
of the suspect itself (the tool's Fisher fallback), with the delta0 calibrated on the source's shadow
models in notebook 04.

The statistic is chosen first, on shadows only (:func:`statistic_selection`): every candidate of
the profile's ``verify.candidates`` judges each shadow left out in turn against the others, and
``genlineage.verify.statistics.SELECTION_RULE`` picks one. Only then is any evaluated model asked.
No evaluated model is ever part of a null or of the choice. Rates are over models, with exact
(Clopper-Pearson) 95% intervals: the model is the unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kstest

from ..cached_job import CachedJob, code_of, content, output
from ..config import AttributionSettings, GenerationConfig, OwnerTestSettings, Profile, StatisticalSettings, as_profile
from ..errors import InputError
from ..intervals import binomial_interval
from ..jobs import executor_for, run_jobs
from ..cache import Result
from ..models.pipeline_io import fingerprint, stage_model
from ..verify import verify, write_report
from ..verify import statistics
from ..verify.report import EVIDENCE_MARK
from ..verify.verdict import check_settings, control_key_set, query_kind, statistic_settings
from ..key_sets import KeySet
from .. import layout
from ..study.manifest import MANIFEST, NULL_SHADOWS, read_manifest, read_null_shadows
from ..study.owner_prompts import controls_dir
from ..study.queries import keys_dir
from .instance_attribution import load_results, results_tables
from .instance_tables import delta0_for, deltas, inheritance

STAGE = "08_verify"
# The code a verdict table is computed by besides its stage's own module (its cache key's "code"):
# stage 08's and notebook 10's.
VERDICT_CODE = ("genlineage.experiments.instance_tables", "genlineage.verify", "genlineage.metrics",
                "genlineage.intervals", "genlineage.distances")


INNOCENT_POOLS = ("population", "controls")
TARGETS = (0.01, 0.05, 0.1)   # the false-positive rates the calibration tables are read at
EVIDENCE_HEADING = EVIDENCE_MARK  # where the tool's report.md turns from the decision to the evidence


def all_shadows(profile: Profile) -> pd.DataFrame:
    """Every shadow model: each replicate's (the manifest) and the shared null shadows."""
    manifest = read_manifest(profile)
    return pd.concat([manifest[manifest.role == "shadow"], read_null_shadows(profile)], ignore_index=True)


def population_paths(shadows: pd.DataFrame, base: str, domain: str) -> list[str]:
    """The innocent shadows made like a suspect tuned from ``base`` on ``domain``: the null's rule."""
    pool = shadows[(shadows.label == 0) & (shadows.base == base) & (shadows.domain == domain)]
    return list(pool.sort_values("name").path)


def infringing_paths(shadows: pd.DataFrame, source: str) -> list[str]:
    """The source's infringing shadows (every replicate): the statistic's references (delta0, the
    discriminator) and the infringing side of the choice among statistics."""
    return list(shadows[(shadows.label == 1) & (shadows.source == source)].sort_values("name").path)


def null_models(profile: Profile, shadows: pd.DataFrame, model: pd.Series, pool: str, statistic: str) -> dict:
    """``verify``'s null arguments for one evaluated model: the population's innocent shadows and
    the source's infringing ones (with the control pairs when the statistic asks them), or the
    domain's held-out pairs as the Fisher null's controls."""
    if pool not in INNOCENT_POOLS:
        raise ValueError(f"innocent pool {pool!r}: choose one of {INNOCENT_POOLS}")
    if pool == "controls":
        return {"controls": controls_dir(profile, model.domain)}
    needs = statistics.get_statistic(statistic).needs_controls
    return {"innocent_shadows": population_paths(shadows, model.base, model.domain),
            "infringing_shadows": infringing_paths(shadows, model.source), "statistic": statistic,
            "controls": controls_dir(profile, model.domain) if needs else None}



# --- the statistic, chosen on shadows ---------------------------------------------------------------

@dataclass(frozen=True)
class SelectionJob(CachedJob):
    """The leave-one-shadow-out table of every candidate statistic: made from every shadow's
    weights, the key sets, the control pairs and the settings (no evaluated model)."""

    made_by = "notebook 08_model_owner_verify"

    out: Path = output()
    shadows: dict[str, Path] = content(fingerprint)
    keys: dict[str, Path] = content()
    controls: dict[str, Path] = content()
    verify: OwnerTestSettings
    attribution: AttributionSettings
    statistical: StatisticalSettings
    generation: GenerationConfig


def selection_result(profile: Profile) -> Result:
    """The statistic selection as a cached result (:class:`SelectionJob`)."""
    shadows = all_shadows(profile)
    strategy = profile.attribution.main_strategy
    return SelectionJob(layout.results_dir(profile, STAGE) / "statistic_selection.csv",
                        {r["name"]: Path(r["path"]) for r in shadows.to_dict("records")},
                        {s: keys_dir(profile, s, strategy) for s in sorted(shadows.source.unique())},
                        {d: controls_dir(profile, d) for d in sorted(shadows.domain.unique())},
                        profile.verify, profile.attribution, profile.statistical, profile.generation).result()


def source_shadow_units(profile: Profile, source_row: pd.Series, shadows: pd.DataFrame, progress: bool = False
                 ) -> tuple[list[statistics.Unit], list[statistics.Unit]]:
    """One source's shadows as the statistics' units (keys and control pairs asked, through the
    tool's own query code and the pipeline's generation cache): (innocent population, infringing).
    A job of :func:`statistic_selection` (the sources' shadows are disjoint, so sources run at once)."""
    profile = as_profile(profile)
    run = check_settings(target_fpr=profile.verify.selection_fpr, budget=None, n_keys=None, delta0=None,
                         profile=profile, out=layout.results_dir(profile, STAGE) / "selection",
                         cache_dir=layout.generation_cache_dir(profile), progress=progress)
    key_set = KeySet.load(keys_dir(profile, source_row.source, profile.attribution.main_strategy))
    controls = control_key_set(controls_dir(profile, source_row.domain), key_set.references.shape[1],
                               profile.verify.n_controls)
    units = []
    for kind, paths in (("innocent", population_paths(shadows, source_row.base, source_row.domain)),
                        ("infringing", infringing_paths(shadows, source_row.source))):
        keys, ctrl = query_kind(kind, paths, key_set, run), query_kind(kind, paths, controls, run)
        units.append([statistics.Unit(k, c) for k, c in zip(keys, ctrl)])
    return units[0], units[1]


def statistic_selection(profile: Profile, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(every candidate's leave-one-shadow-out rows, one summary row per candidate, the chosen
    statistic): the choice of notebook 08, made on shadow models only, by ``SELECTION_RULE``."""
    result = selection_result(profile)
    candidates = list(profile.verify.candidates)
    alpha = profile.verify.selection_fpr
    if not result.fresh():
        shadows = all_shadows(profile)
        manifest = read_manifest(profile)
        sources = manifest[manifest.lineage == "same"].drop_duplicates("source").sort_values("source")
        rows = [r for _, r in sources.iterrows()]
        answers = run_jobs(source_shadow_units, [{"profile": profile, "source_row": r, "shadows": shadows} for r in rows],
                           **outer_jobs(profile), desc="shadows asked (sources)" if progress else None)
        per_source = {r.source: units for r, units in zip(rows, answers)}
        table = statistics.selection_table(per_source, candidates, alpha, statistic_settings(profile))
        result.write(lambda tmp: table.to_csv(tmp, index=False))
    table = pd.read_csv(result.path).fillna({"reason": ""})
    summary = statistics.selection_summary(table, candidates, alpha)
    return table, summary, statistics.chosen_statistic(summary)


def verdicts_path(profile: Profile, innocent_pool: str) -> Path:
    return layout.results_dir(profile, STAGE) / f"verdicts_{innocent_pool}.csv"


@dataclass(frozen=True)
class VerdictTableJob(CachedJob):
    """The verdict table of one innocent pool: made from every model's weights (suspects and
    shadows), the sources', the content of every source's key sets and control pairs, stage 04's
    tables where the controls' delta0 is calibrated on them (the ``controls`` pool), every setting
    the tool uses, and the code that decides."""

    made_by = "notebook 08_model_owner_verify"

    out: Path = output()
    models: dict[str, Path] = content(fingerprint)
    sources: dict[str, Path] = content(fingerprint)
    keys: dict[str, Path] = content()
    stage04: dict[str, Path] | None = content()
    controls: dict[str, Path] = content()
    attribution: AttributionSettings
    statistical: StatisticalSettings
    verify: OwnerTestSettings
    statistic: str
    generation: GenerationConfig
    target_fpr: float
    showcase: tuple[str, ...]
    innocent_pool: str
    code: tuple[str, ...] = code_of()


def verdicts_result(profile: Profile, target_fpr: float, showcase: tuple[str, ...], innocent_pool: str,
                    statistic: str) -> Result:
    """The verdict table of one innocent pool as a cached result (:class:`VerdictTableJob`)."""
    manifest, shadows = read_manifest(profile), all_shadows(profile)
    strategy = profile.attribution.main_strategy
    models = pd.concat([manifest, shadows]).drop_duplicates("name")
    return VerdictTableJob(
        verdicts_path(profile, innocent_pool), {r["name"]: Path(r["path"]) for r in models.to_dict("records")},
        {s: Path(p) for s, p in sorted(set(zip(manifest.source, manifest.source_path)))},
        {s: keys_dir(profile, s, strategy) for s in sorted(manifest.source.unique())},
        {t: r.path for t, r in results_tables(profile).items()} if innocent_pool == "controls" else None,
        {d: controls_dir(profile, d) for d in sorted(manifest.domain.unique())},
        profile.attribution, profile.statistical, profile.verify, statistic, profile.generation, target_fpr,
        tuple(sorted(showcase)), innocent_pool, (__name__, *VERDICT_CODE)).result()


VERDICT_COLUMNS = ["model", "source", "lineage", "replicate", "rho", "label", "target_fpr", "verdict", "p_value",
                   "p_from", "rank_p", "parametric_p", "normality_p", "n_innocent", "statistic", "score", "effect",
                   "conf", "delta0", "discriminator", "mean_rd", "innocent_mean_rd", "null_hit_rate", "warned", "queries",
                   "reason"]


def verify_evaluated(profile: Profile, target_fpr: float | None = None, progress: bool = True,
                     showcase: tuple[str, ...] = (), innocent_pool: str = "population",
                     statistic: str | None = None) -> pd.DataFrame:
    """One row per evaluated model: the tool's verdict at ``target_fpr``, its p-values (rank and
    parametric, so the table can be read at other targets), the statistic's score and effect.
    Models named in ``showcase`` also get their full report under ``results/08_verify/<pool>/<name>/``."""
    statistic = statistic or profile.verify.statistic
    target_fpr = profile.verify.target_fpr if target_fpr is None else target_fpr  # one default: the profile's
    manifest, shadows = read_manifest(profile), all_shadows(profile)
    result = verdicts_result(profile, target_fpr, showcase, innocent_pool, statistic)
    if result.fresh():
        return read_verdicts(result.path)
    calibrated = None
    if innocent_pool == "controls":  # no shadow in the null: delta0 from notebook 04's shadow calibration
        calibrated = deltas(profile, *load_results(profile))[0]["calibrated"]
    evaluated = [m for _, m in manifest[manifest.role == "evaluated"].iterrows()]
    jobs = [{"profile": profile, "model": m, "shadows": shadows, "target_fpr": target_fpr,
             "innocent_pool": innocent_pool, "statistic": statistic, "showcase": m["name"] in showcase,
             "delta0": None if calibrated is None else delta0_for(calibrated, m.source)} for m in evaluated]
    rows = run_jobs(verify_one, jobs, **outer_jobs(profile),
                    desc=f"verify ({innocent_pool}, suspects)" if progress else None)
    table = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    result.write(lambda tmp: table.to_csv(tmp, index=False))
    return read_verdicts(result.path)  # what a cached run returns


def verify_one(profile: Profile, model: pd.Series, shadows: pd.DataFrame, target_fpr: float, innocent_pool: str,
               statistic: str, delta0: float | None, showcase: bool) -> dict:
    """One evaluated model's verdict row (a job of :func:`verify_evaluated`): the tool run as an owner
    runs it, with the pool's null; a model the tool refuses (too few or too spread innocents to reach
    ``target_fpr``) gets a "refused" row with the tool's reason. A showcased model's full report is
    written under ``results/08_verify/<pool>/<name>/``."""
    profile = as_profile(profile)
    strategy = profile.attribution.main_strategy
    out = layout.results_dir(profile, STAGE) / innocent_pool / model["name"]
    row = {"model": model["name"], "source": model.source, "lineage": model.lineage, "replicate": model.replicate,
           "rho": model.rho, "label": model.label, "target_fpr": target_fpr}
    try:
        v = verify(model.source_path, stage_model(profile, model.path), keys=keys_dir(profile, model.source, strategy),
                   target_fpr=target_fpr, delta0=delta0, profile=profile, out=out, progress=False,
                   cache_dir=layout.generation_cache_dir(profile),
                   **null_models(profile, shadows, model, innocent_pool, statistic))
    except InputError as err:
        return {**row, "verdict": "refused", "reason": str(err)}
    if showcase:
        write_report(v, out)
    return {**row, **verdict_row(v)}


def outer_jobs(profile: Profile) -> dict:
    """``run_jobs``' ``parallel`` and ``threads`` for stage 08's loops over sources and suspects.
    Locally they are the parallel jobs (one per usable core). On Ray the tool already sends each
    shadow to the cluster (``query_kind``), so these loops stay in this process: a task that waits
    on tasks it submitted could hold the very CPUs they need."""
    parallel = 1 if executor_for(profile.run).engine == "ray" else profile.run.parallel_jobs
    return {"parallel": parallel, "threads": profile.run.threads_per_job}


def verdict_row(v) -> dict:
    """The columns of one verdict (``verify``'s Verdict) in the stage's table."""
    return {"verdict": v.verdict, "p_value": v.p_value, "p_from": v.p_from, "rank_p": v.rank_p_value,
            "parametric_p": v.parametric_p_value, "normality_p": v.normality_p,
            "n_innocent": len(v.innocent_scores) if v.innocent_scores else 0, "statistic": v.statistic,
            "score": v.score, "effect": v.effect, "conf": v.conf, "delta0": v.delta0,
            "discriminator": v.discriminator_score, "mean_rd": v.mean_rd,
            "innocent_mean_rd": float(np.mean(v.innocent_mean_rds)) if v.innocent_mean_rds else float("nan"),
            "null_hit_rate": float(np.mean(v.null_rds < v.delta0)) if len(v.null_rds) else float("nan"),
            "warned": bool(v.warning), "queries": v.queries, "reason": ""}


def read_verdicts(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"reason": str, "p_from": str, "statistic": str}).fillna({"reason": "", "p_from": ""})


def showcase_models(profile: Profile) -> tuple[str, str]:
    """The two suspects whose full report notebook 08 shows: the first source's rho = 1 and innocent
    evaluated models from its own base."""
    manifest = read_manifest(profile)
    ev = manifest[(manifest.role == "evaluated") & (manifest.lineage == "same")]
    return ev[ev.rho == 1.0].name.iloc[0], ev[ev.rho == 0.0].name.iloc[0]


def showcase_decision(profile: Profile, innocent_pool: str, name: str, table: pd.DataFrame) -> str:
    """What notebook 08 prints for a showcase suspect: the decision part of the report the tool wrote
    for it (its verdict, summary and decision table, up to the evidence), or why it was refused."""
    report = layout.results_dir(profile, STAGE) / innocent_pool / name / "report.md"
    if not report.is_file():
        return f"{name} was refused: {table.set_index('model').reason[name]}"
    return report.read_text().split(EVIDENCE_HEADING)[0]


def p_at(table: pd.DataFrame, alpha: float) -> pd.Series:
    """Each judged model's p-value as the tool would state it at target ``alpha``: the rank among
    its innocent shadows when they are enough for alpha, else the t prediction (``primary_p``);
    the Fisher p of the controls null does not depend on the target."""
    def one(r) -> float:
        if r.p_from in ("rank", "parametric") and np.isfinite(r.rank_p):
            return statistics.primary_p(r.rank_p, r.parametric_p, int(r.n_innocent), alpha)[0]
        return float(r.p_value)
    return table.apply(one, axis=1) if len(table) else pd.Series(dtype=float)


def _call_rates(judged: pd.DataFrame, alpha: float | None = None) -> dict:
    """Infringing and innocent models called infringing (at ``alpha``; default: the verdicts as
    made), as counts and rates with exact 95% intervals over models (judged verdicts only)."""
    called = judged.verdict == "infringing" if alpha is None else p_at(judged, alpha) <= alpha
    inf, inn = judged.label == 1, judged.label == 0
    tpr = binomial_interval(int((called & inf).sum()), int(inf.sum()))
    fpr = binomial_interval(int((called & inn).sum()), int(inn.sum()))
    return {"infringing called": f"{int((called & inf).sum())}/{int(inf.sum())}",
            "innocent called": f"{int((called & inn).sum())}/{int(inn.sum())}",
            "TPR": tpr.mean, "TPR_low": tpr.low, "TPR_high": tpr.high,
            "FPR": fpr.mean, "FPR_low": fpr.low, "FPR_high": fpr.high}


def verdict_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per source and lineage: share of infringing models called infringing (TPR) and of innocent
    ones (FPR), over the models the tool could judge (every replicate)."""
    judged = table[table.verdict != "refused"]
    result = pd.DataFrame([{"source": source, "lineage": lineage, **_call_rates(g)}
                           for (source, lineage), g in judged.groupby(["source", "lineage"])])
    result.attrs["refused"] = int((table.verdict == "refused").sum())
    return result


def false_positive_rates(table: pd.DataFrame, targets: tuple[float, ...] = TARGETS) -> pd.DataFrame:
    """Per target: the evaluated innocent models called infringing (none of them chose or
    calibrated anything), with exact 95% intervals; ``within`` says whether the target lies in it."""
    innocent = table[(table.verdict != "refused") & (table.label == 0)]
    rows = []
    for alpha in targets:
        called = int((p_at(innocent, alpha) <= alpha).sum())
        ci = binomial_interval(called, len(innocent))
        rows.append({"target FPR": alpha, "innocent called": f"{called}/{len(innocent)}", "FPR": ci.mean,
                     "FPR_low": ci.low, "FPR_high": ci.high, "target within interval": bool(ci.low <= alpha <= ci.high)})
    return pd.DataFrame(rows)


def true_positive_rates(table: pd.DataFrame, by: str, targets: tuple[float, ...] = TARGETS) -> pd.DataFrame:
    """Per target and per ``by`` (``rho`` or ``source``): the infringing models called, with exact
    95% intervals over models."""
    infringing = table[(table.verdict != "refused") & (table.label == 1)]
    rows = []
    for alpha in targets:
        for key, g in infringing.groupby(by):
            called = int((p_at(g, alpha) <= alpha).sum())
            ci = binomial_interval(called, len(g))
            rows.append({"target FPR": alpha, by: key, "infringing called": f"{called}/{len(g)}", "TPR": ci.mean,
                         "TPR_low": ci.low, "TPR_high": ci.high})
    return pd.DataFrame(rows)


def innocent_uniformity(table: pd.DataFrame) -> pd.DataFrame:
    """The evaluated innocent models' p-values against the uniform, the distribution they follow
    when the null is right: a Kolmogorov-Smirnov test of the t prediction's p-values (continuous),
    and of the rank p-values (discrete on 1/(k+1), ..., 1: the KS test is then conservative)."""
    innocent = table[(table.verdict != "refused") & (table.label == 0)]
    rows = []
    for column, what in (("parametric_p", "t prediction"), ("rank_p", "rank among the innocent shadows")):
        p = innocent[column].dropna().to_numpy(dtype=float)
        test = kstest(p, "uniform") if len(p) else None
        rows.append({"p-value": what, "innocent models": len(p), "median": float(np.median(p)) if len(p) else np.nan,
                     "KS statistic": test.statistic if test else np.nan, "KS p": test.pvalue if test else np.nan})
    return pd.DataFrame(rows)


AIMS = ((1.0, 0.9), (0.3, 0.5))  # (rho, the TPR aimed at there) at a 5% target: issue 23's benchmark


def aim_reached(tpr_by_rho: pd.DataFrame, fpr: pd.DataFrame) -> pd.DataFrame:
    """The benchmark aim of notebook 08 (not a test): at a 5% target, TPR >= 0.9 at rho = 1 and
    >= 0.5 at rho = 0.3, with the realised FPR's interval holding the target."""
    at5 = tpr_by_rho[tpr_by_rho["target FPR"] == 0.05].set_index("rho")
    rows = []
    for rho, aim in AIMS:
        tpr = float(at5.TPR.get(rho, np.nan))
        rows.append({"aim": f"TPR >= {aim:g} at rho = {rho:g}", "measured": tpr, "reached": bool(tpr >= aim)})
    f = fpr[fpr["target FPR"] == 0.05].iloc[0]
    rows.append({"aim": "target 0.05 inside the realised FPR's interval", "measured": float(f.FPR),
                 "reached": bool(f["target within interval"])})
    return pd.DataFrame(rows)


def aim_limits(profile: Profile, table: pd.DataFrame, target: float = 0.05) -> list[str]:
    """For each TPR aim not reached, the measured facts beside it: how many of the source's
    generations an infringer at that rho trained on, the calls per source at that rho, and each
    source's inheritance at rho = 1 in the group means (notebook 04's test, innocent minus
    infringing mean RD with its permutation p). Facts from the tables only; the notebook's text
    reads them."""
    profile = as_profile(profile)
    infringing = table[(table.verdict != "refused") & (table.label == 1)]
    n = int(profile.suspicious.n_samples)
    lines, inherited = [], None
    for rho, aim in AIMS:
        at = infringing[np.isclose(infringing.rho.astype(float), rho)]
        if not len(at):
            continue
        called = p_at(at, target) <= target
        if called.mean() >= aim:
            continue
        if inherited is None:
            models, per_sample = load_results(profile)
            inherited = inheritance(profile, models, per_sample, deltas(profile, models, per_sample)[0]["calibrated"])
            inherited = inherited.groupby("source").first()
        per_source = ", ".join(f"{s} {int(c.sum())}/{len(c)}" for s, c in called.groupby(at.source))
        gaps = ", ".join(f"{s} {r.rd_gap:+.3f} (p = {r.permutation_p:.2g})" for s, r in inherited.iterrows())
        lines.append(f"TPR >= {aim:g} at rho = {rho:g} not reached: {int(called.sum())}/{len(at)} infringers called at a "
                     f"{target:g} target. An infringer at rho = {rho:g} trained on {int(round(rho * n))} of the source's "
                     f"generations among its {n} pairs. Called per source: {per_source}. Inheritance at rho = 1 in "
                     f"notebook 04's group means (innocent minus infringing mean RD, permutation p): {gaps}.")
    return lines


def owner_test_summary(table: pd.DataFrame, targets: tuple[float, ...] = TARGETS) -> pd.DataFrame:
    """One row per target: the evaluated innocents called (the realised false-positive rate) and
    the infringers called at each rho, as counts with exact 95% intervals: the README's rows."""
    fpr = false_positive_rates(table, targets).set_index("target FPR")
    tpr = true_positive_rates(table, "rho", targets)
    rows = []
    for alpha in targets:
        f = fpr.loc[alpha]
        row = {"target FPR": f"{alpha:g}", "innocent called (FPR)":
               f"{f['innocent called']}: {f.FPR:.3f} [{f.FPR_low:.3f}, {f.FPR_high:.3f}]"}
        for r in tpr[tpr["target FPR"] == alpha].to_dict("records"):
            row[f"infringing called, rho = {r['rho']:g}"] = (f"{r['infringing called']}: {r['TPR']:.2f} "
                                                             f"[{r['TPR_low']:.2f}, {r['TPR_high']:.2f}]")
        rows.append(row)
    return pd.DataFrame(rows)


def qq_points(table: pd.DataFrame, column: str = "parametric_p") -> pd.DataFrame:
    """The evaluated innocent models' p-values sorted against the uniform's quantiles (i - 1/2)/n."""
    p = np.sort(table[(table.verdict != "refused") & (table.label == 0)][column].dropna().to_numpy(dtype=float))
    return pd.DataFrame({"uniform quantile": (np.arange(len(p)) + 0.5) / max(len(p), 1), "p-value": p})


def innocent_under_controls(controls: pd.DataFrame) -> pd.DataFrame:
    """The innocent models' verdicts under the controls null, with their share of keys below delta0
    (``conf``) beside the held-out controls' share (``null_hit_rate``); ``attrs["keys_easier"]``
    counts the innocent models whose keys hit more often than their controls. The controls null
    assumes keys are no easier than controls for an innocent model: that count says how often the
    assumption fails here (half of them by chance alone when it holds)."""
    innocent = controls[controls.label == 0][["model", "verdict", "p_value", "conf", "null_hit_rate"]].reset_index(drop=True)
    innocent.attrs["keys_easier"] = int((innocent.conf > innocent.null_hit_rate).sum())
    return innocent


def pool_comparison(tables: dict[str, pd.DataFrame], profile: Profile) -> pd.DataFrame:
    """One row per innocent pool: how many innocent shadows each source's null had, and how often the
    tool called infringing and innocent models infringing (refusals counted apart), with exact 95%
    intervals over models."""
    rows = []
    for pool, table in tables.items():
        judged = table[table.verdict != "refused"]
        shadows = "/".join(map(str, sorted(set(judged.n_innocent.dropna().astype(int))))) if pool != "controls" else "0"
        rows.append({"innocent pool": pool, "innocent shadows per suspect": shadows,
                     "statistic": "/".join(sorted(set(judged.statistic.dropna()))) or "fisher",
                     "target FPR": float(table.target_fpr.iloc[0]) if len(table) else float("nan"),
                     "refused": int((table.verdict == "refused").sum()), **_call_rates(judged)})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PoolComparisonJob(CachedJob):
    """The comparison of the innocent pools: made from the verdict tables (by content; the target
    FPR is in them) and the manifests."""

    made_by = "notebook 08_model_owner_verify"

    out: Path = output()
    manifest: Path = content()
    null_shadows: Path | None = content()
    pools: dict[str, Path] = content()

    def inputs(self) -> dict:
        inputs = super().inputs()
        pools = inputs.pop("pools")
        return {**inputs, **pools}  # one input per pool's verdict table, as its stamp names them


def pools_result(profile: Profile) -> Result:
    """The comparison of the innocent pools as a cached result (:class:`PoolComparisonJob`)."""
    null_shadows = profile.data_root / NULL_SHADOWS
    return PoolComparisonJob(layout.results_dir(profile, STAGE) / "pools.csv", profile.data_root / MANIFEST,
                             null_shadows if null_shadows.is_file() else None,
                             {pool: verdicts_path(profile, pool) for pool in INNOCENT_POOLS}).result()


def verify_pools(profile: Profile, target_fpr: float | None = None, progress: bool = True,
                 showcase: tuple[str, ...] = (), statistic: str | None = None
                 ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Every innocent pool's verdict table and their comparison (``pool_comparison``), each cached;
    ``statistic`` is the one notebook 08 chose on shadows (default: the profile's)."""
    tables = {pool: verify_evaluated(profile, target_fpr, progress, showcase, pool, statistic) for pool in INNOCENT_POOLS}
    pools = pool_comparison(tables, profile)
    pools_result(profile).write(lambda tmp: pools.to_csv(tmp, index=False))
    return tables, load_pools(profile)


def load_pools(profile: Profile) -> pd.DataFrame:
    """Stage 08's pool comparison for a reader that must not re-run the tool; ``cache.StaleResult``
    when it is missing or a verdict table changed since."""
    return pd.read_csv(pools_result(profile).require())


def load_verdicts(profile: Profile, innocent_pool: str) -> pd.DataFrame:
    """One pool's verdict table for a reader that must not re-run the tool: read only when the pool
    comparison (made from the verdict tables by content) is current, else ``cache.StaleResult``."""
    load_pools(profile)
    return read_verdicts(verdicts_path(profile, innocent_pool))
