"""Attribution metrics (docs/method.md#metrics-and-table-1; docs/peers.md#conventions-adopted).

Conventions, fixed here so that every table uses the same ones:

- ``labels``: 1 = infringing, 0 = innocent; one entry per *model* (the unit of evaluation).
- ``scores`` point one way: higher = more likely infringing.
- A model is called infringing when ``score >= threshold`` (the ``>=`` convention), and the
  threshold comes only from shadow innocent models (:func:`threshold_at_fpr`), never from the
  models being evaluated.
- TPR at x% FPR is the largest TPR among ROC points whose FPR <= x, from sklearn's
  ``roc_curve(drop_intermediate=False)``; never the point *nearest* x, which can lie above x
  (the mistake docs/peers.md#pang-and-wang-reconstruction-based-membership-inference describes). Tied
  scores form one ROC point (a tie block moves TPR and FPR together), so no point inside a tie block
  is ever reported.
- Undefined metrics are ``nan`` with a :class:`MetricUndefinedWarning` saying why (AUC and TPR
  need both classes; with a single model there is only one class), rather than an exception,
  so that a bootstrap resample or a table row with too few models does not crash a notebook.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .errors import InputError

# Slack for comparing an empirical FPR k/n with a target such as 0.1 (both are floats).
_FPR_EPS = 1e-12

Metric = Callable[[np.ndarray, np.ndarray], float]


class MetricUndefinedWarning(UserWarning):
    """A metric is undefined for this input (e.g. one class only) and was reported as nan."""


def _labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D (one per model), got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise InputError(f"labels must be 0 (innocent) or 1 (infringing), got values {np.unique(y)[:10]}")
    return y.astype(int)


def _scores(scores: Sequence[float] | np.ndarray, n: int, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.shape != (n,):
        raise InputError(f"{what} must have one value per model ({n}), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise InputError(f"{what} contain nan or inf at positions {np.flatnonzero(~np.isfinite(s))[:10].tolist()}")
    return s


def _two_class_reason(y: np.ndarray) -> str | None:
    """Why a ranking metric is undefined for these labels, or None when it is defined."""
    if y.size == 0:
        return "no models"
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        which = "infringing" if n_pos else "innocent"
        return (f"all {y.size} model(s) are {which}: ROC AUC and TPR@FPR need at least one "
                "infringing and one innocent model")
    return None


def _undefined(metric: str, reason: str) -> float:
    warnings.warn(f"{metric} undefined ({reason}); reported as nan", MetricUndefinedWarning, stacklevel=3)
    return float("nan")


def accuracy(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray) -> float:
    """Share of models whose 0/1 prediction equals the label; nan for no models."""
    y = _labels(labels)
    p = np.asarray(predictions)
    if p.shape != y.shape:
        raise InputError(f"predictions must have one value per model ({y.size}), got shape {p.shape}")
    if y.size == 0:
        return _undefined("accuracy", "no models")
    return float(np.mean(y == p.astype(int)))


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC (sklearn; ties count one half); nan when only one class is present."""
    y = _labels(labels)
    s = _scores(scores, y.size)
    reason = _two_class_reason(y)
    if reason:
        return _undefined("ROC AUC", reason)
    return float(roc_auc_score(y, s))


