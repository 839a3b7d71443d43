"""The innocent null of ``genlineage verify``: how likely is this many key hits from a model that
never saw the source's outputs?

Two nulls, both stated so a reader can judge them:

* **From innocent shadow models** (preferred). The owner's innocent shadows, queried with the same
  keys, give the per-key hit rate of an innocent model: p0 = (hits + 1) / (keys x shadows + 2)
  (add-one, so a clean null is never 0). The suspect's number of hits k among n keys is then
  compared with Binomial(n, p0): p = P(X >= k). The approximation: keys hit independently and
  alike. On real models it does not hold well: models differ in how
  close they come to *every* key, so hits within one model are correlated and the binomial tail is
  too small (notebook 08 measures its false-positive rate on innocent models). ``empirical_pvalue`` gives
  the assumption-free rank of the suspect's conf among the shadows' (coarse: it cannot go below
  1 / (shadows + 1)); the verdict carries a warning whenever the two disagree.
* **From control samples**, when there are no shadows: pairs of the source's domain that the
  source never trained on. An innocent suspect should reconstruct keys no better than controls, so
  a one-sided Fisher exact test on (key hits, control hits) gives the p-value. The approximation:
  keys are as hard to reconstruct as controls for a model that did not inherit them.

A verdict can only reach a target false-positive rate alpha if the smallest p-value the test can
produce is <= alpha; ``min_keys_binomial`` and ``smallest_fisher_split`` say how many queries that
takes, so a budget that is too small is refused before any query is spent.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom, fisher_exact


def null_hit_rate(hits: int, trials: int) -> float:
    """Add-one estimate of an innocent model's per-key hit rate."""
    if trials < 0 or not 0 <= hits <= max(trials, 0):
        raise ValueError(f"hits={hits} must lie in [0, trials={trials}]")
    return (hits + 1) / (trials + 2)


def binomial_pvalue(k: int, n: int, p0: float) -> float:
    """P(X >= k), X ~ Binomial(n, p0): the chance an innocent model hits at least k of n keys."""
    if not 0 <= k <= n:
        raise ValueError(f"k={k} hits must lie in [0, n={n}]")
    return float(binom.sf(k - 1, n, p0)) if k > 0 else 1.0


def min_keys_binomial(p0: float, alpha: float, max_keys: int = 100_000) -> int | None:
    """Fewest keys whose best case (every key hit) reaches alpha, judged by the very function the
    verdict uses (so float rounding can never let a budget pass that the verdict then misses)."""
    if not 0 < p0 < 1:
        raise ValueError(f"p0={p0} must lie in (0, 1)")
    guess = max(1, math.floor(math.log(alpha) / math.log(p0)))
    for n in range(guess, max_keys + 1):
        if binomial_pvalue(n, n, p0) <= alpha:
            return n
    return None


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


def empirical_pvalue(conf: float, innocent_confs: np.ndarray) -> float:
    """(1 + #innocent shadows scoring at least as high) / (1 + #innocent shadows)."""
    innocent_confs = np.asarray(innocent_confs, dtype=float)
    return float((1 + np.sum(innocent_confs >= conf)) / (1 + len(innocent_confs)))
