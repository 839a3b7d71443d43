"""Stage 05: statistical-level attribution (the paper's Table 1).

Per source, a discriminator is fitted on that source's shadow models (every replicate and lineage)
and scores its evaluated suspicious models; the instance-level conf is scored beside it as a
baseline score. Every interval resamples models (stratified by label).
Accuracy uses a decision rule fixed before the evaluated models are looked at: the classifier's
own 0.5 for the discriminator, and for conf the threshold calibrated on the shadow innocent
models at the target FPR.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..cache import Result
from ..cached_job import CachedJob, code_of, content, output
from ..config import AttributionSettings, Profile, StatisticalSettings
from ..discriminator import features, fit_score
from ..intervals import binomial_interval
from ..metrics import fpr_key, roc_points, summarize, threshold_at_fpr
from .. import layout
from .instance_attribution import results_tables
from .instance_tables import deltas, delta0_for, replicate_of

SCORES = ("discriminator", "conf")
STAGE = "05_statistical"
# TPR at zero false positives among the innocent models ("tpr@0fp"), not at 1% FPR: a 1% FPR
# needs at least 100 innocent models per source to be reachable, and every profile has far fewer
# (6 at tiny, 16 at paper_full), so "TPR at 1% FPR" was the TPR at FPR 0 under another name.
ZERO_FP = "tpr@0fp"
FPRS = (0.1, 0.0)  # the targets of the TPR columns: 10% FPR, and no false positive at all
METRICS = ("accuracy", "auc", "tpr@10%fpr", ZERO_FP)
TABLE1_COLUMNS = ["source", "score", "n_models", "n_infringing", "n_innocent"] + [
    f"{m}{part}" for m in METRICS for part in ("", "_low", "_high")]


def _features(per_sample: pd.DataFrame, models: pd.DataFrame, strategy: str, n: int, delta0: Mapping[str, float]) -> np.ndarray:
    """Discriminator features of ``models``, each with its own source's delta0 in the conf."""
    x = np.zeros((len(models), n + 1))
    for source in models.source.unique():
        rows = np.flatnonzero((models.source == source).to_numpy())
        x[rows] = features(per_sample, models.name.iloc[rows], strategy, n, delta0_for(delta0, source))
    return x


def score_models(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame, classifier: str | None = None,
                 pooled: bool = False, progress: bool = False) -> pd.DataFrame:
    """One row per evaluated model: its discriminator score and prediction, and its conf with the
    shadow-calibrated decision. Per source, the discriminator is fitted on the source's shadows of
    every replicate (one replicate's shadow set is one infringing and one innocent model per
    lineage: too few to fit a classifier on), and scores the source's evaluated models of every
    replicate; each model's conf uses its source's calibrated delta0. ``pooled`` fits one
    discriminator on every source's shadows. ``progress``: a bar over the fits (a random forest's
    take seconds each)."""
    st, att = profile.statistical, profile.attribution
    classifier = classifier or st.classifier
    strategy, n = st.strategy or att.main_strategy, att.n_keys
    D, _ = deltas(profile, models, per_sample)
    delta0 = D[st.delta0]
    fpr = st.target_fpr
    groups = [("all", models)] if pooled else list(models.groupby("source"))
    rows = []
    for _, g in tqdm(groups, desc=f"discriminator ({classifier}{', pooled' if pooled else ''})", unit="fit",
                     disable=not progress):
        shadow, ev = g[g.role == "shadow"], g[g.role == "evaluated"]
        x_tr = _features(per_sample, shadow, strategy, n, delta0)
        x_ev = _features(per_sample, ev, strategy, n, delta0)
        score, pred, _ = fit_score(classifier, x_tr, shadow.label.to_numpy(), x_ev, profile.run.seed)
        tau = threshold_at_fpr(x_tr[shadow.label.to_numpy() == 0, -1], fpr) if (shadow.label == 0).any() else 0.5
        rows.append(pd.DataFrame({"model": ev.name.to_numpy(), "source": ev.source.to_numpy(),
                                  "lineage": ev.lineage.to_numpy(), "replicate": replicate_of(ev).to_numpy(),
                                  "rho": ev.rho.to_numpy(), "label": ev.label.to_numpy(),
                                  "discriminator": score, "discriminator_pred": pred,
                                  "conf": x_ev[:, -1], "conf_pred": (x_ev[:, -1] >= tau).astype(int), "conf_threshold": tau,
                                  "classifier": classifier, "pooled": pooled}))
    return pd.concat(rows, ignore_index=True)


