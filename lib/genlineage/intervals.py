"""Intervals and tests whose unit is the model, and the rule that judges a claim by its interval.

Why its own module: models differ in how close they come to *every* key (a model effect), so keys
of one model are not independent draws. Any statement that compares infringing with innocent
models must resample models, not keys. Everything here works on one number per model (a conf, a
mean RD, a verdict) and knows nothing of pipelines.

* :func:`t_interval`: mean over models with a 95% Student-t interval (honest at 3 models, where
  a bootstrap over 3 values has only 10 distinct resamples and covers far less than 95%),
  truncated to [0, 1] for a share, a rate or an AUC (``bounds=SHARE``).
* :func:`difference_interval`: Welch interval of mean(a) - mean(b) for two groups of models.
* :func:`cluster_interval`, :func:`cluster_difference_interval`: the same with the source as the
  unit, for models pooled over sources (they share keys and delta0).
* :func:`permutation_p`: exact one-sided permutation test of mean(a) > mean(b) over models.
* :func:`binomial_interval`: Clopper-Pearson interval of a rate over models (verdicts).
* :func:`paired_greater_p`: one-sided paired (Wilcoxon signed-rank) test on the same items.
* :func:`judge`: held / not held / inconclusive from an interval and the claim's region.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
HELD, NOT_HELD, INCONCLUSIVE, NOT_JUDGED = "held", "not held", "inconclusive", "n/a"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its two-sided interval and the number of models behind it."""

    mean: float
    low: float
    high: float
    n: int
    unit: str = ""   # what n counts when it is not models (e.g. "sources", for a cluster interval)

    def text(self, digits: int = 2, signed: bool = False) -> str:
        """``0.42 [0.30, 0.55] (n = 3)``, or ``(n = 4 sources)``: how a report states it."""
        f = f"{{:{'+' if signed else ''}.{digits}f}}"
        n = f"n = {self.n}" + (f" {self.unit}" if self.unit else "")
        if not np.isfinite(self.low):
            return f"{f.format(self.mean)} ({n}, no interval)"
        return f"{f.format(self.mean)} [{f.format(self.low)}, {f.format(self.high)}] ({n})"


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


SHARE = (0.0, 1.0)  # the bounds of a share, a rate or an AUC: pass as ``bounds``
SHARE_DIFFERENCE = (-1.0, 1.0)  # the bounds of a difference of two shares (a conf gap)


def _within(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """An interval truncated to the range its quantity can take (``bounds``; None: unbounded)."""
    if bounds is None:
        return low, high
    return max(low, float(bounds[0])), min(high, float(bounds[1]))


def t_interval(values: Sequence[float], level: float = LEVEL, bounds: tuple[float, float] | None = None) -> Interval:
    """Mean of per-model values with a Student-t interval (n - 1 degrees of freedom).
    One model gives no interval (nan bounds); identical models give a zero-width one.

    ``bounds`` (e.g. :data:`SHARE`, for a conf, a bin share, a rate or an AUC) truncates the
    interval to the range the quantity can take. Why: with 3 models the t interval of shares
    0, 0, 1 is [-1.1, 1.8], a statement about impossible values. Why it stays valid: the true
    mean of values in [0, 1] lies in [0, 1], so whenever the t interval covers it, its
    intersection with [0, 1] does too; the coverage is unchanged. A difference of two shares lies
    in [-1, 1] (:data:`SHARE_DIFFERENCE`) by the same argument; a distance gap has no such bound:
    leave ``bounds`` None there."""
    a = _finite(values)
    n = len(a)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if bounds is not None:
        lo_bound, hi_bound = bounds
        if not lo_bound <= hi_bound:
            raise ValueError(f"bounds must be (low, high) with low <= high, got {bounds}")
        if a.min() < lo_bound or a.max() > hi_bound:
            raise ValueError(f"values outside the bounds {bounds} they are said to lie in: "
                             f"{a.min():g} to {a.max():g}")
    mean = float(a.mean())
    if n == 1:
        return Interval(mean, float("nan"), float("nan"), 1)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * a.std(ddof=1) / math.sqrt(n))
    return Interval(mean, *_within(mean - half, mean + half, bounds), n)


