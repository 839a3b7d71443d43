"""Instance-level attribution from per-sample reconstruction distances (docs/method.md#confidence-and-delta0).

conf(M; K) = (1/N) #{k : RD(M, p_k, x_k) < delta0}. The maths take arrays: one model's per-key RDs
(``conf``), or one array per model (``calibrate_delta0``), so that a caller holding RDs (``genlineage
verify``) needs no table. The pipeline's stages hold the per-sample table (one row per model, strategy
and key, with ``rank`` = position in the best-first key set), so any N, delta0 or strategy is a lookup,
never a new query; ``rds_by_model``, ``shadow_rds`` and ``conf_table`` adapt it to the arrays.
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


def rds_by_model(per_sample: pd.DataFrame, strategy: str, n_keys: int) -> dict[str, np.ndarray]:
    """Each model's RDs on the first ``n_keys`` keys of ``strategy``, in table order, models by name:
    the per-model arrays the array functions here and in :mod:`genlineage.discriminator` take."""
    rows = per_sample[(per_sample.strategy == strategy) & (per_sample["rank"] < n_keys)]
    return {m: g.rd.to_numpy() for m, g in rows.groupby("model")}


def shadow_rds(per_sample: pd.DataFrame, models: pd.DataFrame, strategy: str, n_keys: int
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(infringing, innocent) *shadow* models' RD arrays from the per-sample table, for
    :func:`calibrate_delta0`. Evaluated models never enter: the threshold must be fixed before they
    are looked at. Models come in name order, the order the table groups them in, so the mean conf
    over models (a floating-point sum) is summed as it always was."""
    shadow = set(models.loc[models.role == "shadow", "name"])
    labels = models.set_index("name").label
    by_model = {m: rd for m, rd in rds_by_model(per_sample, strategy, n_keys).items() if m in shadow}
    return ([rd for m, rd in by_model.items() if labels.loc[m] == 1],
            [rd for m, rd in by_model.items() if labels.loc[m] == 0])


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


def mean_conf(rds: Sequence[np.ndarray], delta0: float) -> float:
    """conf averaged over models (one RD array each): how often a kind of model (the infringing or
    the innocent shadows) comes within delta0 of a key; NaN when there is no such model."""
    confs = np.array([conf(rd, delta0) for rd in rds], dtype=float)
    return float(confs.mean()) if len(confs) else float("nan")


def calibrate_delta0(infringing_rd: Sequence[np.ndarray], innocent_rd: Sequence[np.ndarray],
                     grid: Iterable[float]) -> tuple[float, pd.DataFrame]:
    """delta0 from *shadow* models only (one RD array per model, each kind in its own sequence): the
    delta of ``grid`` that best separates infringing from innocent shadows (largest mean-conf gap;
    the first such delta of the grid, the smallest for an ascending grid, on ties; the grid's first
    when a kind has no model). Returns (delta0, the curve: mean conf of each kind and their gap per
    delta). Why shadows: evaluated models must not choose the threshold they are judged at."""
    curve = []
    for delta in grid:
        inf, inn = mean_conf(infringing_rd, delta), mean_conf(innocent_rd, delta)
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