def table1(profile: Profile, scored: pd.DataFrame, progress: bool = False) -> pd.DataFrame:
    """Per source and score: accuracy, AUC, TPR@10%FPR, TPR at zero false positives among the
    innocent models (``tpr@0fp``, see ``ZERO_FP``) over the source's evaluated
    models of every replicate, with 95% intervals over models: a bootstrap that resamples models,
    widened to at least an exact (Clopper-Pearson) interval: for accuracy over every model, for
    the TPRs over the infringing ones, for AUC over as many disjoint infringing-innocent pairs as
    the smaller class allows. Why: a percentile bootstrap collapses to [1, 1] when 18 of 18 models
    are right, while 18 of 18 only shows an accuracy above 0.81. ``progress``: a bar over the
    (source, score) rows, each ``n_boot`` resamples."""
    st = profile.statistical
    rows = []
    cells = [(source, g, score) for source, g in scored.groupby("source") for score in SCORES]
    for source, g, score in tqdm(cells, desc=f"Table 1 bootstrap ({st.n_boot} resamples)", unit="row",
                                 disable=not progress):
        row = summarize(g.label, g[score], predictions=g[f"{score}_pred"], fprs=FPRS, n_boot=st.n_boot,
                        seed=profile.run.seed)
        zero = fpr_key(0.0)  # summarize's name for it, "tpr@0%fpr"; its note (reachable FPR <= 0 is 0) says nothing
        row = {(k.replace(zero, ZERO_FP, 1) if k.startswith(zero) else k): v for k, v in row.items()}
        row["notes"] = [note for note in row["notes"] if not note.startswith(zero)]
        _widen(row, "accuracy", len(g))
        # AUC = P(infringing scores above innocent); m disjoint (infringing, innocent) pairs are
        # m independent draws of that event, so their exact interval is a valid, cautious one
        _widen(row, "auc", int(min(g.label.sum(), (g.label == 0).sum())))
        for col in [c for c in row if c.startswith("tpr@") and not c.endswith(("_low", "_high"))]:
            _widen(row, col, int(g.label.sum()))
        rows.append({"source": source, "score": score, **row})
    return pd.DataFrame(rows)


def _widen(row: dict, metric: str, trials: int) -> None:
    """Make ``metric``'s interval at least the Clopper-Pearson interval of its share of ``trials``."""
    value = row[metric]
    if not np.isfinite(value) or trials <= 0:
        return
    exact = binomial_interval(int(round(value * trials)), trials)
    row[f"{metric}_low"] = float(np.nanmin([row[f"{metric}_low"], exact.low]))
    row[f"{metric}_high"] = float(np.nanmax([row[f"{metric}_high"], exact.high]))


def roc_table(scored: pd.DataFrame, score: str) -> pd.DataFrame:
    rows = []
    for source, g in scored.groupby("source"):
        if g.label.nunique() < 2:
            continue
        fpr, tpr, _ = roc_points(g.label, g[score])
        rows.append(pd.DataFrame({"source": source, "score": score, "fpr": fpr, "tpr": tpr}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["source", "score", "fpr", "tpr"])


TABLE1_CODE = (__name__, "genlineage.experiments.instance_tables", "genlineage.discriminator", "genlineage.metrics",
               "genlineage.intervals")


@dataclass(frozen=True)
class Table1Job(CachedJob):
    """Table 1: made from stage 04's two tables (by content), every setting the scores and the
    bootstrap use, the seed, and the code that computes it."""

    made_by = "notebook 05_statistical_attribution"

    out: Path = output()
    models: Path = content()
    per_sample: Path = content()
    statistical: StatisticalSettings
    attribution: AttributionSettings
    seed: int
    code: tuple[str, ...] = code_of()


def table1_result(profile: Profile) -> Result:
    """Table 1 as a cached result (:class:`Table1Job`)."""
    tables = results_tables(profile)
    return Table1Job(layout.results_dir(profile, STAGE) / "table1.csv", tables["models"].path,
                     tables["per_sample"].path, profile.statistical, profile.attribution, profile.run.seed,
                     TABLE1_CODE).result()


def statistical_table1(profile: Profile, models: pd.DataFrame, per_sample: pd.DataFrame,
                       progress: bool = False) -> pd.DataFrame:
    """Table 1 of the profile's main classifier (``TABLE1_COLUMNS``), computed once and cached: its
    bootstrap is the slow part of stage 05, and the report reads the very table the notebook showed."""
    result = table1_result(profile)
    if not result.fresh():
        t1 = table1(profile, score_models(profile, models, per_sample, progress=progress), progress)[TABLE1_COLUMNS]
        result.write(lambda tmp: t1.to_csv(tmp, index=False))
    return load_table1(profile)


def load_table1(profile: Profile) -> pd.DataFrame:
    """Stage 05's Table 1 for a reader that must not recompute it; ``cache.StaleResult`` when it is
    missing or stage 04's tables changed since."""
    return pd.read_csv(table1_result(profile).require())