def _cluster_means(values: Sequence[float], clusters: Sequence) -> pd.Series:
    frame = pd.DataFrame({"value": np.asarray(values, dtype=float), "cluster": list(clusters)})
    return frame[np.isfinite(frame.value)].groupby("cluster").value.mean()


def cluster_interval(values: Sequence[float], clusters: Sequence, level: float = LEVEL,
                     bounds: tuple[float, float] | None = None, unit: str = "sources") -> Interval:
    """Mean of the cluster means with a Student-t interval over clusters (k - 1 degrees of freedom).

    Why: the models of one source share its keys and its calibrated delta0, and the three replicates
    share the sources, so models pooled over sources are not independent draws; a source that
    happens to be easy moves all of its models together. Averaging within a source first and
    treating the sources as the units is the simplest interval that respects that design (with 4
    sources it is wide, and says so)."""
    means = _cluster_means(values, clusters)
    if len(means) < 2:  # one source: the statement is about it alone, and its models are the units
        return t_interval(values, level, bounds)
    return dataclasses.replace(t_interval(means.to_numpy(), level, bounds), unit=unit)


def cluster_difference_interval(a: Sequence[float], a_clusters: Sequence, b: Sequence[float], b_clusters: Sequence,
                                level: float = LEVEL, unit: str = "sources") -> Interval:
    """mean(a) - mean(b) compared within each cluster (source), then a t interval over the clusters
    that hold both groups: each source's infringing models against its own innocent ones."""
    ma, mb = _cluster_means(a, a_clusters), _cluster_means(b, b_clusters)
    common = ma.index.intersection(mb.index)
    if len(common) < 2:  # one source: Welch over its models
        return difference_interval(a, b, level)
    return dataclasses.replace(t_interval((ma[common] - mb[common]).to_numpy(), level), unit=unit)


