"""Tables of notebooks 04, 06 and 07, built from the per-sample results of stage 04."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..attribution import (attach, calibrate_delta0, conf_table, delta_grid, paired_key_difference,
                           rd_distribution, with_watermark)
from ..config import Profile

METHOD_NAMES = {"detection": "Strategy 1 (detection)", "generation": "Strategy 2 (generation)",
                "random": "Baseline 2 (random)", "watermark": "Baseline 1 (watermark)"}


def deltas(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """The paper's delta0 and the one calibrated on shadow models (with its curve)."""
    att = profile["attribution"]
    calibrated, curve = calibrate_delta0(per_sample, models, att["main_strategy"], int(att["n_keys"]),
                                         delta_grid(att["delta0_grid"]))
    return {"paper": float(att["delta0"]), "calibrated": calibrated}, curve


def evaluated_confs(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0: float,
                    n_keys: int | None = None) -> pd.DataFrame:
    """conf per evaluated model and method (the three key strategies and the watermark)."""
    n = int(n_keys or profile["attribution"]["n_keys"])
    table = attach(with_watermark(conf_table(per_sample, delta0, n), models), models)
    return table[table.role == "evaluated"]


def figure6_table(confs: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread of conf per (source, lineage, method, rho), innocent models at rho 0."""
    g = confs.groupby(["source", "lineage", "strategy", "rho"]).conf
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0), "models": g.size()}).reset_index()


def main_keys(profile: Profile, per_sample: pd.DataFrame, strategy: str | None = None) -> pd.DataFrame:
    """Per-sample rows of the first ``n_keys`` keys of one strategy (the profile's main one)."""
    att = profile["attribution"]
    strategy = strategy or att["main_strategy"]
    return per_sample[(per_sample.strategy == strategy) & (per_sample["rank"] < int(att["n_keys"]))]


def table2(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, strategy: str | None = None) -> pd.DataFrame:
    """RD distribution of the N keys on one rho = 1 infringing model per source (own lineage) and
    on an innocent model fine-tuned from the v2 base, as the paper's Table 2."""
    top, ev = main_keys(profile, per_sample, strategy), models[models.role == "evaluated"]
    rows = []
    for source in ev.source.unique():
        pick = ev[(ev.source == source) & (ev.rho == 1.0) & (ev.lineage == "same")]
        if len(pick):
            name = pick.name.iloc[0]
            rows.append({"model": f"infringing, source {source}", "name": name,
                         **rd_distribution(top[top.model == name].rd)})
    v2 = sorted(profile["models"]["bases"])[-1]
    innocent = ev[(ev.rho == 0) & (ev.base == v2)]
    if len(innocent):
        name = innocent.name.iloc[0]
        rows.append({"model": f"innocent (base {v2}), keys of {innocent.source.iloc[0]}", "name": name,
                     **rd_distribution(top[top.model == name].rd)})
    return pd.DataFrame(rows)


def figure7_table(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0: float,
                  strategy: str | None = None) -> pd.DataFrame:
    """Mean conf vs N for rho = 1 infringing and innocent evaluated models, per source and lineage."""
    strategy = strategy or profile["attribution"]["main_strategy"]
    rows = []
    for n in profile["attribution"]["n_keys_grid"]:
        c = evaluated_confs(profile, models, per_sample, delta0, int(n))
        c = c[(c.strategy == strategy) & ((c.rho == 1.0) | (c.rho == 0.0))]
        for (source, lineage, rho), g in c.groupby(["source", "lineage", "rho"]):
            rows.append({"source": source, "lineage": lineage, "kind": "infringing" if rho else "innocent",
                         "N": int(n), "conf": g.conf.mean(), "keys_available": int(g.n_keys.min())})
    return pd.DataFrame(rows)


def inheritance(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, delta0: float,
                strategy: str | None = None) -> pd.DataFrame:
    """Per source and lineage: rho = 1 infringing vs innocent on the same keys, with bootstrap CIs
    over keys (a CI above 0 shows the inheritance)."""
    top, ev = main_keys(profile, per_sample, strategy), models[models.role == "evaluated"]
    rows = []
    for (source, lineage), g in ev.groupby(["source", "lineage"]):
        inf, inn = g[g.rho == 1.0].name.tolist(), g[g.rho == 0.0].name.tolist()
        if not inf or not inn:
            continue
        rd_inf = np.mean([top[top.model == m].sort_values("rank").rd.to_numpy() for m in inf], axis=0)
        rd_inn = np.mean([top[top.model == m].sort_values("rank").rd.to_numpy() for m in inn], axis=0)
        res = paired_key_difference(rd_inf, rd_inn, delta0, seed=int(profile["seed"]))
        rows.append({"source": source, "lineage": lineage, "conf_infringing": float(np.mean(rd_inf < delta0)),
                     "conf_innocent": float(np.mean(rd_inn < delta0)), **res,
                     "shown (CI excludes 0)": bool(res["rd_diff_low"] > 0)})
    return pd.DataFrame(rows)


def claim(text: str, ours: str, held: bool | None) -> dict:
    return {"paper's claim": text, "ours": ours, "held": {True: "held", False: "not held", None: "n/a"}[held]}


def figure6_claims(f6: pd.DataFrame) -> pd.DataFrame:
    """METHOD.md's Figure 6 claims against our means (own lineage; every source)."""
    own = f6[f6.lineage == "same"].pivot_table(index=["source", "rho"], columns="strategy", values="mean")
    inf = own[own.index.get_level_values("rho") > 0]
    rows = []
    if {"generation", "detection", "random"} <= set(inf.columns):
        best = inf[["generation", "detection"]].max(axis=1)
        gap = (best - inf["random"]).min()
        rows.append(claim("ours beats Baseline 2 by > 0.2 conf at every rho", f"smallest margin {gap:+.2f}", bool(gap > 0.2)))
    if {"generation", "watermark"} <= set(inf.columns):
        worst = (inf["watermark"] - inf["generation"]).max()
        rows.append(claim("Strategy 2 within 0.1 of Baseline 1", f"largest shortfall {worst:+.2f}", bool(worst <= 0.1)))
    at03 = inf[inf.index.get_level_values("rho") == 0.3]
    if len(at03) and "generation" in at03:
        lo = at03["generation"].min()
        rows.append(claim("Strategy 2 conf > 0.6 at rho = 0.3", f"lowest over sources {lo:.2f}", bool(lo > 0.6)))
        rnd = at03["random"].mean()
        rows.append(claim("Baseline 2 about 0.4 at rho = 0.3", f"mean {rnd:.2f}", bool(abs(rnd - 0.4) <= 0.1)))
    innocent = own[own.index.get_level_values("rho") == 0]
    if len(innocent) and "generation" in innocent:
        rows.append(claim("(ours) innocent models score low", f"Strategy 2 mean conf on innocent {innocent['generation'].mean():.2f}", None))
    return pd.DataFrame(rows)


def table2_claims(t2: pd.DataFrame) -> pd.DataFrame:
    inn = t2[t2.model.str.startswith("innocent")]
    inf = t2[t2.model.str.startswith("infringing")]
    rows = []
    if len(inn):
        r = inn.iloc[0]
        below = r["[0.00, 0.05)"] + r["[0.05, 0.10)"] + r["[0.10, 0.15)"]
        rows.append(claim("innocent: 73.9% of keys in [0.15, 0.2)", f"{r['[0.15, 0.20)']:.0%}", bool(r["[0.15, 0.20)"] >= 0.6)))
        rows.append(claim("innocent: 4.3% of keys below 0.15", f"{below:.0%}", bool(below <= 0.1)))
    if len(inf):
        below10 = inf["[0.00, 0.05)"] + inf["[0.05, 0.10)"]
        rows.append(claim("infringing: about 20% of keys below 0.1", f"mean {below10.mean():.0%} (range {below10.min():.0%}-{below10.max():.0%})",
                          bool(abs(below10.mean() - 0.2) <= 0.1)))
        n40 = int((inf["[0.10, 0.15)"] > 0.4).sum())
        rows.append(claim("infringing: > 40% in [0.1, 0.15) for 5 of 6 sources", f"{n40} of {len(inf)}", bool(n40 >= 5 * len(inf) / 6)))
    return pd.DataFrame(rows)


def figure7_claims(f7: pd.DataFrame) -> pd.DataFrame:
    inf = f7[(f7.kind == "infringing") & (f7.lineage == "same")].groupby("N").conf.mean()
    ns = sorted(inf.index)
    rows = []
    if len(ns) >= 3:
        mid = ns[-2] if len(ns) >= 4 else ns[1]
        rows.append(claim(f"largest N about 0.1 above N = 30 (ours: N = {ns[-1]} vs {mid})", f"{inf[ns[-1]] - inf[mid]:+.2f}",
                          bool(abs(inf[ns[-1]] - inf[mid] - 0.1) <= 0.05)))
        rows.append(claim(f"N = 30 about 0.1 above N = 20 (ours: N = {ns[1]} vs {ns[0]})", f"{inf[ns[1]] - inf[ns[0]]:+.2f}",
                          bool(abs(inf[ns[1]] - inf[ns[0]] - 0.1) <= 0.05)))
    return pd.DataFrame(rows)
