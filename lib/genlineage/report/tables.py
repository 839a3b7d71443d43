"""Tables written beside the figures: CSV for machines, markdown for readers; and how the
notebooks print a table so that its committed output is what another machine reproduces: paths
relative to the checkout (``layout.shown_path``), trained-model figures at the precision their
seed-to-seed interval supports (``round_to_interval``)."""
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


def round_to_interval(table: pd.DataFrame, intervals: Mapping[str, float | tuple[str, str]],
                      most: int = 4) -> pd.DataFrame:
    """A copy of ``table`` with each named metric column rounded to what its seed-to-seed 95%
    interval supports (``interval_decimals``). ``intervals`` maps a column to its half-width, or to
    the names of its (low, high) interval columns, which are then rounded with it. Columns not
    named are left exact: counts, ids and data figures reproduce to the last digit. The decimals
    used are in ``attrs["decimals"]`` so a notebook can print them beside the table."""
    out = table.copy()
    decimals: dict[str, int] = {}
    for column, interval in intervals.items():
        if isinstance(interval, tuple):
            low, high = interval
            d = interval_decimals(interval_half_width(table, low, high), most)
            decimals.update({column: d, low: d, high: d})
        else:
            decimals[column] = interval_decimals(float(interval), most)
    for column, d in decimals.items():
        out[column] = out[column].astype(float).round(d) + 0.0  # + 0.0: no -0.0 printed for a tiny negative
    out.attrs["decimals"] = decimals
    return out
