"""Tables written beside the figures: CSV for machines, markdown for readers."""
from __future__ import annotations

import pandas as pd

from ..config import Profile
from ..experiments import layout
from ..io import write_text


def tables_dir(profile: Profile):
    path = layout.figures_dir(profile).parent / "tables" if profile.get("figures_dir") else profile.data_root / "tables"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_table(profile: Profile, table: pd.DataFrame, name: str) -> None:
    folder = tables_dir(profile)
    write_text(folder / f"{name}.csv", table.to_csv(index=False))
    write_text(folder / f"{name}.md", markdown(table))


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub markdown table (pandas' to_markdown needs the extra package tabulate)."""
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
