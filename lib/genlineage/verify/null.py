"""The innocent null of ``genlineage verify``: how likely is it that a model which never saw the
source's outputs comes this close to the source's key samples?

The unit of the null is the *model*, not the key. Measured on the tiny profile (notebook 08), models
differ in how close they come to *every* key (76-85% of the spread of innocent models' mean distance
is an offset all keys of a model share), and innocent models of another base sit systematically
farther from the keys for some sources and closer for others. Hits within one model are therefore
correlated, and a per-key null (keys hit independently at the innocent shadows' pooled rate, a
binomial tail) called 8 of 24 innocent tiny models infringing at a 5% target. The nulls below are
what replaced it; the shadows that make one must be made like the suspect
(:mod:`.population`).

* **From innocent shadow models** (preferred; at least two). One statistic per model
  (:mod:`.statistics`: the mean distance over the keys and the other candidates), computed for the
  suspect and each innocent shadow alike. The p-value is the suspect's rank among them
  (``empirical_pvalue``: exact under exchangeability, no assumption on the spread, but it cannot go
  below 1 / (k + 1)) when the shadows are enough for the target rate, else a Student-t prediction:
  if the statistic is normally spread over innocent models, a new innocent model's statistic X
  satisfies (X - mean) / (s * sqrt(1 + 1/k)) ~ Student t with k - 1 degrees of freedom (mean and s
  from the k shadows), and ``prediction_pvalue`` is its tail at the suspect's statistic. The t's
  heavy tails are the price of estimating the spread from few shadows; ``prediction_floor`` is the
  smallest p-value a perfect copy (distance 0) could get on the mean distance. The functions here
  take "lower = closer" statistics (distances); :mod:`.statistics` passes its "higher = closer"
  scores negated.
* **From control samples**, when there are fewer than two innocent shadows: pairs of the source's domain that the
  source never trained on, asked of the suspect itself. Comparing a model with itself cancels how
  close it comes to everything, so a one-sided Fisher exact test on (key hits, control hits) gives
  the p-value. Assumption: keys are as hard to reconstruct as controls for a model that did not
  inherit them. Keys are the pairs the source reproduces best, which can make them easier for any
  model of the domain; notebook 08 measures the resulting false-positive rate, and every
  infringing verdict from this null carries a warning. ``smallest_fisher_split`` says how many
  queries a target rate takes.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import fisher_exact
from scipy.stats import t as student_t


def model_statistic(rd: np.ndarray) -> float:
    """The statistic the shadow null compares: mean reconstruction distance over the keys."""
    return float(np.mean(np.asarray(rd, dtype=float)))


def _spread(innocent: np.ndarray) -> tuple[np.ndarray, float]:
    x = np.asarray(innocent, dtype=float).ravel()
    if len(x) < 2:
        raise ValueError(f"{len(x)} innocent statistic(s): the spread of innocent models needs at least 2")
    s = float(x.std(ddof=1))
    if not s > 0:
        raise ValueError("the innocent statistics are all equal: no spread to compare with")
    return x, s


def prediction_pvalue(statistic: float, innocent: np.ndarray) -> float:
    """P(a new innocent model's statistic <= ``statistic``): Student-t prediction from the k
    innocent shadows' statistics (normal spread assumed, mean and spread estimated)."""
    x, s = _spread(innocent)
    k = len(x)
    return float(student_t.cdf((float(statistic) - x.mean()) / (s * math.sqrt(1 + 1 / k)), k - 1))


def prediction_floor(innocent: np.ndarray) -> float:
    """The smallest p-value these shadows allow: a suspect that reconstructs every key exactly."""
    return prediction_pvalue(0.0, innocent)


def empirical_pvalue(statistic: float, innocent: np.ndarray) -> float:
    """(1 + #innocent shadows at least as close) / (1 + #innocent shadows): exact under
    exchangeability, with no assumption on the spread."""
    innocent = np.asarray(innocent, dtype=float)
    return float((1 + np.sum(innocent <= statistic)) / (1 + len(innocent)))


def fisher_pvalue(key_hits: int, n_keys: int, control_hits: int, n_controls: int) -> float:
    """One-sided Fisher exact test: are keys hit more often than controls?"""
    table = np.array([[key_hits, n_keys - key_hits], [control_hits, n_controls - control_hits]])
    return float(fisher_exact(table, alternative="greater").pvalue)


def fisher_floor(n_keys: int, n_controls: int) -> float:
    """The smallest Fisher p-value (every key hit, no control hit): 1 / C(n + m, n)."""
    return 1.0 / math.comb(n_keys + n_controls, n_keys)


def smallest_fisher_split(alpha: float, max_keys: int, max_controls: int) -> tuple[int, int] | None:
    """(keys, controls) with the fewest total queries whose best case reaches alpha (by
    ``fisher_pvalue`` itself); None if even every key and control together cannot."""
    for total in range(2, max_keys + max_controls + 1):
        for n in range(max(1, total - max_controls), min(max_keys, total - 1) + 1):
            if fisher_floor(n, total - n) <= alpha * (1 + 1e-9) and fisher_pvalue(n, n, 0, total - n) <= alpha:
                return n, total - n
    return None
