"""Stage 08: the model owner's tool (``genlineage verify``) on every evaluated suspicious model.

Why: the paper reports figures over many models; an owner has one suspect. Running the tool on
each evaluated model, with shadow models as the null and the stored key samples, shows how often
its verdict is right at a stated false-positive rate. The generation cache of the pipeline is
shared, so only the innocent shadows borrowed from other sources cost new queries.

Which null (``innocent_pool``): ``"source"`` uses the innocent shadows a source's own shadow sets
hold (one per lineage and replicate: three at the tiny profile); ``"domain"`` uses every innocent
(rho = 0) shadow of the source's domain, of every replicate. An innocent shadow is a model fine-tuned from a base on real pairs of the domain; all of a
domain's rho = 0 shadows are drawn alike (same shadow pool, both bases), whichever source they were
listed under, and none saw any source's outputs. ``"controls"`` uses no shadow at all: the domain's
held-out pairs, asked of the suspect itself (the tool's Fisher null), with the delta0 calibrated on
the shadow models of the suspect's replicate in notebook 04. No evaluated model is ever part of a
null. Rates are over models, with exact (Clopper-Pearson) 95% intervals: the model is the unit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import Profile
from ..errors import InputError
from ..intervals import binomial_interval
from ..cache import Result, content_id
from ..models.pipeline_io import fingerprint, stage_model
from ..verify import verify, write_report
from .. import layout
from .instance_attribution import keys_dir, load_results, results_tables
from .instance_tables import delta0_for, deltas
from .suspicious_models import MANIFEST, read_manifest

STAGE = "08_verify"


INNOCENT_POOLS = ("source", "domain", "controls")
EVIDENCE_HEADING = "## Distances"  # where the tool's report.md turns from the decision to the evidence


def innocent_shadow_paths(manifest: pd.DataFrame, source: str, pool: str) -> list[str]:
    """The innocent shadows that serve as ``source``'s null (see the module docstring)."""
    if pool not in INNOCENT_POOLS:
        raise ValueError(f"innocent pool {pool!r}: choose one of {INNOCENT_POOLS}")
    innocent = manifest[(manifest.role == "shadow") & (manifest.label == 0)]
    if pool == "controls":
        return []
    if pool == "source":
        return list(innocent[innocent.source == source].path)
    domain = manifest.loc[manifest.source == source, "domain"].iloc[0]
    return list(innocent[innocent.domain == domain].path)


def null_models(profile: Profile, manifest: pd.DataFrame, model: pd.Series, pool: str) -> dict:
    """``verify``'s null arguments for one evaluated model: shadows (the pool's innocent ones and the
    source's infringing ones together calibrate delta0 and train the discriminator), or the domain's
    held-out pairs as controls."""
    if pool == "controls":
        return {"controls": layout.datasets_dir(profile) / f"{model.domain}_heldout"}
    infringing = manifest[(manifest.source == model.source) & (manifest.role == "shadow") & (manifest.label == 1)]
    return {"innocent_shadows": innocent_shadow_paths(manifest, model.source, pool),
            "infringing_shadows": list(infringing.path)}


def verdicts_path(profile: Profile, innocent_pool: str) -> Path:
    return layout.results_dir(profile, STAGE) / f"verdicts_{innocent_pool}.csv"


def verdicts_result(profile: Profile, target_fpr: float, showcase: tuple[str, ...], innocent_pool: str) -> Result:
    """The verdict table of one innocent pool: made from every model's weights (suspects and
    shadows), the content of every source's key sets, stage 04's tables (the controls' delta0 is
    calibrated on them) and every setting the tool uses."""
    manifest = read_manifest(profile)
    strategy = profile.attribution.main_strategy
    stage04 = results_tables(profile)
    return Result(verdicts_path(profile, innocent_pool), {
        "models": {r["name"]: fingerprint(r["path"]) for r in manifest.to_dict("records")},
        "sources": {s: fingerprint(p) for s, p in sorted(set(zip(manifest.source, manifest.source_path)))},
        "keys": {s: content_id(keys_dir(profile, s, strategy)) for s in sorted(manifest.source.unique())},
        "stage04": {t: content_id(r.path) for t, r in stage04.items()} if innocent_pool == "controls" else None,
        "controls": {d: content_id(layout.datasets_dir(profile) / f"{d}_heldout") for d in sorted(manifest.domain.unique())}
        if innocent_pool == "controls" else None,
        "attribution": profile.attribution.as_dict(), "statistical": profile.statistical.as_dict(),
        "generation": profile.generation.as_dict(), "target_fpr": target_fpr, "showcase": sorted(showcase),
        "innocent_pool": innocent_pool, "format": 8},  # bump when the table or the verdict logic changes
        made_by="notebook 08_model_owner_verify")