def roc_points(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score: ``drop_intermediate=False`` keeps all of
    them, so TPR@FPR never depends on which points sklearn chose to drop."""
    y = _labels(labels)
    s = _scores(scores, y.size)
    reason = _two_class_reason(y)
    if reason:
        raise InputError(f"no ROC curve: {reason}")
    return roc_curve(y, s, drop_intermediate=False)


def tpr_at_fpr(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
               target_fpr: float = 0.1) -> float:
    """Largest TPR among ROC points with FPR <= target_fpr (nan when one class only).

    The ROC always starts at (0, 0), so a defined answer exists for every target >= 0. With few
    innocent models the reachable FPRs are multiples of 1/n_innocent: with 10 innocent models,
    TPR@1%FPR is TPR at FPR 0.
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise InputError(f"target_fpr must lie in [0, 1], got {target_fpr}")
    y = _labels(labels)
    s = _scores(scores, y.size)
    reason = _two_class_reason(y)
    if reason:
        return _undefined(f"TPR@{target_fpr:g}FPR", reason)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(tpr[fpr <= target_fpr + _FPR_EPS].max())


def bootstrap_ci(metric_fn: Metric, labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, stratified: bool = True
                 ) -> tuple[float, float, float]:
    """(point, low, high): the metric on all models and a percentile bootstrap interval.

    Models are resampled with replacement (the model is the unit: its features are not
    independent draws). ``stratified`` resamples each class separately with its own size, so
    every resample has both classes and AUC/TPR stay defined; otherwise resamples that lose a
    class give nan and are skipped (nan-percentiles). ``metric_fn(labels, x)`` takes scores, or
    0/1 predictions for :func:`accuracy`. Deterministic in ``seed``.
    """
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must lie in (0, 1), got {alpha}")
    y = _labels(labels)
    x = np.asarray(scores)
    if x.shape != y.shape:
        raise InputError(f"scores must have one value per model ({y.size}), got shape {x.shape}")
    point = metric_fn(y, x)
    if y.size == 0:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in (0, 1)] if stratified else [np.arange(y.size)]
    groups = [g for g in groups if g.size]
    values = np.empty(n_boot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        for b in range(n_boot):
            idx = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
            values[b] = metric_fn(y[idx], x[idx])
    if np.isnan(values).all():
        return point, float("nan"), float("nan")
    low, high = np.nanpercentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(low), float(high)


def fpr_key(fpr: float) -> str:
    """Column name of TPR at this FPR: 0.1 -> 'tpr@10%fpr', 0.01 -> 'tpr@1%fpr'."""
    return f"tpr@{100 * fpr:g}%fpr"


def summarize(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
              predictions: Sequence[int] | np.ndarray | None = None, threshold: float | None = None,
              fprs: Sequence[float] = (0.1, 0.01), n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
              ) -> dict:
    """One table row: accuracy, auc and TPR at each FPR, each with ``_low``/``_high`` bootstrap
    bounds, plus the counts and a ``notes`` list saying why any value is nan.

    Accuracy needs a decision rule: ``predictions``, or a ``threshold`` calibrated on shadow
    innocent models (a model is predicted infringing when score >= threshold). With neither,
    accuracy is nan (never a threshold tuned on the evaluated models).
    """
    y = _labels(labels)
    s = _scores(scores, y.size)
    notes: list[str] = []
    if predictions is not None and threshold is not None:
        raise InputError("give predictions or threshold, not both")
    if predictions is None and threshold is not None:
        predictions = (s >= threshold).astype(int)
    row: dict = {"n_models": int(y.size), "n_infringing": int(y.sum()), "n_innocent": int(y.size - y.sum())}
    if threshold is not None:
        row["threshold"] = float(threshold)
    kw = dict(n_boot=n_boot, alpha=alpha, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        if predictions is None:
            row["accuracy"] = row["accuracy_low"] = row["accuracy_high"] = float("nan")
            notes.append("accuracy: no predictions or shadow-calibrated threshold given")
        else:
            p = np.asarray(predictions).astype(int)
            row["accuracy"], row["accuracy_low"], row["accuracy_high"] = bootstrap_ci(accuracy, y, p, **kw)
        metrics: list[tuple[str, Metric]] = [("auc", roc_auc)]
        metrics += [(fpr_key(f), lambda yy, ss, f=f: tpr_at_fpr(yy, ss, f)) for f in fprs]
        for name, fn in metrics:
            row[name], row[f"{name}_low"], row[f"{name}_high"] = bootstrap_ci(fn, y, s, **kw)
    reason = _two_class_reason(y)
    if reason:
        notes.append(f"auc, tpr: {reason}")
    n_neg = row["n_innocent"]
    for f in fprs:
        if n_neg and f * n_neg < 1 - _FPR_EPS:
            notes.append(f"{fpr_key(f)}: with {n_neg} innocent models the only reachable FPR <= {f:g} is 0")
    row["notes"] = notes
    return row


def threshold_at_fpr(innocent_scores: Sequence[float] | np.ndarray, target_fpr: float = 0.1) -> float:
    """Decision threshold τ from *shadow innocent* scores: call a model infringing when score >= τ.

    τ is the smallest observed innocent score v such that at most ``floor(target_fpr · n)`` of
    the n innocent scores are >= v; when even the maximum is tied more often than that (or the
    allowance is 0), τ lies just above the maximum (``nextafter``), so no shadow innocent model
    is flagged. Ties are never split: a tied block is either wholly flagged or wholly not, so the
    shadow FPR at τ is always <= target_fpr.
    """
    s = np.asarray(innocent_scores, dtype=float).ravel()
    if s.size == 0:
        raise InputError("threshold_at_fpr needs at least one shadow innocent score")
    if not np.isfinite(s).all():
        raise InputError("shadow innocent scores contain nan or inf")
    if not 0.0 <= target_fpr <= 1.0:
        raise InputError(f"target_fpr must lie in [0, 1], got {target_fpr}")
    allowed = math.floor(target_fpr * s.size + 1e-9)
    values, counts = np.unique(s, return_counts=True)       # ascending
    at_or_above = np.cumsum(counts[::-1])[::-1]             # #{s >= values[i]}
    ok = np.flatnonzero(at_or_above <= allowed)
    if ok.size:
        return float(values[ok[0]])
    return float(np.nextafter(values[-1], np.inf))


def binomial_bits_threshold(n_bits: int = 32, target_fpr: float = 0.1) -> int:
    """Smallest k with P(Binomial(n_bits, 1/2) >= k) <= target_fpr (exact integer arithmetic).

    The watermark test (Stable Signature's): an unmarked image matches each key bit with
    probability 1/2, so flagging >= k matching bits has false-positive rate P(X >= k).
    32 bits: 21 for 10%, 24 for 1%. Returns n_bits + 1 when even all bits matching is too likely.
    """
    if n_bits < 1:
        raise InputError(f"n_bits must be >= 1, got {n_bits}")
    if not 0.0 <= target_fpr <= 1.0:
        raise InputError(f"target_fpr must lie in [0, 1], got {target_fpr}")
    total = 2 ** n_bits
    tail = 0
    best = n_bits + 1
    for k in range(n_bits, -1, -1):        # tail = #outcomes with >= k matches
        tail += math.comb(n_bits, k)
        if tail > target_fpr * total:
            break
        best = k
    return best
