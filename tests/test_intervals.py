"""Intervals and tests over models (genlineage.intervals) on constructed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from genlineage.intervals import (HELD, INCONCLUSIVE, NOT_HELD, NOT_JUDGED, SHARE, binomial_interval,
                                  difference_interval, judge, judge_p, paired_greater_p, per_group, permutation_p,
                                  t_interval)


def test_t_interval_matches_the_textbook_formula():
    values = [0.2, 0.4, 0.6]
    iv = t_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert iv.mean == pytest.approx(0.4) and iv.n == 3
    assert iv.low == pytest.approx(0.4 - half) and iv.high == pytest.approx(0.4 + half)


def test_t_interval_of_one_model_has_no_bounds_and_nan_values_are_dropped():
    assert math.isnan(t_interval([0.3]).low) and t_interval([0.3]).mean == 0.3
    assert t_interval([0.1, float("nan"), 0.3]).n == 2
    assert t_interval([]).n == 0


def test_t_interval_covers_its_level_on_simulated_models():
    rng = np.random.default_rng(0)
    hits = [(iv.low < 0.5 < iv.high) for iv in (t_interval(rng.normal(0.5, 0.1, 3)) for _ in range(4000))]
    assert abs(np.mean(hits) - 0.95) < 0.02


def test_a_share_interval_stays_in_zero_one_and_still_holds_the_mean():
    plain, share = t_interval([0.0, 0.0, 1.0]), t_interval([0.0, 0.0, 1.0], bounds=SHARE)
    assert plain.low < 0 and plain.high > 1, "the plain t interval of three shares leaves [0, 1]"
    assert 0.0 <= share.low <= share.mean <= share.high <= 1.0
    assert share.mean == pytest.approx(1 / 3) and share.n == 3
    assert (share.low, share.high) == (0.0, 1.0)
    inside = t_interval([0.4, 0.5, 0.6], bounds=SHARE)
    assert (inside.low, inside.high) == (t_interval([0.4, 0.5, 0.6]).low, t_interval([0.4, 0.5, 0.6]).high), \
        "an interval already inside the bounds is unchanged"
    assert math.isnan(t_interval([0.3], bounds=SHARE).low), "one model still gives no interval"
    with pytest.raises(ValueError, match="outside the bounds"):
        t_interval([0.2, 1.5], bounds=SHARE)


def test_an_unbounded_quantity_keeps_its_t_interval():
    gaps = [-0.05, 0.02, 0.30]  # a distance gap (innocent minus infringing mean RD): any sign
    assert t_interval(gaps) == t_interval(gaps, bounds=None)
    iv = t_interval(gaps)
    half = stats.t.ppf(0.975, 2) * np.std(gaps, ddof=1) / math.sqrt(3)
    assert iv.low == pytest.approx(np.mean(gaps) - half) and iv.low < 0


def test_truncation_keeps_the_coverage_of_a_share():
    rng = np.random.default_rng(1)
    draws = [rng.binomial(10, 0.1, 3) / 10 for _ in range(3000)]  # shares near 0: plain intervals dip below it
    truncated = [t_interval(d, bounds=SHARE) for d in draws]
    plain = [t_interval(d) for d in draws]
    assert any(iv.low < 0 for iv in plain)
    assert all(0.0 <= iv.low and iv.high <= 1.0 for iv in truncated if np.isfinite(iv.low))

    def cover(ivs) -> float:
        return np.mean([iv.low <= 0.1 <= iv.high for iv in ivs])

    assert cover(truncated) == cover(plain)


def test_per_group_bounds_each_groups_interval():
    import pandas as pd

    t = pd.DataFrame({"g": ["a"] * 3 + ["b"] * 3, "v": [0.0, 0.0, 1.0, 0.4, 0.5, 0.6]})
    out = per_group(t, ["g"], "v", bounds=SHARE).set_index("g")
    assert out.loc["a", "low"] == 0.0 and out.loc["a", "high"] == 1.0
    assert out.loc["b", "low"] == pytest.approx(per_group(t, ["g"], "v").set_index("g").loc["b", "low"])
    assert (per_group(t, ["g"], "v").set_index("g").loc["a", "low"]) < 0, "without bounds: unchanged"


def test_difference_interval_excludes_zero_only_when_groups_differ():
    far = difference_interval([0.50, 0.52, 0.51], [0.30, 0.31, 0.29, 0.30])
    assert far.mean == pytest.approx(0.21, abs=1e-9) and far.low > 0
    near = difference_interval([0.30, 0.40, 0.35], [0.31, 0.38, 0.36])
    assert near.low < 0 < near.high


def test_permutation_p_is_exact_for_three_against_six():
    inf, inn = [0.9, 0.8, 0.85], [0.1, 0.2, 0.15, 0.12, 0.18, 0.11]
    assert permutation_p(inf, inn) == pytest.approx(1 / math.comb(9, 3))
    assert permutation_p(inn, inf) == pytest.approx(1.0)
    tied = permutation_p([0.5, 0.5, 0.5], [0.5] * 6)
    assert tied == 1.0, "ties count against the claim"


def test_permutation_p_falls_back_to_monte_carlo_for_large_groups():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1, 30), rng.normal(0.0, 1, 30)
    p = permutation_p(a, b, max_exact=10)
    assert 0 < p < 0.01


def test_binomial_interval_is_clopper_pearson():
    iv = binomial_interval(0, 24)
    assert iv.mean == 0 and iv.low == 0 and iv.high == pytest.approx(1 - 0.025 ** (1 / 24))
    assert binomial_interval(24, 24).high == 1.0
    mid = binomial_interval(12, 48)
    assert mid.low < 0.25 < mid.high


def test_paired_greater_p_sees_a_shift_on_the_same_items():
    base = np.linspace(0, 0.2, 20)
    assert paired_greater_p(base + 0.3, base) < 0.001
    assert paired_greater_p(base, base + 0.3) > 0.5
    assert paired_greater_p(base, base) == 1.0


@pytest.mark.parametrize("low, high, above, below, want", [
    (0.25, 0.40, 0.2, None, HELD),
    (0.10, 0.19, 0.2, None, NOT_HELD),
    (0.15, 0.30, 0.2, None, INCONCLUSIVE),
    (0.32, 0.45, 0.3, 0.5, HELD),
    (0.55, 0.70, 0.3, 0.5, NOT_HELD),
    (0.45, 0.60, 0.3, 0.5, INCONCLUSIVE),
    (0.01, 0.08, None, 0.1, HELD),
    (float("nan"), float("nan"), 0.2, None, NOT_JUDGED),
])
def test_judge_reads_the_interval_against_the_region(low, high, above, below, want):
    assert judge(low, high, above=above, below=below) == want


def test_judge_p():
    assert judge_p(0.01) == HELD and judge_p(0.2) == NOT_HELD and judge_p(float("nan")) == NOT_JUDGED


def test_per_group_counts_models():
    import pandas as pd

    t = pd.DataFrame({"g": ["a", "a", "a", "b"], "v": [0.1, 0.2, 0.3, 0.5]})
    out = per_group(t, ["g"], "v").set_index("g")
    assert out.loc["a", "models"] == 3 and out.loc["a", "mean"] == pytest.approx(0.2)
    assert out.loc["b", "models"] == 1 and math.isnan(out.loc["b", "low"])


def test_the_stratified_permutation_test_relabels_within_strata_and_pools_their_evidence():
    from genlineage.intervals import permutation_p, stratified_permutation_p

    # four sources, one infringing (b) and two innocent (a) models each, on scales of their own
    a, a_s = [0.50, 0.52, 0.90, 0.95, 0.30, 0.31, 0.70, 0.72], ["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s4"]
    b, b_s = [0.40, 0.80, 0.20, 0.60], ["s1", "s2", "s3", "s4"]
    assert permutation_p([0.50, 0.52], [0.40]) == pytest.approx(1 / 3), "one source alone: p >= 1/3"
    assert stratified_permutation_p(a, a_s, b, b_s) == pytest.approx(1 / 81), "every source agrees: 1 of 3^4"
    flipped = [0.60, 1.00, 0.40, 0.80]  # every infringing model now the farthest of its source
    assert stratified_permutation_p(a, a_s, flipped, b_s) == pytest.approx(1.0)
    pooled = permutation_p(a, b)
    assert pooled > 0.05, "pooling across sources without strata drowns the effect in the sources' scales"
    # a stratum without both kinds is left out; none with both: no test
    assert stratified_permutation_p(a + [9.0], a_s + ["s5"], b, b_s) == pytest.approx(1 / 81)
    assert np.isnan(stratified_permutation_p([1.0], ["x"], [0.0], ["y"]))
    # the Monte Carlo branch agrees with the exact one
    mc = stratified_permutation_p(a, a_s, b, b_s, max_exact=10, n_draws=20_000)
    assert mc == pytest.approx(1 / 81, abs=0.01)


def test_a_cluster_interval_takes_the_source_as_its_unit():
    """Nine models of one easy source must not outvote three of a hard one: the mean is over sources
    and the interval has sources - 1 degrees of freedom."""
    from genlineage.intervals import cluster_difference_interval, cluster_interval

    values = [0.9] * 9 + [0.1] * 3 + [0.5] * 3
    clusters = ["a"] * 9 + ["b"] * 3 + ["c"] * 3
    iv = cluster_interval(values, clusters, bounds=(0.0, 1.0))
    assert iv.mean == pytest.approx(0.5) and iv.n == 3 and "n = 3 sources" in iv.text()
    assert 0.0 <= iv.low < 0.5 < iv.high <= 1.0
    models = t_interval(values)
    assert models.mean > iv.mean and (models.high - models.low) < (iv.high - iv.low)
    diff = cluster_difference_interval([0.5, 0.6, 0.9], ["a", "a", "b"], [0.4, 0.8, 0.7], ["a", "b", "c"])
    assert diff.n == 2 and diff.mean == pytest.approx(((0.55 - 0.4) + (0.9 - 0.8)) / 2)


def test_one_cluster_falls_back_to_its_models():
    """A profile of one source (tyres): the statement is about that source, its models the units."""
    from genlineage.intervals import cluster_difference_interval, cluster_interval

    iv = cluster_interval([0.2, 0.3, 0.4], ["a"] * 3)
    assert iv.n == 3 and iv.unit == "" and np.isfinite(iv.low)
    diff = cluster_difference_interval([0.5, 0.6, 0.7], ["a"] * 3, [0.1, 0.2, 0.3], ["a"] * 3)
    assert diff.mean == pytest.approx(0.4) and diff.n == 6 and np.isfinite(diff.low)


def test_a_welch_interval_of_two_groups_of_shares_stays_inside_minus_one_one():
    from genlineage.intervals import SHARE_DIFFERENCE, difference_interval

    plain = difference_interval([1.0, 0.0], [0.0, 0.5])
    bounded = difference_interval([1.0, 0.0], [0.0, 0.5], bounds=SHARE_DIFFERENCE)
    assert plain.low < -1 and plain.high > 1, "the planted case is one the plain interval leaves"
    assert (bounded.mean, bounded.low, bounded.high) == (plain.mean, -1.0, 1.0)