def verify_evaluated(profile: Profile, target_fpr: float = 0.05, progress: bool = True,
                     showcase: tuple[str, ...] = (), innocent_pool: str = "domain") -> pd.DataFrame:
    """One row per evaluated model: the tool's verdict, p-value, conf and discriminator score.
    Models named in ``showcase`` also get their full report under ``results/08_verify/<pool>/<name>/``."""
    manifest = read_manifest(profile)
    strategy = profile.attribution.main_strategy
    result = verdicts_result(profile, target_fpr, showcase, innocent_pool)
    if result.fresh():
        return pd.read_csv(result.path).fillna({"reason": ""})
    rows = []
    calibrated = None
    if innocent_pool == "controls":  # no shadow in the null: delta0 from notebook 04's shadow calibration
        calibrated = deltas(profile, *load_results(profile))[0]["calibrated"]
    evaluated = manifest[manifest.role == "evaluated"]
    for _, m in tqdm(list(evaluated.iterrows()), desc="verify", unit="suspect", disable=not progress):
        out = layout.results_dir(profile, STAGE) / innocent_pool / m["name"]
        row = {"model": m["name"], "source": m.source, "lineage": m.lineage, "replicate": m.replicate, "rho": m.rho,
               "label": m.label, "target_fpr": target_fpr}
        delta0 = None if calibrated is None else delta0_for(calibrated, m.replicate)
        try:
            v = verify(m.source_path, stage_model(profile, m.path), keys=keys_dir(profile, m.source, strategy), target_fpr=target_fpr,
                       delta0=delta0, profile=profile, out=out, progress=False,
                       cache_dir=layout.generation_cache_dir(profile), **null_models(profile, manifest, m, innocent_pool))
        except InputError as err:  # e.g. innocent shadows too few or too spread to reach target_fpr
            rows.append({**row, "verdict": "refused", "reason": str(err)})
            continue
        if m["name"] in showcase:
            write_report(v, out)
        rows.append({**row, "verdict": v.verdict, "p_value": v.p_value, "conf": v.conf, "delta0": v.delta0,
                     "discriminator": v.discriminator_score, "mean_rd": v.mean_rd,
                     "innocent_mean_rd": float(np.mean(v.innocent_mean_rds)) if v.innocent_mean_rds else float("nan"),
                     "null_hit_rate": float(np.mean(v.null_rds < v.delta0)),
                     "empirical_p": v.empirical_p_value, "warned": bool(v.warning), "queries": v.queries, "reason": ""})
    table = pd.DataFrame(rows, columns=["model", "source", "lineage", "replicate", "rho", "label", "target_fpr", "verdict", "p_value",
                                        "conf", "delta0", "discriminator", "mean_rd", "innocent_mean_rd", "null_hit_rate", "empirical_p", "warned", "queries",
                                        "reason"])
    result.write(lambda tmp: table.to_csv(tmp, index=False))
    return pd.read_csv(result.path).fillna({"reason": ""})  # what a cached run returns


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


def _call_rates(judged: pd.DataFrame) -> dict:
    """Infringing and innocent models called infringing, as counts and rates with exact 95%
    intervals over models (judged verdicts only)."""
    called = judged.verdict == "infringing"
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


def innocent_under_controls(controls: pd.DataFrame) -> pd.DataFrame:
    """The innocent models' verdicts under the controls null, with their share of keys below delta0
    (``conf``) beside the held-out controls' share (``null_hit_rate``); ``attrs["keys_easier"]``
    counts the innocent models whose keys hit more often than their controls. The controls null
    assumes keys are no easier than controls for an innocent model: that count says how often the
    assumption fails here (half of them by chance alone when it holds)."""
    innocent = controls[controls.label == 0][["model", "verdict", "p_value", "conf", "null_hit_rate"]].reset_index(drop=True)
    innocent.attrs["keys_easier"] = int((innocent.conf > innocent.null_hit_rate).sum())
    return innocent


def pool_comparison(tables: dict[str, pd.DataFrame], manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per innocent pool: how many innocent shadows each source's null had, and how often the
    tool called infringing and innocent models infringing (refusals counted apart), with exact 95%
    intervals over models."""
    rows = []
    for pool, table in tables.items():
        shadows = sorted({len(innocent_shadow_paths(manifest, s, pool)) for s in table.source.unique()})
        rates = _call_rates(table[table.verdict != "refused"])
        rows.append({"innocent pool": pool, "innocent shadows per source": "/".join(map(str, shadows)),
                     "target FPR": float(table.target_fpr.iloc[0]) if len(table) else float("nan"),
                     "refused": int((table.verdict == "refused").sum()), **rates})
    return pd.DataFrame(rows)


def pools_result(profile: Profile) -> Result:
    """The comparison of the innocent pools: made from the three verdict tables (by content; the
    target FPR is in them) and the manifest."""
    return Result(layout.results_dir(profile, STAGE) / "pools.csv", {
        "manifest": content_id(profile.data_root / MANIFEST),
        **{pool: content_id(verdicts_path(profile, pool)) for pool in INNOCENT_POOLS}},
        made_by="notebook 08_model_owner_verify")


def verify_pools(profile: Profile, target_fpr: float = 0.05, progress: bool = True,
                 showcase: tuple[str, ...] = ()) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Every innocent pool's verdict table and their comparison (``pool_comparison``), each cached."""
    tables = {pool: verify_evaluated(profile, target_fpr, progress, showcase, pool) for pool in INNOCENT_POOLS}
    pools = pool_comparison(tables, read_manifest(profile))
    pools_result(profile).write(lambda tmp: pools.to_csv(tmp, index=False))
    return tables, load_pools(profile)


def load_pools(profile: Profile) -> pd.DataFrame:
    """Stage 08's pool comparison for a reader that must not re-run the tool; ``cache.StaleResult``
    when it is missing or a verdict table changed since."""
    return pd.read_csv(pools_result(profile).require())