def difference_interval(a: Sequence[float], b: Sequence[float], level: float = LEVEL,
                        bounds: tuple[float, float] | None = None) -> Interval:
    """mean(a) - mean(b) with a Welch interval (unequal spreads); ``n`` counts both groups.
    ``bounds`` truncates the interval as in :func:`t_interval` (:data:`SHARE_DIFFERENCE` for two
    groups of shares)."""
    x, y = _finite(a), _finite(b)
    n = len(x) + len(y)
    if not len(x) or not len(y):
        return Interval(float("nan"), float("nan"), float("nan"), n)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Interval(diff, float("nan"), float("nan"), n)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:
        return Interval(diff, diff, diff, n)
    dof = (vx + vy) ** 2 / ((vx ** 2) / (len(x) - 1) + (vy ** 2) / (len(y) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return Interval(diff, *_within(diff - half, diff + half, bounds), n)


def _relabelled_differences(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """mean(a) - mean(b) for every relabelling of the pooled values into |x| a's and |y| b's."""
    pooled = np.concatenate([x, y])
    n, k, total = len(pooled), len(x), pooled.sum()
    sums = np.array([pooled[list(c)].sum() for c in itertools.combinations(range(n), k)])
    return sums / k - (total - sums) / (n - k)


def _tolerance(*values: np.ndarray) -> float:
    return 1e-12 * max(1.0, max(float(np.abs(v).max()) for v in values if len(v)))


def permutation_p(a: Sequence[float], b: Sequence[float], max_exact: int = 200_000, n_draws: int = 20_000,
                  seed: int = 0) -> float:
    """One-sided p-value of mean(a) > mean(b): the share of relabellings of the pooled models
    whose difference is at least the observed one (ties count against the claim). Exact when the
    number of relabellings is at most ``max_exact`` (3 vs 6 models: 84, smallest p 1/84), else
    Monte Carlo with the observed labelling counted in."""
    x, y = _finite(a), _finite(b)
    if not len(x) or not len(y):
        return float("nan")
    observed, tol = x.mean() - y.mean(), _tolerance(x, y)
    if math.comb(len(x) + len(y), len(x)) <= max_exact:
        return float(np.mean(_relabelled_differences(x, y) >= observed - tol))
    pooled, n, k = np.concatenate([x, y]), len(x) + len(y), len(x)
    rng = np.random.default_rng(seed)
    sums = np.array([pooled[rng.permutation(n)[:k]].sum() for _ in range(n_draws)])
    diffs = sums / k - (pooled.sum() - sums) / (n - k)
    return float((np.sum(diffs >= observed - tol) + 1) / (n_draws + 1))


def stratified_permutation_p(a: Sequence[float], a_strata: Sequence, b: Sequence[float], b_strata: Sequence,
                             max_exact: int = 200_000, n_draws: int = 20_000, seed: int = 0) -> float:
    """One-sided p-value that a exceeds b within strata, pooled over them: the statistic is the sum
    over strata of mean(a) - mean(b) within the stratum, and labels are relabelled within each
    stratum only (a source's models are compared on its own keys, whose scale is its own). Why:
    with few models per stratum no stratum can reach significance alone (1 vs 2 models: p >= 1/3),
    while 4 such strata give 81 relabellings (smallest p 1/81). Strata holding only a's or only
    b's are left out. Exact up to ``max_exact`` relabellings, else Monte Carlo."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    a_strata, b_strata = np.asarray(a_strata), np.asarray(b_strata)
    per_stratum, observed = [], 0.0
    for stratum in sorted(set(a_strata.tolist()) & set(b_strata.tolist()), key=str):
        x, y = _finite(a[a_strata == stratum]), _finite(b[b_strata == stratum])
        if len(x) and len(y):
            per_stratum.append(_relabelled_differences(x, y))
            observed += x.mean() - y.mean()
    if not per_stratum:
        return float("nan")
    tol = _tolerance(*per_stratum) * len(per_stratum)
    if math.prod(len(d) for d in per_stratum) <= max_exact:
        sums = np.zeros(1)
        for d in per_stratum:
            sums = np.add.outer(sums, d).ravel()
        return float(np.mean(sums >= observed - tol))
    rng = np.random.default_rng(seed)
    sums = sum(d[rng.integers(len(d), size=n_draws)] for d in per_stratum)
    return float((np.sum(sums >= observed - tol) + 1) / (n_draws + 1))


def binomial_interval(successes: int, trials: int, level: float = LEVEL) -> Interval:
    """A rate over models with its exact (Clopper-Pearson) interval."""
    if trials <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    alpha = 1 - level
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return Interval(successes / trials, low, high, trials)


def paired_greater_p(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided paired test that ``a`` exceeds ``b`` on the same items (Wilcoxon signed-rank,
    zero differences dropped); 1.0 when every pair ties."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    if not np.any(diff != 0):
        return 1.0
    return float(stats.wilcoxon(diff, alternative="greater", zero_method="wilcox").pvalue)


def judge(low: float, high: float, above: float | None = None, below: float | None = None) -> str:
    """Held when the whole interval lies in the claim's region (``above`` < x < ``below``; either
    side may be open), not held when none of it does, inconclusive when it straddles a bound.
    An interval that could not be formed (nan) cannot decide: not judged."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOT_JUDGED
    lo_bound = -np.inf if above is None else above
    hi_bound = np.inf if below is None else below
    if low > lo_bound and high < hi_bound:
        return HELD
    if high <= lo_bound or low >= hi_bound:
        return NOT_HELD
    return INCONCLUSIVE


def judge_p(p_value: float, alpha: float = 1 - LEVEL) -> str:
    """A one-sided test's claim: held when p < alpha, otherwise not shown (not held)."""
    if not np.isfinite(p_value):
        return NOT_JUDGED
    return HELD if p_value < alpha else NOT_HELD


def per_group(table: pd.DataFrame, by: list[str], value: str,
              bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Mean of ``value`` over the models of each group with its t interval (columns mean, low,
    high, models); ``bounds`` as in :func:`t_interval` (``SHARE`` for a conf or a bin share)."""
    rows = []
    for key, g in table.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        iv = t_interval(g[value], bounds=bounds)
        rows.append({**dict(zip(by, key)), "mean": iv.mean, "low": iv.low, "high": iv.high, "models": iv.n})
    return pd.DataFrame(rows, columns=[*by, "mean", "low", "high", "models"])
