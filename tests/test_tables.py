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


def _planted(half_width: float) -> pd.DataFrame:
    auc = [0.8123456, 0.6549999]
    return pd.DataFrame({"source": ["v1", "v2"], "n_models": [12, 12], "auc": auc,
                         "auc_low": [a - half_width for a in auc], "auc_high": [a + half_width for a in auc]})


def test_a_half_width_just_above_the_threshold_keeps_one_decimal_fewer():
    wide, narrow = round_to_interval(_planted(0.0101), {"auc": ("auc_low", "auc_high")}), \
        round_to_interval(_planted(0.0099), {"auc": ("auc_low", "auc_high")})
    assert list(wide.auc) == [0.8, 0.7] and wide.attrs["decimals"]["auc"] == 1
    assert list(narrow.auc) == [0.81, 0.65] and narrow.attrs["decimals"]["auc"] == 2
    assert list(narrow.auc_low) == [0.8, 0.65] and list(narrow.auc_high) == [0.82, 0.66], "bounds rounded alike"


def test_unnamed_columns_stay_exact_and_the_input_is_untouched():
    table = _planted(0.04)
    out = round_to_interval(table, {"auc": 0.04})
    assert list(out.n_models) == [12, 12] and list(out.source) == ["v1", "v2"]
    assert list(out.auc_low) == list(table.auc_low), "only the named columns are rounded"
    assert table.auc.iloc[0] == 0.8123456


def test_the_widest_row_sets_the_precision_and_no_negative_zero_is_printed():
    table = pd.DataFrame({"gap": [0.3, -0.004], "low": [0.29, -0.1], "high": [0.31, 0.09]})
    assert interval_half_width(table, "low", "high") == pytest.approx(0.095)
    out = round_to_interval(table, {"gap": ("low", "high")})
    assert out.attrs["decimals"]["gap"] == 1
    assert markdown(out[["gap"]], digits=1).splitlines()[-1] == "| 0.0 |"
