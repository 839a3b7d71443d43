"""Instance-level attribution from per-sample reconstruction distances (METHOD.md).

conf(M; K) = (1/N) #{k : RD(M, p_k, x_k) < delta0}. Everything here works on the per-sample table
(one row per model, strategy and key, with ``rank`` = position in the best-first key set), so any
N, delta0 or strategy is a lookup, never a new query.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

TABLE2_EDGES = (0.0, 0.05, 0.10, 0.15, 0.20)


def conf(rd: np.ndarray, delta0: float) -> float:
    """Share of keys reconstructed closer than delta0."""
    rd = np.asarray(rd, dtype=float)
    return float(np.mean(rd < delta0)) if len(rd) else float("nan")


def conf_table(per_sample: pd.DataFrame, delta0: float, n_keys: int) -> pd.DataFrame:
    """conf and mean RD per (model, strategy) on the first ``n_keys`` keys of each strategy."""
    top = per_sample[per_sample["rank"] < n_keys]
    grouped = top.groupby(["model", "strategy"]).rd
    out = pd.DataFrame({"conf": grouped.apply(lambda r: conf(r.to_numpy(), delta0)),
                        "mean_rd": grouped.mean(), "n_keys": grouped.size()}).reset_index()
    return out


def with_watermark(confs: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Add Baseline 1 (watermark conf) as a fourth 'strategy' row per model."""
    wm = models[["name", "watermark_conf"]].rename(columns={"name": "model", "watermark_conf": "conf"})
    wm["strategy"] = "watermark"
    return pd.concat([confs, wm], ignore_index=True)


def attach(confs: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Join model attributes (source, role, lineage, rho, label, and replicate when known) onto a
    per-model table."""
    cols = ["name", "source", "role", "lineage", "base", "rho", "label"] + (["replicate"] if "replicate" in models else [])
    return confs.merge(models[cols].rename(columns={"name": "model"}), on="model")


def delta_grid(spec: dict) -> np.ndarray:
    return np.round(np.arange(float(spec["start"]), float(spec["stop"]) + 1e-9, float(spec["step"])), 6)


def calibrate_delta0(per_sample: pd.DataFrame, models: pd.DataFrame, strategy: str, n_keys: int,
                     grid: Iterable[float]) -> tuple[float, pd.DataFrame]:
    """delta0 from *shadow* models only: the delta that best separates infringing from innocent
    shadows (largest mean-conf gap; the smallest such delta on ties). Evaluated models never
    enter: the threshold must be fixed before they are looked at."""
    shadow = set(models.loc[models.role == "shadow", "name"])
    labels = models.set_index("name").label
    rows = per_sample[(per_sample.model.isin(shadow)) & (per_sample.strategy == strategy) & (per_sample["rank"] < n_keys)]
    curve = []
    for delta in grid:
        per_model = rows.groupby("model").rd.apply(lambda r, d=delta: conf(r.to_numpy(), d))
        lab = labels.loc[per_model.index]
        inf, inn = per_model[lab == 1].mean(), per_model[lab == 0].mean()
        curve.append({"delta0": float(delta), "conf_infringing": inf, "conf_innocent": inn, "gap": inf - inn})
    curve = pd.DataFrame(curve)
    best = curve.loc[curve.gap.idxmax()] if curve.gap.notna().any() else curve.iloc[0]
    return float(best.delta0), curve


def rd_distribution(rd: Sequence[float], edges: Sequence[float] = TABLE2_EDGES) -> dict:
    """Table 2's row: share of keys per RD bin, average and best RD."""
    rd = np.asarray(rd, dtype=float)
    out = {}
    for lo, hi in zip(edges, list(edges[1:]) + [np.inf]):
        label = f"[{lo:.2f}, {hi:.2f})" if np.isfinite(hi) else f"[{lo:.2f}, inf)"
        out[label] = float(np.mean((rd >= lo) & (rd < hi)))
    out["average"] = float(rd.mean())
    out["best"] = float(rd.min())
    return out
