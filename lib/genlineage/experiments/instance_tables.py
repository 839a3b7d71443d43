"""Tables of notebooks 04, 06 and 07, built from the per-sample results of stage 04.

Every comparison of infringing with innocent models takes one number per model (its conf or its
mean RD over the keys) and an interval over models (``genlineage.intervals``): models differ in
how close they come to every key, so keys of one model are not independent. Each source's
models are judged at the delta0 its own shadow models chose (its shadows of every replicate), as
``genlineage verify`` does: sources differ in how close innocent models come to their keys. The
claims on these tables live in ``claims``."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ..confidence import attach, calibrate_delta0, conf_table, delta_grid, rd_distribution, shadow_rds, with_watermark
from ..config import Profile
from ..intervals import SHARE, SHARE_DIFFERENCE, difference_interval, per_group, permutation_p, t_interval

METHOD_NAMES = {"detection": "Strategy 1 (detection)", "generation": "Strategy 2 (generation)",
                "random": "Baseline 2 (random)", "watermark": "Baseline 1 (watermark)"}


def replicate_of(models: pd.DataFrame) -> pd.Series:
    """Each model's replicate (master seed); a manifest from before replicates is one draw, 0."""
    return models["replicate"] if "replicate" in models else pd.Series(0, index=models.index)


def deltas(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Per source: the paper's delta0 and the one calibrated on that source's shadow models, of
    every replicate (one replicate holds one infringing and one innocent shadow per source at the
    tiny profile: too few to calibrate on alone). Measured on the tiny run of 2026-12-01, the
    sources' innocent mean RD ranged from 0.17 to 0.35, so one delta0 pooled over the sources made
    innocent conf 0.37. Returns ``({"paper": {source: d}, "calibrated": {source: d}}, curves with
    a source column)``."""
    att = profile.attribution
    out: dict[str, dict[str, float]] = {"paper": {}, "calibrated": {}}
    curves = []
    for source in sorted(models.source.unique()):
        own = models[models.source == source]
        calibrated, curve = calibrate_delta0(*shadow_rds(per_sample[per_sample.model.isin(own.name)], own, att.main_strategy,
                                                         att.n_keys), delta_grid(att.delta0_grid.as_dict()))
        out["paper"][str(source)] = att.delta0
        out["calibrated"][str(source)] = calibrated
        curves.append(curve.assign(source=str(source)))
    return out, pd.concat(curves, ignore_index=True)


def delta0_for(delta0: float | Mapping[str, float], source: str) -> float:
    """One source's delta0 from a number (every source alike) or a per-source mapping."""
    return float(delta0[str(source)]) if isinstance(delta0, Mapping) else float(delta0)


def model_confs(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0: float | Mapping[str, float],
                n_keys: int | None = None) -> pd.DataFrame:
    """conf and mean RD per model and method (the three key strategies and the watermark), each
    source's models at that source's delta0, with the model's attributes joined."""
    n = int(n_keys or profile.attribution.n_keys)
    models = models.assign(replicate=replicate_of(models).astype(int))
    parts = []
    for source in sorted(models.source.unique()):
        own = models[models.source == source]
        table = conf_table(per_sample[per_sample.model.isin(own.name)], delta0_for(delta0, source), n)
        parts.append(attach(with_watermark(table, own), own))
    return pd.concat(parts, ignore_index=True)


def evaluated_confs(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0: float | Mapping[str, float],
                    n_keys: int | None = None) -> pd.DataFrame:
    """:func:`model_confs` of the evaluated models only (the shadows chose delta0)."""
    table = model_confs(profile, models, per_sample, delta0, n_keys)
    return table[table.role == "evaluated"].reset_index(drop=True)


def figure6_table(confs: pd.DataFrame) -> pd.DataFrame:
    """Mean conf over models per (source, lineage, method, rho) with its 95% t interval over the
    models of every replicate (innocent models at rho 0); conf is a share, so its interval is
    truncated to [0, 1] (``intervals.SHARE``)."""
    return per_group(confs, ["source", "lineage", "strategy", "rho"], "conf", bounds=SHARE)


def main_keys(profile: Profile, per_sample: pd.DataFrame, strategy: str | None = None) -> pd.DataFrame:
    """Per-sample rows of the first ``n_keys`` keys of one strategy (the profile's main one)."""
    att = profile.attribution
    strategy = strategy or att.main_strategy
    return per_sample[(per_sample.strategy == strategy) & (per_sample["rank"] < att.n_keys)]


def table2_per_model(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0: Mapping[str, float],
                     strategy: str | None = None) -> pd.DataFrame:
    """Table 2's bins for every evaluated own-lineage model that is rho = 1 or innocent: shares of
    its N keys per absolute RD bin (the paper's edges) and per bin of RD / delta0 (the same edges
    divided by the paper's delta0, so that a bin means at our scale what the paper's means at
    theirs: [2/3, 1) delta0 is the paper's [0.10, 0.15)). delta0 is the model's source's."""
    top = main_keys(profile, per_sample, strategy)
    paper = profile.attribution.delta0
    ev = models[(models.role == "evaluated") & (models.lineage == "same") & models.rho.isin([0.0, 1.0])]
    rd_by_model = {m: g.rd.to_numpy() for m, g in top.groupby("model")}
    rows = []
    for _, m in ev.iterrows():
        rd = rd_by_model[m["name"]]
        d0 = delta0_for(delta0, m.source)
        rows.append({"model": m["name"], "source": m.source, "kind": "infringing" if m.label else "innocent",
                     "replicate": int(replicate_of(ev).loc[m.name]), "delta0": d0,
                     **{f"abs {k}": v for k, v in rd_distribution(rd).items()},
                     **{f"rel {k}": v for k, v in rd_distribution(rd / d0 * paper).items()
                        if k not in ("average", "best")}})
    return pd.DataFrame(rows)


def table2(per_model: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2 as means over models with their 95% t intervals, one row per (group,
    scale, bin): per source its rho = 1 infringing models, all of them, and every innocent model
    (each on its own source's keys); ``models`` says how many each mean is over."""
    bins = [c for c in per_model.columns if c.startswith(("abs ", "rel "))]
    groups = [(f"infringing, source {s}", g) for s, g in per_model[per_model.kind == "infringing"].groupby("source")]
    groups += [("infringing, every source", per_model[per_model.kind == "infringing"]),
               ("innocent, every source", per_model[per_model.kind == "innocent"])]
    rows = []
    for name, g in groups:
        for column in bins:
            scale, label = column.split(" ", 1)
            # a bin's share lies in [0, 1]; the average and best RD are distances, not bounded so
            iv = t_interval(g[column], bounds=None if label in ("average", "best") else SHARE)
            rows.append({"model": name, "scale": scale, "bin": label, "mean": iv.mean, "low": iv.low, "high": iv.high,
                         "models": iv.n})
    return pd.DataFrame(rows, columns=["model", "scale", "bin", "mean", "low", "high", "models"])


def figure7_per_model(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0: float | Mapping[str, float],
                      strategy: str | None = None) -> pd.DataFrame:
    """conf of every rho = 1 infringing and innocent evaluated model at every N of the grid."""
    strategy = strategy or profile.attribution.main_strategy
    parts = []
    for n in profile.attribution.n_keys_grid:
        c = evaluated_confs(profile, models, per_sample, delta0, int(n))
        c = c[(c.strategy == strategy) & c.rho.isin([0.0, 1.0])]
        parts.append(c.assign(N=int(n), kind=np.where(c.rho > 0, "infringing", "innocent")))
    return pd.concat(parts, ignore_index=True)


def figure7_table(per_model: pd.DataFrame) -> pd.DataFrame:
    """Mean conf vs N per source, lineage and kind, with its 95% t interval over models."""
    table = per_group(per_model, ["source", "lineage", "kind", "N"], "conf", bounds=SHARE)
    keys = per_model.groupby(["source", "lineage", "kind", "N"]).n_keys.min().rename("keys_available").reset_index()
    return table.merge(keys, on=["source", "lineage", "kind", "N"])


def inheritance(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0: Mapping[str, float],
                strategy: str | None = None) -> pd.DataFrame:
    """Per source and lineage: do rho = 1 infringing models reconstruct the keys closer than the
    innocent ones? The unit is the model: each model's mean RD over the N keys; the gap
    (innocent - infringing) with a Welch 95% interval over models, and an exact one-sided
    permutation test over models, which decides (shown when p < 0.05; ``permutation_p_reverse``
    tests the opposite direction, innocent closer)."""
    confs = evaluated_confs(profile, models, per_sample, delta0)
    strategy = strategy or profile.attribution.main_strategy
    confs = confs[confs.strategy == strategy]
    rows = []
    for (source, lineage), g in confs.groupby(["source", "lineage"]):
        inf, inn = g[g.rho == 1.0], g[g.rho == 0.0]
        if not len(inf) or not len(inn):
            continue
        gap = difference_interval(inn.mean_rd, inf.mean_rd)
        conf_gap = difference_interval(inf.conf, inn.conf, bounds=SHARE_DIFFERENCE)
        p = permutation_p(inn.mean_rd, inf.mean_rd)
        rows.append({"source": source, "lineage": lineage, "infringing models": len(inf), "innocent models": len(inn),
                     "rd_gap": gap.mean, "rd_gap_low": gap.low, "rd_gap_high": gap.high,
                     "conf_gap": conf_gap.mean, "conf_gap_low": conf_gap.low, "conf_gap_high": conf_gap.high,
                     "permutation_p": p, "permutation_p_reverse": permutation_p(inf.mean_rd, inn.mean_rd),
                     "shown (p < 0.05)": bool(p < 0.05)})
    return pd.DataFrame(rows)


