"""How many of the source's keys (and control pairs) ``genlineage verify`` asks a suspect, fixed
before the suspect is asked anything.

Why apart from the verdict: the count is a property of the null (how far the innocent shadows'
spread lets a perfect copy stand out at the target rate, or what a Fisher test on keys and
controls can reach), computed on arrays; stage 08 asks it too, to know which controls a suspect
will be asked before its weights are released.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from . import null, statistics


def shadow_key_count(innocent: np.ndarray, alpha: float, n_keys: int, n_seeds: int, budget: int | None, *,
                     statistic: statistics.Statistic | None = None, settings: statistics.StatisticSettings | None = None,
                     n_controls: int = 0, infringing: np.ndarray | None = None,
                     innocent_controls: np.ndarray | None = None, infringing_controls: np.ndarray | None = None) -> int:
    """How many keys to ask: every key the budget allows (fixed before looking at the shadows:
    choosing the count where the shadows happen to agree would shrink their spread and the p-value
    with it). Refused before any query of the suspect when even a perfect copy (distance 0 to
    every key) could not beat the shadows' null over those keys at alpha with ``statistic``
    (default: the mean distance); the only other count a refusal suggests is all the keys, which
    does not depend on the shadows either."""
    statistic = statistic or statistics.get_statistic("mean_rd")
    settings = settings or statistics.StatisticSettings()
    infringing = np.zeros((0, innocent.shape[1])) if infringing is None else infringing

    def floor(n: int) -> float:
        units = shadow_units(innocent, innocent_controls, n, n_controls)
        refs = shadow_units(infringing, infringing_controls, n, n_controls)
        try:
            test = statistics.conformal_test(statistic, statistics.ideal_unit(units), units, refs, settings)
        except ValueError:
            return 1.0
        return statistics.primary_p(test.rank_p, test.parametric_p, len(units), alpha)[0]

    cap = n_keys if budget is None else min(n_keys, int(budget) // n_seeds - n_controls)
    if cap >= 1 and floor(cap) <= alpha:
        return cap
    if cap < n_keys and floor(n_keys) <= alpha:
        controls = f" + {n_controls} controls" if n_controls else ""
        raise InputError(f"query budget {budget} is too small for a {alpha:g} false-positive rate against these shadows: "
                         f"all {n_keys} keys would do, a budget of {(n_keys + n_controls) * n_seeds} ({n_keys} keys"
                         f"{controls} x {n_seeds} seeds).")
    k, n = len(innocent), max(cap, 1)
    raise InputError(f"{k} innocent shadows cannot support a {alpha:g} false-positive rate over {n} keys with the "
                     f"{statistic.name} statistic: their scores are too spread for even a perfect copy to stand out "
                     f"(smallest p-value {floor(n):.2g}; by rank alone {statistics.rank_floor(k):.2g}). Add innocent "
                     f"shadows (at least {statistics.shadows_needed(alpha)} for a rank test at this rate), or raise "
                     "--target-fpr.")


def shadow_units(keys: np.ndarray, controls: np.ndarray | None, n_keys: int, n_controls: int) -> list[statistics.Unit]:
    """Each shadow's answers as the statistics' unit: its first ``n_keys`` key distances and first
    ``n_controls`` control distances (what the suspect is asked)."""
    return [statistics.Unit(keys[i, :n_keys], None if controls is None else controls[i, :n_controls])
            for i in range(len(keys))]


# Without a budget, at most this many controls per key: the controls' hit rate is then known to half
# the keys' standard error, and more controls add little power to the Fisher test but cost queries
# (the paper profile's 500 held-out pairs per domain would otherwise all be asked of every suspect).
CONTROLS_PER_KEY = 4


def fisher_split(alpha: float, n_keys: int, n_controls: int, n_seeds: int, budget: int | None) -> tuple[int, int]:
    """(keys, controls) to ask: every key and up to ``CONTROLS_PER_KEY`` controls per key without a
    budget, else a split of the budget that still reaches alpha (keys first to half, leftover slots
    to whichever side has samples left)."""
    split = null.smallest_fisher_split(alpha, n_keys, n_controls)
    if split is None:
        raise InputError(f"{n_keys} keys and {n_controls} control samples cannot reach a {alpha:g} false-positive "
                         "rate (Fisher exact test); add keys or controls, or raise --target-fpr.")
    if budget is None:
        return n_keys, min(n_controls, max(split[1], CONTROLS_PER_KEY * n_keys))
    slots = int(budget) // n_seeds
    if slots < sum(split):
        raise InputError(f"query budget {budget} is too small for a {alpha:g} false-positive rate: the smallest that "
                         f"would do is {sum(split) * n_seeds} ({split[0]} keys + {split[1]} controls x {n_seeds} seeds).")
    n_use = min(n_keys, max(split[0], math.ceil(slots / 2)))
    m_use = min(n_controls, slots - n_use)
    n_use = min(n_keys, slots - m_use)
    if null.fisher_pvalue(n_use, n_use, 0, m_use) > alpha:
        return split
    return n_use, m_use
