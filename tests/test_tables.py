"""Printed tables at the precision their seed-to-seed interval supports: what nbval compares in
the committed notebooks is then what a re-run on another machine reproduces."""
from __future__ import annotations

import pandas as pd
import pytest

from genlineage.report.tables import interval_decimals, interval_half_width, markdown, round_to_interval


@pytest.mark.parametrize("half_width, decimals", [
    (0.4, 0), (0.11, 0),           # above 0.1: whole units only
    (0.1, 1), (0.099, 1), (0.04, 1), (0.0101, 1),   # between 0.01 and 0.1: one decimal
    (0.01, 2), (0.009, 2),         # the 0.01 threshold, both sides
    (0.010000000000000002, 2),     # a float-sum 0.01 is still 0.01
    (3.0, 0),                      # wider than 1: no decimals (never negative)
    (0.0, 4), (float("nan"), 4),   # nothing measured: most decimals
])
def test_decimals_follow_the_half_width(half_width, decimals):
    assert interval_decimals(half_width) == decimals


def _planted(half_width: float, values=(0.8123456, 0.6549999), name: str = "auc") -> pd.DataFrame:
    return pd.DataFrame({"source": ["v1", "v2"], "n_models": [12, 12], name: list(values),
                         f"{name}_low": [a - half_width for a in values], f"{name}_high": [a + half_width for a in values]})


def test_a_half_width_just_above_the_threshold_keeps_one_decimal_fewer():
    gaps = (1.8123456, -0.6549999)  # a distance gap: not a share, the interval rule alone
    wide, narrow = round_to_interval(_planted(0.0101, gaps, "gap"), {"gap": ("gap_low", "gap_high")}), \
        round_to_interval(_planted(0.0099, gaps, "gap"), {"gap": ("gap_low", "gap_high")})
    assert list(wide.gap) == [1.8, -0.7] and wide.attrs["decimals"]["gap"] == 1
    assert list(narrow.gap) == [1.81, -0.65] and narrow.attrs["decimals"]["gap"] == 2
    assert list(narrow.gap_low) == [1.8, -0.66] and list(narrow.gap_high) == [1.82, -0.65], "bounds rounded alike"


def test_a_share_keeps_two_decimals_however_wide_its_interval():
    tpr = pd.DataFrame({"source": ["v1"], "tpr": [0.125], "tpr_low": [0.047], "tpr_high": [0.252]})
    out = round_to_interval(tpr, {"tpr": ("tpr_low", "tpr_high")})
    assert out.attrs["decimals"]["tpr"] == 2, "a half-width of 0.10 alone would give 0 decimals: 0.0 [0.0, 0.0]"
    assert (out.tpr.iloc[0], out.tpr_low.iloc[0], out.tpr_high.iloc[0]) == (0.12, 0.05, 0.25)
    assert markdown(out[["tpr", "tpr_low", "tpr_high"]], digits=2).splitlines()[-1] == "| 0.12 | 0.05 | 0.25 |"
    # a share with a narrow interval keeps the finer decimals the interval supports
    assert round_to_interval(_planted(0.0009), {"auc": ("auc_low", "auc_high")}).attrs["decimals"]["auc"] == 3
    assert round_to_interval(_planted(0.0101), {"auc": ("auc_low", "auc_high")}).attrs["decimals"]["auc"] == 2
    # a half-width given as a number: the column's values decide
    assert round_to_interval(tpr, {"tpr": 0.3}).tpr.iloc[0] == 0.12
    # a column that leaves [-1, 1] anywhere (its values or its bounds) is neither a share nor a difference of two
    gap = pd.DataFrame({"gap": [0.125], "low": [-1.1], "high": [1.35]})
    assert round_to_interval(gap, {"gap": ("low", "high")}).attrs["decimals"]["gap"] == 0


