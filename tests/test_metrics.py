"""Attribution metrics: hand-built ROCs, ties, undefined cases, bootstrap, thresholds."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from genlineage.errors import InputError
from genlineage.metrics import (MetricUndefinedWarning, accuracy, binomial_bits_threshold, bootstrap_ci, roc_auc,
                                roc_points, summarize, threshold_at_fpr, tpr_at_fpr)

# Hand-computed case with ties: 4 infringing (1) and 10 innocent (0) models.
TIE_LABELS = np.array([1, 1, 1, 1] + [0] * 10)
TIE_SCORES = np.array([0.9, 0.8, 0.5, 0.3] + [0.8, 0.5, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.0])
# ROC points, one per distinct score (a tie block moves TPR and FPR together):
#   thr inf: (FPR 0.0, TPR 0.00)
#   thr 0.9: (0.0, 0.25)   the lone infringing 0.9
#   thr 0.8: (0.1, 0.50)   one infringing + one innocent tied at 0.8
#   thr 0.5: (0.3, 0.75)   one infringing + two innocent tied at 0.5
#   thr 0.3: (0.3, 1.00)
#   thr 0.2: (0.4, 1.00); thr 0.1: (0.9, 1.00); thr 0.0: (1.0, 1.00)
# TPR@10%: points with FPR <= 0.1 are the first three -> 0.50.
# TPR@25%: still 0.50 (the point nearest 0.25 is (0.3, 0.75), which exceeds the target).
# TPR@5% and TPR@1%: only FPR 0 points -> 0.25.
# AUC = P(inf > inn) + P(tie)/2: 0.9 beats 10; 0.8 beats 9, ties 1 (9.5); 0.5 beats 7, ties 2 (8);
#   0.3 beats 7 -> 34.5 / 40 = 0.8625.


def test_perfect_separation():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    assert roc_auc(y, s) == 1.0
    assert tpr_at_fpr(y, s, 0.1) == 1.0
    assert tpr_at_fpr(y, s, 0.0) == 1.0


def test_reversed_scores():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]
    assert roc_auc(y, s) == 0.0
    assert tpr_at_fpr(y, s, 0.1) == 0.0


def test_hand_computed_ties():
    assert roc_auc(TIE_LABELS, TIE_SCORES) == pytest.approx(0.8625)
    assert tpr_at_fpr(TIE_LABELS, TIE_SCORES, 0.1) == 0.5
    assert tpr_at_fpr(TIE_LABELS, TIE_SCORES, 0.25) == 0.5
    assert tpr_at_fpr(TIE_LABELS, TIE_SCORES, 0.05) == 0.25
    assert tpr_at_fpr(TIE_LABELS, TIE_SCORES, 0.01) == 0.25
    assert tpr_at_fpr(TIE_LABELS, TIE_SCORES, 0.3) == 1.0
    fpr, tpr, _ = roc_points(TIE_LABELS, TIE_SCORES)
    np.testing.assert_allclose(fpr, [0, 0, 0.1, 0.3, 0.3, 0.4, 0.9, 1.0])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.5, 0.75, 1, 1, 1, 1])


def test_tpr_never_reports_a_point_above_the_target_fpr():
    rng = np.random.default_rng(0)
    for _ in range(30):
        y = np.r_[np.ones(7, int), np.zeros(13, int)]
        s = rng.integers(0, 4, size=20).astype(float)          # heavy ties
        fpr, tpr, _ = roc_points(y, s)
        for target in (0.0, 0.05, 0.1, 0.2, 0.5):
            got = tpr_at_fpr(y, s, target)
            # the reported TPR is achieved by some ROC point whose FPR is within the target
            assert any(t == got and f <= target + 1e-12 for f, t in zip(fpr, tpr))
            # and threshold-level check: calling >= thr at that point has empirical FPR <= target
            thr = s[y == 1]
            ok = [np.mean(s[y == 0] >= t) <= target + 1e-12 for t in thr]
            best = max([np.mean(s[y == 1] >= t) for t, k in zip(thr, ok) if k], default=0.0)
            assert got == pytest.approx(best)


def test_one_class_and_single_model_are_nan_with_reason():
    for y, s in (([1, 1, 1], [0.1, 0.5, 0.9]), ([0, 0], [0.3, 0.4]), ([1], [0.5])):
        with pytest.warns(MetricUndefinedWarning, match="need at least one infringing and one innocent"):
            assert math.isnan(roc_auc(y, s))
        with pytest.warns(MetricUndefinedWarning):
            assert math.isnan(tpr_at_fpr(y, s, 0.1))
    assert accuracy([1], [1]) == 1.0                            # accuracy is defined for one model
    with pytest.raises(InputError, match="no ROC curve"):
        roc_points([1, 1], [0.1, 0.2])


def test_bad_inputs():
    with pytest.raises(InputError, match="0 \\(innocent\\) or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="nan"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(InputError, match="one value per model"):
        tpr_at_fpr([0, 1], [0.1], 0.1)


def test_accuracy():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75


def test_bootstrap_contains_point_and_is_deterministic():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    s = rng.normal(size=40) + y
    a = bootstrap_ci(roc_auc, y, s, n_boot=200, seed=3)
    b = bootstrap_ci(roc_auc, y, s, n_boot=200, seed=3)
    c = bootstrap_ci(roc_auc, y, s, n_boot=200, seed=4)
    assert a == b and a != c
    point, low, high = a
    assert point == roc_auc(y, s)
    assert low <= point <= high and low < high


def test_bootstrap_stratified_keeps_both_classes():
    # 1 infringing model among 10: an unstratified resample often loses it (nan, skipped)
    y = np.r_[1, np.zeros(9, int)]
    s = np.r_[10.0, np.arange(9.0)]
    point, low, high = bootstrap_ci(roc_auc, y, s, n_boot=100, seed=0, stratified=True)
    assert (point, low, high) == (1.0, 1.0, 1.0)
    _, low_u, high_u = bootstrap_ci(roc_auc, y, s, n_boot=100, seed=0, stratified=False)
    assert not math.isnan(low_u) and low_u <= high_u


def test_bootstrap_one_class_gives_nan_interval():
    with pytest.warns(MetricUndefinedWarning):
        point, low, high = bootstrap_ci(roc_auc, [1, 1, 1], [0.1, 0.2, 0.3], n_boot=20)
    assert math.isnan(point) and math.isnan(low) and math.isnan(high)


def test_summarize_row():
    row = summarize(TIE_LABELS, TIE_SCORES, threshold=0.5, n_boot=50, seed=0)
    for key in ("accuracy", "auc", "tpr@10%fpr", "tpr@1%fpr"):
        assert {key, f"{key}_low", f"{key}_high"} <= row.keys()
    assert row["auc"] == pytest.approx(0.8625)
    assert row["tpr@10%fpr"] == 0.5 and row["tpr@1%fpr"] == 0.25
    # score >= 0.5: 3 of 4 infringing and 3 of 10 innocent called infringing -> 3 + 7 right
    assert row["accuracy"] == pytest.approx(10 / 14)
    assert row["n_innocent"] == 10
    assert any("tpr@1%fpr" in n for n in row["notes"])         # 1% of 10 models is below 1 model
    bare = summarize(TIE_LABELS, TIE_SCORES, n_boot=10)
    assert math.isnan(bare["accuracy"]) and any("accuracy" in n for n in bare["notes"])


def test_threshold_at_fpr_ties_and_ge_convention():
    inn = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 9], dtype=float)
    # 10%: 1 model may be flagged, but the top score 9 is tied twice -> tau just above 9
    tau = threshold_at_fpr(inn, 0.1)
    assert tau > 9 and np.mean(inn >= tau) == 0.0
    # 20%: both 9s may be flagged; tau = 9 and score >= tau flags exactly them
    assert threshold_at_fpr(inn, 0.2) == 9.0 and np.mean(inn >= 9.0) == 0.2
    assert threshold_at_fpr(inn, 0.3) == 7.0
    assert threshold_at_fpr(inn, 0.0) > 9
    assert threshold_at_fpr(inn, 1.0) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 5, size=17).astype(float)
        for f in (0.0, 0.1, 0.25, 0.5):
            assert np.mean(s >= threshold_at_fpr(s, f)) <= f + 1e-12
    with pytest.raises(InputError):
        threshold_at_fpr([], 0.1)


def test_binomial_bits_threshold():
    assert binomial_bits_threshold(32, 0.1) == 21
    assert binomial_bits_threshold(32, 0.01) == 24
    for n, f in ((32, 0.1), (32, 0.01), (16, 0.1), (8, 0.05)):
        k = binomial_bits_threshold(n, f)
        assert binom.sf(k - 1, n, 0.5) <= f < binom.sf(k - 2, n, 0.5)
    assert binomial_bits_threshold(4, 0.01) == 5                  # even 4/4 happens 6.25% of the time
