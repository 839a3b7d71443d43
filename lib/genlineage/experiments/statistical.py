"""Stage 05: statistical-level attribution (the paper's Table 1).

Per source, a discriminator is fitted on that source's shadow models (both lineages) and scores
its evaluated suspicious models; the instance-level conf is scored beside it as a baseline score.
Accuracy uses a decision rule fixed before the evaluated models are looked at: the classifier's
own 0.5 for the discriminator, and for conf the threshold calibrated on the shadow innocent
models at the target FPR.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import Profile
from ..discriminator import features, fit_score
from ..metrics import roc_points, summarize, threshold_at_fpr
from .instance import deltas

SCORES = ("discriminator", "conf")


def score_models(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, classifier: str | None = None,
                 pooled: bool = False) -> pd.DataFrame:
    """One row per evaluated model: its discriminator score and prediction, and its conf with the
    shadow-calibrated decision. ``pooled`` fits one discriminator on every source's shadows."""
    st = profile["statistical"]
    att = profile["attribution"]
    classifier = classifier or st["classifier"]
    strategy, n = st.get("strategy", att["main_strategy"]), int(att["n_keys"])
    D, _ = deltas(profile, models, per_sample)
    delta0 = D[st.get("delta0", "calibrated")]
    fpr = float(st.get("target_fpr", 0.1))
    groups = [("all", models)] if pooled else list(models.groupby("source"))
    rows = []
    for _, g in groups:
        shadow, ev = g[g.role == "shadow"], g[g.role == "evaluated"]
        x_tr = features(per_sample, shadow.name, strategy, n, delta0)
        x_ev = features(per_sample, ev.name, strategy, n, delta0)
        score, pred, _ = fit_score(classifier, x_tr, shadow.label.to_numpy(), x_ev, int(profile["seed"]))
        tau = threshold_at_fpr(x_tr[shadow.label.to_numpy() == 0, -1], fpr) if (shadow.label == 0).any() else 0.5
        rows.append(pd.DataFrame({"model": ev.name.to_numpy(), "source": ev.source.to_numpy(), "lineage": ev.lineage.to_numpy(),
                                  "rho": ev.rho.to_numpy(), "label": ev.label.to_numpy(),
                                  "discriminator": score, "discriminator_pred": pred,
                                  "conf": x_ev[:, -1], "conf_pred": (x_ev[:, -1] >= tau).astype(int), "conf_threshold": tau,
                                  "classifier": classifier, "pooled": pooled}))
    return pd.concat(rows, ignore_index=True)


def table1(profile: Profile, scored: pd.DataFrame) -> pd.DataFrame:
    """Per source and score: accuracy, AUC, TPR@10%FPR, TPR@1%FPR with bootstrap CIs."""
    st = profile["statistical"]
    rows = []
    for source, g in scored.groupby("source"):
        for score in SCORES:
            row = summarize(g.label, g[score], predictions=g[f"{score}_pred"], n_boot=int(st.get("n_boot", 1000)),
                            seed=int(profile["seed"]))
            rows.append({"source": source, "score": score, **row})
    return pd.DataFrame(rows)


def roc_table(scored: pd.DataFrame, score: str) -> pd.DataFrame:
    rows = []
    for source, g in scored.groupby("source"):
        if g.label.nunique() < 2:
            continue
        fpr, tpr, _ = roc_points(g.label, g[score])
        rows.append(pd.DataFrame({"source": source, "score": score, "fpr": fpr, "tpr": tpr}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["source", "score", "fpr", "tpr"])


def table1_claims(t1: pd.DataFrame) -> pd.DataFrame:
    from .instance import claim

    d = t1[t1.score == "discriminator"]
    out = []
    for col, bound, text in (("accuracy", 0.85, "accuracy > 85% for every source"), ("auc", 0.8, "AUC > 0.8 for every source"),
                             ("tpr@10%fpr", 0.7, "TPR@10%FPR > 0.7 for every source")):
        vals = d[col].to_numpy(dtype=float)
        ok = bool(np.all(vals > bound)) if np.isfinite(vals).all() else None
        out.append(claim(text, f"lowest {np.nanmin(vals):.2f} (over {len(vals)} sources)" if np.isfinite(vals).any() else "undefined", ok))
    return pd.DataFrame(out)