def test_a_difference_of_shares_keeps_two_decimals_however_wide_its_interval():
    """The committed notebooks printed conf and RD gaps such as these (notebook 10's pooled conf gap
    0.262 [0.030, 0.495]) as 0.0 [0.0, 0.0]: a value in [-1, 1] keeps two decimals."""
    inherited = pd.DataFrame({"conf_gap": [0.262, 0.5], "conf_gap_low": [0.030, -0.8], "conf_gap_high": [0.495, 1.0],
                              "rd_gap": [0.032, 0.105], "rd_gap_low": [-0.004, -0.2], "rd_gap_high": [0.068, 0.41]})
    out = round_to_interval(inherited, {"conf_gap": ("conf_gap_low", "conf_gap_high"),
                                        "rd_gap": ("rd_gap_low", "rd_gap_high")})
    assert out.attrs["decimals"]["conf_gap"] == out.attrs["decimals"]["rd_gap"] == 2
    assert (out.conf_gap[0], out.conf_gap_low[0], out.conf_gap_high[0]) == (0.26, 0.03, 0.5)
    assert (out.rd_gap[0], out.rd_gap_low[0], out.rd_gap_high[0]) == (0.03, -0.0, 0.07)


def test_unnamed_columns_stay_exact_and_the_input_is_untouched():
    table = _planted(0.04)
    out = round_to_interval(table, {"auc": 0.04})
    assert list(out.n_models) == [12, 12] and list(out.source) == ["v1", "v2"]
    assert list(out.auc_low) == list(table.auc_low), "only the named columns are rounded"
    assert table.auc.iloc[0] == 0.8123456


def test_the_widest_row_sets_the_precision_and_no_negative_zero_is_printed():
    table = pd.DataFrame({"gap": [3.0, -0.004], "low": [2.99, -0.1], "high": [3.01, 0.09]})  # not within [-1, 1]
    assert interval_half_width(table, "low", "high") == pytest.approx(0.095)
    out = round_to_interval(table, {"gap": ("low", "high")})
    assert out.attrs["decimals"]["gap"] == 1
    assert markdown(out[["gap"]], digits=1).splitlines()[-1] == "| 0.0 |"


def test_table1_names_the_tpr_its_innocent_models_support():
    """With 6 innocent models no FPR between 0 and 1/6 is reachable, so Table 1 reports the TPR
    at zero false positives under that name, never as a "TPR at 1% FPR"."""
    import numpy as np

    from genlineage.config import load_profile
    from genlineage.experiments.statistical_attribution import TABLE1_COLUMNS, ZERO_FP, table1

    profile = load_profile("smoke", {"statistical": {"n_boot": 20}})
    # 12 infringing, 6 innocent; the best innocent scores 0.7, above 4 of the infringing models
    inf, inn = [0.9, 0.95, 0.8, 0.85, 0.75, 0.72, 0.99, 0.88, 0.6, 0.65, 0.5, 0.55], [0.1, 0.2, 0.3, 0.4, 0.5, 0.7]
    scores = np.array(inf + inn)
    scored = pd.DataFrame({"source": "v1", "label": [1] * 12 + [0] * 6, "discriminator": scores,
                           "discriminator_pred": (scores >= 0.5).astype(int), "conf": scores,
                           "conf_pred": (scores >= 0.5).astype(int)})
    t1 = table1(profile, scored)
    assert ZERO_FP == "tpr@0fp" and {"tpr@0fp", "tpr@0fp_low", "tpr@0fp_high"} <= set(TABLE1_COLUMNS)
    assert not [c for c in list(t1.columns) + TABLE1_COLUMNS if "1%" in c]
    row = t1[t1.score == "discriminator"].iloc[0]
    assert row["tpr@0fp"] == 8 / 12, "8 infringing models score above every innocent one"
    assert row["tpr@0fp_low"] <= 8 / 12 <= row["tpr@0fp_high"]
    assert not [n for n in row["notes"] if n.startswith("tpr@0")]
    assert set(TABLE1_COLUMNS) <= set(t1.columns)
