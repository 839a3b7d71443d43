"""Tables written beside the figures: CSV for machines, markdown for readers; and how the
notebooks print a table so that its committed output is what another machine reproduces: paths
relative to the checkout (``layout.shown_path``), trained-model figures at the precision their
seed-to-seed interval supports, shares and their differences at two decimals at least
(``round_to_interval``)."""
from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from ..config import Profile
from .. import layout
from ..io import write_text
from ..markdown import markdown


def save_table(profile: Profile, table: pd.DataFrame, name: str) -> None:
    folder = layout.tables_dir(profile)
    write_text(folder / f"{name}.csv", table.to_csv(index=False))
    write_text(folder / f"{name}.md", markdown(table))


def interval_decimals(half_width: float, most: int = 4) -> int:
    """How many decimals a figure with this 95% half-width supports: the finest decimal whose unit
    is at least the half-width (0.04 -> 1, 0.1 -> 1, 0.004 -> 2, 0.4 -> 0). Finer digits change
    from seed to seed, so printing them would make every re-run differ. A zero or unknown
    half-width (nothing measured) gets ``most``."""
    if not half_width > 0 or not math.isfinite(half_width):
        return most
    # the epsilon: a half-width computed as 0.010000000000000002 is 0.01, and gets its 2 decimals
    return max(0, min(most, math.floor(-math.log10(half_width) + 1e-9)))


def interval_half_width(table: pd.DataFrame, low: str, high: str) -> float:
    """The widest half-width of a table's 95% intervals (columns ``low``, ``high``): one column is
    printed at one precision, so the least certain row sets it."""
    widths = (table[high].astype(float) - table[low].astype(float)) / 2
    return float(widths.max()) if widths.notna().any() else float("nan")


SHARE_DECIMALS = 2  # the fewest decimals a column of values in [-1, 1] is printed with


def _within_one(table: pd.DataFrame, columns: list[str]) -> bool:
    """Every finite value of ``columns`` lies in [-1, 1]: a share, a rate, an AUC, an accuracy, or
    a difference of two of them (a conf gap, a normalised-distance gap)."""
    values = pd.concat([table[c].astype(float) for c in columns], ignore_index=True)
    values = values[values.notna()]
    return bool(len(values)) and bool(((values >= -1) & (values <= 1)).all())


def round_to_interval(table: pd.DataFrame, intervals: Mapping[str, float | tuple[str, str]],
                      most: int = 4, least_for_shares: int = SHARE_DECIMALS) -> pd.DataFrame:
    """A copy of ``table`` with each named metric column rounded to what its seed-to-seed 95%
    interval supports (``interval_decimals``). ``intervals`` maps a column to its half-width, or to
    the names of its (low, high) interval columns, which are then rounded with it. Columns not
    named are left exact: counts, ids and data figures reproduce to the last digit. The decimals
    used are in ``attrs["decimals"]`` so a notebook can print them beside the table.

    The floor: a column whose values (and interval bounds) all lie in [-1, 1] (a share, a rate, an
    AUC, a difference of two of them, a gap of normalised distances) keeps at least
    ``least_for_shares`` decimals (2), however wide its interval. Why: with few models such an
    interval is wide (half-width above 0.1 gives 0 decimals), and the interval rule alone printed a
    TPR of 0.125 [0.047, 0.252] as "0.0 [0.0, 0.0]", and notebook 04's inheritance table a conf gap
    of 0.16 [-0.14, 0.45] as "0.0 [0.0, 0.0]", hiding the value and its interval both. Two decimals
    say what was measured; the interval beside the value says how little of it is certain. A
    column that leaves [-1, 1] (a count, a distance in other units) follows the interval rule alone."""
    out = table.copy()
    decimals: dict[str, int] = {}
    for column, interval in intervals.items():
        if isinstance(interval, tuple):
            low, high = interval
            d = interval_decimals(interval_half_width(table, low, high), most)
            if _within_one(table, [column, low, high]):
                d = max(d, min(least_for_shares, most))
            decimals.update({column: d, low: d, high: d})
        else:
            d = interval_decimals(float(interval), most)
            if _within_one(table, [column]):
                d = max(d, min(least_for_shares, most))
            decimals[column] = d
    for column, d in decimals.items():
        out[column] = out[column].astype(float).round(d) + 0.0  # + 0.0: no -0.0 printed for a tiny negative
    out.attrs["decimals"] = decimals
    return out
